"""``/metrics``: jobs by kind and state, kept by the ledger at O(1) per state change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from seedance_watch.core.jobs import Job, State
from seedance_watch.ledger.jsonl import Ledger
from seedance_watch.service.metrics import Metrics
from seedance_watch.testing.memory import MemoryStore

pytestmark = pytest.mark.timeout(30)


def job(job_id: str, kind: str, state: State) -> Job:
    return Job(
        job_id=job_id,
        state=state,
        source=f"{job_id}.yaml" if kind == "text" else f"{job_id}.jpg",
        sidecar=f"{job_id}.yaml",
        created_at=1.0,
        updated_at=1.0,
        kind=kind,
    )


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_the_ledger_counts_jobs_by_kind_through_changes_and_a_restart(tmp_path: Path) -> None:
    """Each put moves one job between (kind, state) counts; every state of a kind seen
    is present (zeros included); a reopened ledger counts the same."""
    with Ledger.open(tmp_path) as ledger:
        ledger.put(job("a", "image", State.NEW))
        ledger.put(job("b", "frames", State.NEW))
        ledger.put(job("c", "frames", State.NEW))
        ledger.put(job("d", "text", State.NEW))
        ledger.put(replace(job("b", "frames", State.FAILED), seq=1))
        ledger.put(replace(job("d", "text", State.DONE), seq=1))
        counts = ledger.counts_by_kind()
        assert {k for k, n in counts.items() if n} == {
            ("image", "new"),
            ("frames", "new"),
            ("frames", "failed"),
            ("text", "done"),
        }
        assert counts[("frames", "new")] == counts[("frames", "failed")] == 1
        assert counts[("text", "new")] == 0 and counts[("text", "done")] == 1
        assert {kind for kind, _ in counts} == {"image", "frames", "text"}
        assert len(counts) == 3 * len(State)
        assert sum(counts.values()) == sum(ledger.counts().values()) == 4
    with Ledger.open(tmp_path) as again:
        assert again.counts_by_kind() == counts


def test_metrics_show_jobs_by_kind_beside_the_unchanged_job_gauges(tmp_path: Path) -> None:
    """``seedance_jobs_by_kind{kind,state}`` is fed from the store at each scrape; the
    ``seedance_jobs{state}`` gauge and the finished counter keep their one label."""
    store = MemoryStore()
    metrics = Metrics(job_counts=store.counts, kind_counts=store.counts_by_kind)
    store.put(job("a", "image", State.DONE))
    store.put(job("b", "frames", State.DONE))
    store.put(job("c", "frames", State.SUBMITTED))
    store.put(job("d", "text", State.FAILED))
    metrics.finished("done", 12.0)  # what the pipeline reports as a job ends

    m = samples(metrics.render())

    assert m[("seedance_jobs_by_kind", (("kind", "frames"), ("state", "done")))] == 1
    assert m[("seedance_jobs_by_kind", (("kind", "frames"), ("state", "submitted")))] == 1
    assert m[("seedance_jobs_by_kind", (("kind", "image"), ("state", "done")))] == 1
    assert m[("seedance_jobs_by_kind", (("kind", "text"), ("state", "failed")))] == 1
    assert m[("seedance_jobs", (("state", "done"),))] == 2
    assert m[("seedance_jobs_finished_total", (("state", "done"),))] == 1

    store.put(replace(job("c", "frames", State.DONE), seq=1))
    m = samples(metrics.render())
    assert m[("seedance_jobs_by_kind", (("kind", "frames"), ("state", "done")))] == 2
    assert m[("seedance_jobs_by_kind", (("kind", "frames"), ("state", "submitted")))] == 0


def test_metrics_without_a_store_have_no_kind_series() -> None:
    """A bare ``Metrics()`` (tests, the page) renders without job gauges to refresh."""
    names = {name for name, _ in samples(Metrics().render())}
    assert "seedance_jobs_by_kind" not in names and "seedance_submits_total" in names


def test_a_host_in_a_shared_store_names_itself_and_the_clusters_hosts() -> None:
    """Every daemon has ``seedance_build_info{version}``; on a shared store,
    ``seedance_host_info{host}`` names this host and the cluster series (read at each
    scrape) count the hosts, the alive ones, and give each host's lease; while the
    hosts cannot be read those series are absent, never stale, and the rest renders."""
    from seedance_watch import __version__
    from seedance_watch.errors import StoreUnavailable
    from seedance_watch.ledger.base import HostLease

    plain = samples(Metrics().render())
    assert plain[("seedance_build_info", (("version", __version__),))] == 1
    assert not any(name.startswith(("seedance_host_info", "seedance_cluster")) for name, _ in plain)

    leases: list[HostLease] | Exception = [
        HostLease("a", "2026-12-01T10:00:00Z", True),
        HostLease("b", "2026-12-01T09:00:00+00:00", False),
    ]

    def hosts() -> list[HostLease]:
        if isinstance(leases, Exception):
            raise leases
        return leases

    metrics = Metrics()
    metrics.cluster("a", hosts)
    m = samples(metrics.render())
    assert m[("seedance_host_info", (("host", "a"),))] == 1
    assert m[("seedance_cluster_hosts", ())] == 2
    assert m[("seedance_cluster_hosts_alive", ())] == 1
    assert m[("seedance_cluster_host_alive", (("host", "a"),))] == 1
    assert m[("seedance_cluster_host_alive", (("host", "b"),))] == 0
    renewed = ("seedance_cluster_host_renewed_timestamp_seconds", (("host", "b"),))
    assert m[renewed] == 1_796_115_600  # 2026-12-01T09:00:00Z
    leases = StoreUnavailable("the database is out of reach")
    down = samples(metrics.render())
    assert not any(name.startswith("seedance_cluster") for name, _ in down)
    assert down[("seedance_host_info", (("host", "a"),))] == 1
