"""The error every command raises for a mistake the user can fix."""

__all__ = ["CommandError"]


class CommandError(Exception):
    """A command failed for a reason its message explains in one line (no traceback)."""
