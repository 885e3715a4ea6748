"""``python -m psa COMMAND ARGS``: the ``psa`` umbrella command where no console script is
installed (a checkout on PYTHONPATH, say on a machine with only a system torch)."""

import sys

from psa.cli import psa

sys.exit(psa())
