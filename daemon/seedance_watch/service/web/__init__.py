"""The status page and the other routes of ``health.listen`` (docs/design.md, "The status page").

:mod:`.app` is the Starlette application, :mod:`.access` who may use it,
:mod:`.view` what the page shows, :mod:`.files` the files it serves by job id;
``templates/`` and ``static/`` hold the page itself (no build step, no CDN).
:class:`seedance_watch.service.http.HealthServer` serves it from its own thread.
"""

from __future__ import annotations

from seedance_watch.service.web.app import MAX_WEBHOOK_BYTES, Check, PageSources, build_app

__all__ = ["MAX_WEBHOOK_BYTES", "Check", "PageSources", "build_app"]
