"""`python -m erp ...`: the operator commands of erp.console.cli."""

import sys

from erp.console.cli import main

sys.exit(main())
