"""`python -m mlendpoints ...` = the `ml-endpoints` command."""

import sys

from mlendpoints.cli import main

sys.exit(main())
