"""seedance-watch: a hot-folder daemon turning images into Seedance 1.0 videos."""

from __future__ import annotations

__version__ = "0.1.0"
