"""Tasks and their schedule, computed lazily from timestamps.

No coroutine per task: a task's status is a function of the clock, its submit
time and the moment a concurrency slot became free.  Slots are handed out in
submit order by ``TaskBoard.advance``, which replays the schedule up to "now"
with one heap of running tasks' end times (called on each request and by one
background ticker).  Pure: the clock is passed in, nothing here does I/O.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from seedance_watch.simulator.config import Dialect, Kind

__all__ = ["TERMINAL", "Outcome", "Status", "Task", "TaskBoard", "TokenBucket"]

Status = Literal["queued", "running", "succeeded", "failed", "expired", "cancelled"]
Outcome = Literal["succeeded", "failed", "expired", "cancelled"]
#: The statuses a task never leaves.
TERMINAL: frozenset[Status] = frozenset({"succeeded", "failed", "expired", "cancelled"})


@dataclass(eq=False)
class Task:
    """One generation task; times are monotonic seconds unless named ``*_wall``."""

    id: str
    model: str
    text: str
    params: dict[str, str | int | bool]
    image_sha256: str
    created: float
    #: When the task may start running (submit + ``queued_seconds``).
    eligible: float
    #: How the task ends; decided at submit (fault dice).
    outcome: Outcome
    running_seconds: float
    started: float | None = None
    #: The mp4 once encoded (only for tasks that succeed).
    video: bytes | None = None
    video_ready: float | None = None
    video_error: str | None = None
    encode_requested: bool = False
    extra: dict[str, object] = field(default_factory=dict)
    #: ``image``, ``frames``, ``text`` or ``reference`` (see ``config.Kind``).
    kind: Kind = "image"
    #: The sha256 of every image the video is made from, in body order
    #: (``image_sha256`` is the first).
    image_sha256s: tuple[str, ...] = ()
    #: The prompt the picture of a text task is drawn from (without commands).
    prompt: str = ""
    #: The clip's length in seconds.
    seconds: float = 5.0
    #: ``id`` or ``envelope``: how the task was answered, hence how it can be polled.
    dialect: Dialect = "id"
    #: The task's place in submit order (0, 1, ...): drives the "alternate" knobs.
    seq: int = 0
    #: Where to POST a callback when the task ends (``X-Webhook-URL``), if anywhere.
    webhook_url: str | None = None

    @property
    def ends(self) -> float | None:
        return None if self.started is None else self.started + self.running_seconds

    def status(self, now: float) -> Status:
        """The status at ``now`` (after ``TaskBoard.advance``).

        A task that should have succeeded but whose video is not encoded yet
        is still ``running``: ``succeeded`` always means "downloadable".
        """
        ends = self.ends
        if ends is None:
            return "queued"
        if now < ends:
            return "running"
        if self.outcome != "succeeded":
            return self.outcome
        if self.video_error is not None:
            return "failed"
        return "succeeded" if self.video is not None else "running"

    def updated(self, now: float) -> float:
        """Monotonic time of the last status change seen at ``now``."""
        status = self.status(now)
        if status == "queued" or self.started is None:
            return self.created
        if status == "running":
            return self.started
        ends = self.started + self.running_seconds
        return max(ends, self.video_ready or ends)


class TaskBoard:
    """All tasks, plus the FIFO of tasks waiting for a slot and the heap of slot end times."""

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self._waiting: deque[Task] = deque()
        self._running_ends: list[float] = []

    def add(self, task: Task) -> None:
        self.tasks[task.id] = task
        self._waiting.append(task)

    def advance(self, now: float, max_concurrent: int | None) -> list[Task]:
        """Start every task whose slot came free by ``now``; return the tasks started."""
        limit = math.inf if max_concurrent is None else max_concurrent
        started: list[Task] = []
        while self._waiting:
            head = self._waiting[0]
            if len(self._running_ends) >= limit:
                # The head starts when the earliest running task ends (or later, if not eligible).
                start = max(head.eligible, self._running_ends[0])
                if start > now:
                    break
                heapq.heappop(self._running_ends)
            else:
                start = head.eligible
                if start > now:
                    break
            head.started = start
            heapq.heappush(self._running_ends, start + head.running_seconds)
            self._waiting.popleft()
            started.append(head)
        # Ended slots are free for good: anything later starts after `now` anyway.
        while self._running_ends and self._running_ends[0] <= now:
            heapq.heappop(self._running_ends)
        return started

    def unfinished(self) -> int:
        """Tasks queued or running (valid right after ``advance``)."""
        return len(self._waiting) + len(self._running_ends)

    def counts(self, now: float) -> dict[str, int]:
        out: dict[str, int] = {}
        for task in self.tasks.values():
            status = task.status(now)
            out[status] = out.get(status, 0) + 1
        return out


class TokenBucket:
    """``per_minute`` submits a minute, with bursts up to ``per_minute``."""

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._at = now

    def take(self, now: float) -> float:
        """0.0 if a token was taken, else the seconds until one is available."""
        rate = self.per_minute / 60.0
        self._tokens = min(float(self.per_minute), self._tokens + (now - self._at) * rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / rate
