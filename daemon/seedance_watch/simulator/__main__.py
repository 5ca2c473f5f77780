"""``python -m seedance_watch.simulator``: same as ``seedance-watch simulator``."""

from __future__ import annotations

import sys

from seedance_watch.simulator.cli import main

sys.exit(main())
