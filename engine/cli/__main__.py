"""`python -m engine.cli`: the same as `aba`."""

import sys

from engine.cli import main

sys.exit(main())
