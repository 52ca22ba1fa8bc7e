"""`python -m gpuport ...` is the `gpuport` command."""

import sys

from .cli import main

sys.exit(main())
