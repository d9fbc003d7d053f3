"""Never-executed modules that mypy checks from a user's side."""
