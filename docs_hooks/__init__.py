"""MkDocs hooks that generate reference pages at build time."""
