"""`python -m rhapsody ...` is the `rhapsody` command."""

import sys

from rhapsody.cli import main

sys.exit(main())
