"""Tests of the framework helpers."""
