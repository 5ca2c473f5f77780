"""Adaptive polling: the first poll of a task aims just after it can be done."""

from __future__ import annotations

from pathlib import Path

import pytest

from seedance_watch.core.scheduling import TaskTimeEstimator
from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import WritePair, run_once, write_config

pytestmark = pytest.mark.timeout(60)


def _waves(
    est: TaskTimeEstimator, task_seconds: float, waves: int, size: int = 10, pi: float = 0.25
) -> tuple[list[float], int]:
    """Run ``waves`` batches of ``size`` tasks submitted together, each polled first at
    the estimator's delay and then every ``pi``; returns each task's detection lag and
    the number of first polls that found the task still running."""
    lags: list[float] = []
    early = 0
    for wave in range(waves):
        delays = [est.first_poll_delay("k", pi, key=f"{wave}-{i}") for i in range(size)]
        for i, delay in enumerate(delays):
            seen = delay
            est.first_polled(f"{wave}-{i}", done=seen >= task_seconds)
            if seen < task_seconds:
                early += 1
                while seen < task_seconds:
                    seen += pi
            est.observe("k", seen, poll_interval=pi)
            lags.append(seen - task_seconds)
    return lags, early


def test_first_poll_waits_for_poll_interval_until_a_task_has_ended() -> None:
    """With nothing learned yet the first poll is poll_interval after the submit, and
    the first task seen done seeds the aim (less half a poll_interval of lag)."""
    est = TaskTimeEstimator()
    assert est.first_poll_delay("720p", 5.0) == 5.0
    est.observe("720p", 62.0, poll_interval=5.0)
    assert est.first_poll_delay("720p", 5.0) == pytest.approx(59.5)
    assert est.first_poll_delay("1080p", 5.0) == 5.0  # other kinds learn on their own
    assert est.first_poll_delay("720p", 80.0) == 80.0  # never before poll_interval


def test_steady_tasks_are_detected_within_five_percent() -> None:
    """Waves of 10 tasks of 3 s, polled every 0.25 s: after a few waves the mean lag from
    a task's end to its detection is under 5 % of the task time, and most first polls
    find the task done (one poll per job)."""
    est = TaskTimeEstimator()
    _waves(est, 3.0, waves=5)
    lags, early = _waves(est, 3.0, waves=40)
    assert sum(lags) / len(lags) < 0.05 * 3.0
    assert early <= 0.25 * len(lags)
    assert all(lag >= 0 for lag in lags)


def test_a_wave_of_tasks_moves_the_aim_once() -> None:
    """Ten tasks submitted together that all ran longer than planned raise the aim one
    step above their delay, not ten compounded steps."""
    est = TaskTimeEstimator()
    est.observe("k", 10.0)
    for i in range(10):
        est.first_poll_delay("k", 1.0, key=str(i))
    for i in range(10):
        est.first_polled(str(i), done=False)
    assert est.first_poll_delay("k", 1.0) == pytest.approx(10.0 * (1 + est.up))


def test_aim_follows_a_slower_gateway() -> None:
    """When tasks start taking 4 s instead of 3 s, the aim follows within a few waves."""
    est = TaskTimeEstimator()
    _waves(est, 3.0, waves=20)
    _waves(est, 4.0, waves=12)
    assert 3.9 <= est.first_poll_delay("k", 0.25) <= 4.3  # it brackets the new time


def test_failed_tasks_and_forgotten_jobs_teach_nothing() -> None:
    """A first poll that found the task failed, or a job forgotten before its first poll,
    leaves the aim alone (and nothing remembered)."""
    est = TaskTimeEstimator()
    est.observe("k", 10.0)
    est.first_poll_delay("k", 1.0, key="a")
    est.first_poll_delay("k", 1.0, key="b")
    est.first_polled("a", done=None)
    est.forget("b")
    est.first_polled("b", done=False)
    assert est.first_poll_delay("k", 1.0) == 10.0
    assert not est._planned


@pytest.mark.slow
@pytest.mark.sim(SimulatorConfig(queued_seconds=0.0, running_seconds=0.6, video_max_side=32))
def test_daemon_polls_a_known_task_about_once(
    tmp_path: Path, s3_server: S3Emulator, write_pair: WritePair, sim: Simulator
) -> None:
    """One task at a time, 0.6 s each, poll_interval 0.05 s: once the first task has
    ended, later tasks are polled about once each instead of every 0.05 s."""
    config_path = write_config(
        tmp_path,
        s3_server,
        sim,
        poll_interval=0.05,
        extra="dedupe: false\n",
    )
    text = config_path.read_text().replace("task_timeout: 60", "max_in_flight: 1")
    config_path.write_text(text)
    for i in range(6):
        write_pair(tmp_path / "inbox", f"p{i}")
    result, _ = run_once(config_path)
    assert result.exit_code == 0, result.summary
    assert len(sim.submits) == 6
    # The first task alone takes ~12 polls (0.6 s / 0.05 s); each later one ~1-2.
    assert sim.polls <= 12 + 2 + 5 * 2.5, sim.polls
