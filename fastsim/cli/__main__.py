"""``python -m fastsim.cli`` (e.g. under ``torchrun -m fastsim.cli analyze ...``)."""

import sys

from . import main

sys.exit(main())
