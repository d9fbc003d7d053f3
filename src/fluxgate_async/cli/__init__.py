"""The `fluxgate-async` command line: `serve`, `send`, `report`, `outbox` and `demo`.

Run `fluxgate-async --help` for the commands and their options. Errors are one
line on stderr; the exit status is 0 on success, 1 when the command failed and
2 for a usage mistake.
"""

from ._main import main

__all__ = ["main"]
