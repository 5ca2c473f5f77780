"""What people read of a shared store, from any host: ``status``, ``costs``, the page,
``/metrics`` and ``/healthz`` show every host's jobs and every host's health, against a
real PostgreSQL (the ``postgres_url`` fixture), with jobs written by
:class:`~seedance_watch.ledger.postgres.PostgresStore` as two hosts would."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from seedance_watch.commands.costs import costs_report, format_costs
from seedance_watch.commands.status import format_status, status_report
from seedance_watch.config import Config, load_config
from seedance_watch.core.jobs import Job, State
from seedance_watch.ledger import open_reader
from seedance_watch.ledger.postgres import PostgresReader, PostgresStore
from seedance_watch.service.http import HealthServer, PageSources
from seedance_watch.service.metrics import Metrics
from seedance_watch.simulator import Simulator
from seedance_watch.testing.s3emulator import S3Emulator

from .helpers import DaemonProcess, free_port, wait_for, write_config

pytestmark = pytest.mark.timeout(90)

NOW = time.time()


def make_job(n: int, state: State, **changes: Any) -> Job:
    job = Job(
        job_id=f"job{n:013d}",
        state=state,
        source=f"image-{n}.jpg",
        sidecar=f"image-{n}.yaml",
        created_at=NOW - 100 + n,
        updated_at=NOW - 50 + n,
        prompt=f"A quiet harbour, take {n}",
        model="seedance-1-0-pro",
    )
    return dataclasses.replace(job, **changes)


def billed(n: int, state: State, cents: int) -> Job:
    cost = {"cents": cents, "per": "generation", "rate": f"{cents / 100:.2f}", "settled": True}
    return make_job(n, state, intent_at=NOW - 60 + n, cost=cost, task_id=f"task-{n}")


@pytest.fixture
def two_hosts(postgres_url: str) -> Iterator[tuple[PostgresStore, list[Job]]]:
    """Host ``a`` (open: alive) with two jobs, host ``b`` (closed: not alive) with one."""
    a = PostgresStore.open(postgres_url, host="a")
    b = PostgresStore.open(postgres_url, host="b")
    jobs = [billed(1, State.DONE, 120), billed(2, State.FAILED, 80), billed(3, State.DONE, 45)]
    a.put(jobs[0])
    a.put(jobs[1])
    b.put(jobs[2])
    b.close()
    try:
        yield a, jobs
    finally:
        a.close()


def config_for(tmp_path: Path, url: str, **extra: Any) -> Config:
    path = tmp_path / "sw.yaml"
    document = {"storage": {"bucket": "b"}, "cluster": {"database": url, "name": "a"}, **extra}
    path.write_text(json.dumps(document))
    return load_config(path, {})


def test_status_and_costs_cover_every_host(
    tmp_path: Path, postgres_url: str, two_hosts: Any
) -> None:
    """``status`` lists the hosts (alive or not, last renewal) and, with more than one, a
    host column; ``costs`` counts every host's submits, and each day says what each
    host submitted."""
    config = config_for(tmp_path, postgres_url)
    reader = open_reader(config)
    try:
        text = format_status(status_report(reader))
        report = costs_report(reader, config.budget, now=NOW)
    finally:
        reader.close()
    assert "hosts: a (alive, renewed " in text and ", b (not alive, renewed " in text
    lines = {line.split()[0]: line.split() for line in text.splitlines() if "job0" in line}
    assert [lines[f"job{n:013d}"][1] for n in (1, 2, 3)] == ["a", "a", "b"]
    assert [lines[f"job{n:013d}"][2] for n in (1, 2, 3)] == ["done", "failed", "done"]
    (day,) = report["days"]
    assert day["submits"] == 3 and day["cost"] == 2.45
    assert day["hosts"] == {
        "a": {"submits": 2, "done": 1, "failed": 1, "cost": 2.0},
        "b": {"submits": 1, "done": 1, "failed": 0, "cost": 0.45},
    }
    assert report["today"]["spent"] == 2.45
    shown = format_costs(report)
    assert any(line.split()[:3] == ["on", "b", "1"] for line in shown.splitlines())


def _serve(config: Config, sources: PageSources) -> tuple[HealthServer, httpx.Client]:
    server = HealthServer(config, sources, webhook_path="/webhooks/pixazo", clock=lambda: NOW)
    server.start()
    host, port = server.address
    return server, httpx.Client(base_url=f"http://{host}:{port}", timeout=10)


def _sources(reader: PostgresReader, local: list[Job]) -> PageSources:
    """What ``daemon.py`` hands the page on a shared store."""
    return PageSources(
        check=lambda: (True, {}),
        metrics=Metrics().render,
        jobs=reader.snapshot,
        report=lambda: status_report(reader),
        hosts=reader.hosts,
        owners=reader.owners,
        host="a",
        local_jobs=lambda: local,
    )


def test_the_page_shows_each_jobs_host_and_every_hosts_health(
    tmp_path: Path, postgres_url: str, two_hosts: Any
) -> None:
    """On a shared store the page has a Host column and each card says its host; the
    hosts panel lists every host, alive or not, with its last renewal, this host
    marked; while the database is out of reach it shows this host's own jobs and
    says why, and /api/jobs answers 503 instead of failing."""
    _, jobs = two_hosts
    config = config_for(tmp_path, postgres_url, health={"listen": "127.0.0.1:0"})
    reader = PostgresReader(postgres_url, host="a")
    server, client = _serve(config, _sources(reader, jobs[:2]))
    try:
        view = client.get("/api/view").json()
        assert view["shared"] is True
        assert {r["job_id"]: r["host"] for r in view["recent"]} == {
            jobs[0].job_id: "a",
            jobs[1].job_id: "a",
            jobs[2].job_id: "b",
        }
        hosts = {h["name"]: h for h in view["hosts"]}
        assert (hosts["a"]["alive_text"], hosts["a"]["this_host"]) == ("alive", "this host")
        assert (hosts["b"]["alive_text"], hosts["b"]["this_host"]) == ("not alive", "")
        assert hosts["b"]["renewed_at"] and hosts["b"]["renewed_text"].endswith(" UTC")
        assert hosts["a"]["jobs_text"] == "2 jobs" and hosts["b"]["jobs_text"] == "1 job"
        page = client.get("/").text
        assert '<th scope="col">Host</th>' in page and '<h2 id="h-hosts">Hosts</h2>' in page
        assert 'data-health="dead"' in page and "not alive" in page
        card = page[page.index(f'<li data-key="{jobs[2].job_id}" class="card') :]
        assert 'on <span data-bind="host">b</span>' in card[: card.index("</li>")]
        assert client.get("/api/jobs").json()["hosts"][1]["name"] == "b"
    finally:
        client.close()
        server.close()
        reader.close()

    gone = PostgresReader(f"postgresql://nobody@127.0.0.1:{free_port()}/nothing", host="a")
    server, client = _serve(config, _sources(gone, jobs[:1]))
    try:
        page = client.get("/")
        assert page.status_code == 200 and "The database cannot be reached" in page.text
        view = client.get("/api/view").json()
        assert "this page shows only this host's jobs" in view["problem"]
        assert [r["job_id"] for r in view["recent"]] == [jobs[0].job_id]
        assert view["hosts"] is None
        down = client.get("/api/jobs")
        assert down.status_code == 503 and "cannot be reached" in down.json()["error"]
        assert client.get(f"/jobs/{jobs[0].job_id}/video").status_code == 404  # not a 500
    finally:
        client.close()
        server.close()
        gone.close()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_daemon_on_the_shared_store_serves_every_hosts_view(
    tmp_path: Path,
    postgres_url: str,
    s3_server: S3Emulator,
    sim: Simulator,
    write_pair: Any,
) -> None:
    """A real daemon as host ``alpha`` beside a stopped host ``beta``: its page lists
    beta's job with alpha's new one, each with its host, and both hosts' health; its
    /metrics name it (``seedance_host_info``) and count the cluster's hosts."""
    beta = PostgresStore.open(postgres_url, host="beta")
    beta.put(make_job(9, State.DONE, output="old.mp4"))
    beta.close()
    extra = (
        f"cluster: {{database: '{postgres_url}', name: alpha}}\nhealth: {{listen: '127.0.0.1:0'}}\n"
    )
    config_path = write_config(tmp_path, s3_server, sim, extra=extra)
    daemon = DaemonProcess(config_path)
    try:
        listening = wait_for(
            lambda: [e for e in daemon.events() if e.get("event") == "health.listening"],
            timeout=30,
        )
        base = f"http://127.0.0.1:{listening[0]['port']}"
        wait_for(lambda: daemon.has_event("daemon.ready"), timeout=30)
        write_pair(tmp_path / "inbox", "beach")

        def view() -> dict[str, Any] | None:
            seen = httpx.get(base + "/api/view", timeout=10).json()
            states = {r["host"]: r["state"] for r in seen["recent"]}
            return seen if states == {"alpha": "done", "beta": "done"} else None

        seen = wait_for(view, timeout=30)
        hosts = {h["name"]: h["alive_text"] for h in seen["hosts"]}
        assert hosts == {"alpha": "alive", "beta": "not alive"}
        metrics = _samples(httpx.get(base + "/metrics", timeout=10).text)
        assert metrics[("seedance_host_info", (("host", "alpha"),))] == 1
        assert metrics[("seedance_cluster_hosts", ())] == 2
        assert metrics[("seedance_cluster_hosts_alive", ())] == 1
        assert metrics[("seedance_cluster_host_alive", (("host", "beta"),))] == 0
        health = httpx.get(base + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["paused"] == {}
    finally:
        daemon.signal(signal.SIGTERM)
        daemon.wait(timeout=40)
        daemon.kill()
