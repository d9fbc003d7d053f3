"""Helpers for web frameworks; each module imports its framework only when used."""
