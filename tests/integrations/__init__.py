"""Tests of the provider wrappers, against the real SDKs on loopback servers."""
