"""`python -m erp ...`: the operator commands of erp.cli."""

import sys

from erp.cli import main

sys.exit(main())
