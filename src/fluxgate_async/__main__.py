"""`python -m fluxgate_async`: the `fluxgate-async` command line."""

import sys

from .cli import main

sys.exit(main())
