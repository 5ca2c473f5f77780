"""``python -m seedance_watch`` is the ``seedance-watch`` command."""

from __future__ import annotations

import sys

from seedance_watch.cli import main

sys.exit(main())
