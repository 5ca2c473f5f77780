"""The finish stage: carry out a recorded placement or failure (``PLACING``/``FAILING``).

Placement writes its plan to the ledger before any file moves, so finishing is
idempotent: the same code runs after a crash and after a file step failed (disk
full, a folder gone), which the engine retries on the timer heap.
"""

from __future__ import annotations

from seedance_watch.core.jobs import Job, Stage, State
from seedance_watch.pipeline.placement import Placement
from seedance_watch.pipeline.stage import Done, Outcome

__all__ = ["FinishStage"]


class FinishStage:
    stage = Stage.FINISH

    def __init__(self, placement: Placement) -> None:
        self.placement = placement

    async def run(self, job: Job) -> Outcome:
        if job.state is State.PLACING:
            await self.placement.finish_placing(job)
        elif job.state is State.FAILING:
            await self.placement.finish_failing(job)
        return Done()
