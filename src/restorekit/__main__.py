"""``python -m restorekit`` runs the command line."""

import sys

from restorekit.cli import main

sys.exit(main())
