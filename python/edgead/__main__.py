"""`python -m edgead ...` = the `edgead` command."""
import sys

from edgead.cli import main

sys.exit(main())
