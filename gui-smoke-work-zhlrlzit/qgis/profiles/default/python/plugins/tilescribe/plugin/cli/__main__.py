"""`python -m tilescribe.plugin.cli` runs the command line."""

import sys

from .main import main

sys.exit(main())
