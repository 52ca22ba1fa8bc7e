"""`python -m gpuport ...` is the `gpuport` command."""

import sys

from .site.cli import main

sys.exit(main())
