"""One contract every video provider passes (docs/design.md, "The gateway protocol").

Run against each provider with the gateway behind it: Pixazo against the simulator on
loopback, the shipped :class:`~seedance_watch.testing.provider.FakeProvider`, and the
ModelArk stub (``tests/stub_provider.py``) against its fake gateway.  A new provider
joins by adding a :class:`Gateway` for it to :data:`GATEWAYS`.

The contract: a provider has a name and a model table (and, when it is a plug-in of
the registry, a spec that says the same); ``create_task`` returns a :class:`TaskRef`
or raises the error of :mod:`seedance_watch.errors` that tells the engine what to do
next, and sends one submit per call, never two (a submit may be billed);
``task_status`` maps the gateway's words into the five states, with a job error for a
task that ended badly and :class:`TaskNotFound` for a task the gateway does not know;
the key goes to the gateway's origin only, and into no error, log line or answer.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from seedance_watch import errors as E
from seedance_watch.core.models import ModelTable
from seedance_watch.providers import pixazo
from seedance_watch.providers.base import (
    GenerationRequest,
    ProviderSpec,
    TaskRef,
    TaskStatus,
    VideoProvider,
)
from seedance_watch.providers.keys import ApiKey
from seedance_watch.providers.registry import provider_spec
from seedance_watch.testing.provider import (
    FakeProvider,
    task_ended,
    task_pending,
    task_succeeded,
)
from seedance_watch.testing.s3emulator import S3Emulator

from . import stub_provider
from .helpers import BUCKET, Receiver, make_image_bytes
from .simhelpers import MODEL, SimFactory, fast_tasks
from .test_stub_provider import FakeModelArk

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: The key each provider is given (a canary: it must show nowhere but in its header).
KEY = "contract-canary-key-0123456789"
REQUEST = GenerationRequest(
    kind="image", model=MODEL, text="A calm sea --resolution 720p --duration 5"
)

#: What a gateway's answer to a submit becomes: our error, and the HTTP status it keeps.
SUBMIT_REFUSALS: dict[str, tuple[type[E.SeedanceWatchError], int | None]] = {
    "key_refused": (E.CredentialsRefused, 401),
    "no_credit": (E.CredentialsRefused, 402),
    "rate_limited": (E.RateLimited, 429),
    "busy": (E.SubmitNotSent, 503),  # refused before anything was created: sent again later
    "answer_lost": (E.SubmitAmbiguous, 502),  # created, its answer lost: never sent again
    "invalid": (E.GatewayRejected, 400),
    "unreachable": (E.SubmitNotSent, None),  # provably never sent
}
#: How a task ends, and the code of the job error it brings.
ENDINGS = {
    "succeeded": None,
    "failed": "task_failed",
    "expired": "task_expired",
    "cancelled": "task_cancelled",
}


# --- the gateways behind the providers ------------------------------------------------------


@dataclass
class Gateway:
    """One provider and the gateway behind it, as the contract drives them."""

    provider: VideoProvider
    #: The registry's entry and the name a config uses for it (None: not a plug-in).
    spec: ProviderSpec | None
    registry_name: str | None
    #: The key the provider holds (None: it holds none).
    key: str | None
    #: The next submit is answered so (a key of :data:`SUBMIT_REFUSALS`).
    answer_submit: Callable[[str], None]
    #: Tasks created from now on end so (a key of :data:`ENDINGS`).
    end_tasks: Callable[[str], None]
    #: The gateway does not know this task id.
    forget: Callable[[str], None]
    #: How many submits reached the gateway.
    submits: Callable[[], int]
    #: The headers of every request that reached an origin other than the gateway's
    #: own (where its answers point: a polling URL, a video host).
    elsewhere: Callable[[], list[dict[str, str]]]
    image_url: str = "https://bucket.example/contract.jpg?X-Amz-Signature=abc"
    closers: list[Callable[[], None]] = field(default_factory=list)


def _presigned_image(s3: S3Emulator) -> str:
    client = s3.client()
    key = f"contract/{uuid.uuid4().hex}.jpg"
    client.put_object(Bucket=BUCKET, Key=key, Body=make_image_bytes(), ContentType="image/jpeg")
    url: str = client.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=600
    )
    return url


def _built(spec: ProviderSpec, base_url: str) -> VideoProvider:
    """The provider as the daemon builds it: through its spec's factory."""
    return spec.make(
        base_url,
        ApiKey(KEY, spec.keys.env),
        request_timeout=5.0,
        max_connections=10,
        on_response=None,
        downloader=None,
    )


def pixazo_gateway(s3: S3Emulator, sim_factory: SimFactory) -> Gateway:
    """Pixazo against the simulator, which answers in the envelope dialect with polling
    URLs on a foreign origin (the provider must poll at its own base URL instead)."""
    foreign = Receiver()
    sim = sim_factory(fast_tasks(api_key=KEY, submit_answer="envelope", polling_origin=foreign.url))
    refusals: dict[str, dict[str, Any]] = {
        "key_refused": {"api_key": "another-key"},
        "no_credit": {"credit_exhausted": True},
        "rate_limited": {"submit_status_rate": 1.0, "submit_status_codes": (429,)},
        "busy": {"submit_status_rate": 1.0, "submit_status_codes": (503,)},
        "answer_lost": {"submit_status_rate": 1.0, "submit_status_codes": (502,)},
        "invalid": {"submit_status_rate": 1.0, "submit_status_codes": (400,)},
    }
    rates = {"failed": "fail_task_rate", "expired": "expire_task_rate"}
    rates["cancelled"] = "cancel_task_rate"

    def answer_submit(answer: str) -> None:
        if answer == "unreachable":
            sim.stop()
        else:
            sim.configure(**refusals[answer])

    def end_tasks(ending: str) -> None:
        if ending in rates:
            sim.configure(**{rates[ending]: 1.0})

    return Gateway(
        provider=_built(pixazo.PROVIDER, sim.base_url),
        spec=pixazo.PROVIDER,
        registry_name="pixazo",
        key=KEY,
        answer_submit=answer_submit,
        end_tasks=end_tasks,
        forget=lambda _task_id: None,
        submits=lambda: sim.submit_attempts,
        elsewhere=lambda: [headers for _, headers, _ in foreign.calls],
        image_url=_presigned_image(s3),
        closers=[foreign.close],
    )


def modelark_gateway(s3: S3Emulator, _sim_factory: SimFactory) -> Gateway:
    """The ModelArk stub against its fake gateway (videos on a second origin)."""
    ark = FakeModelArk(KEY)
    statuses = {"rate_limited": 429, "busy": 503, "answer_lost": 502, "invalid": 400}
    statuses["no_credit"] = 402

    def answer_submit(answer: str) -> None:
        if answer == "unreachable":
            ark.close()
        elif answer == "key_refused":
            ark.key = "another-key"
        else:
            ark.submit_answers.append(statuses[answer])

    def end_tasks(ending: str) -> None:
        ark.ending = ending

    return Gateway(
        provider=_built(stub_provider.PROVIDER, ark.base_url),
        spec=stub_provider.PROVIDER,
        registry_name="tests.stub_provider:PROVIDER",
        key=KEY,
        answer_submit=answer_submit,
        end_tasks=end_tasks,
        forget=lambda _task_id: None,
        submits=lambda: len(ark.submits),
        elsewhere=lambda: [request.headers for request in ark.seen("files")],
        image_url=_presigned_image(s3),
        closers=[ark.close],
    )


def fake_gateway(_s3: S3Emulator, _sim_factory: SimFactory) -> Gateway:
    """The shipped fake: its script is the gateway."""
    fake = FakeProvider()
    refusals: dict[str, E.SeedanceWatchError] = {
        "key_refused": E.CredentialsRefused("the gateway refused the API key", http_status=401),
        "no_credit": E.CredentialsRefused("the account has no credit left", http_status=402),
        "rate_limited": E.RateLimited("slow down", retry_after=2.0, http_status=429),
        "busy": E.SubmitNotSent("the gateway failed the submit (HTTP 503)", http_status=503),
        "answer_lost": E.SubmitAmbiguous("a proxy answered HTTP 502", http_status=502),
        "invalid": E.GatewayRejected("the gateway rejected the submit", http_status=400),
        "unreachable": E.SubmitNotSent("could not connect"),
    }

    def end_tasks(ending: str) -> None:
        task_id = f"t-{len(fake.created) + 1}"  # the task the next submit creates
        last = (
            task_succeeded(f"https://videos.example/{task_id}.mp4")
            if ending == "succeeded"
            else task_ended(task_id, ending, "Scripted", "as the test said")  # type: ignore[arg-type]
        )
        fake.statuses[:] = [task_pending("queued"), task_pending("running"), last]

    def forget(task_id: str) -> None:
        fake.statuses[:] = [E.TaskNotFound(f"no task {task_id}", task_id=task_id)]

    return Gateway(
        provider=fake,
        spec=None,
        registry_name=None,
        key=None,
        answer_submit=lambda answer: fake.submits.append(refusals[answer]),
        end_tasks=end_tasks,
        forget=forget,
        submits=lambda: len(fake.created),
        elsewhere=list,
    )


GATEWAYS = {"pixazo": pixazo_gateway, "fake": fake_gateway, "modelark": modelark_gateway}


@pytest.fixture(params=sorted(GATEWAYS))
async def gateway(
    request: pytest.FixtureRequest, s3_server: S3Emulator, sim_factory: SimFactory
) -> AsyncIterator[Gateway]:
    built = GATEWAYS[request.param](s3_server, sim_factory)
    try:
        yield built
    finally:
        await built.provider.aclose()
        for close in built.closers:
            close()


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with capture_logs() as captured:
        yield captured


async def submit(gateway: Gateway) -> TaskRef:
    return await gateway.provider.create_task(REQUEST, [("image", gateway.image_url)])


async def followed(gateway: Gateway, ref: TaskRef) -> list[TaskStatus]:
    """Every answer of polling ``ref`` until its task ended (a deadline of 20 s)."""
    answers: list[TaskStatus] = []
    deadline = time.monotonic() + 20
    while not answers or answers[-1].state == "pending":
        assert time.monotonic() < deadline, answers
        answers.append(await gateway.provider.task_status(ref))
        await asyncio.sleep(0.05)
    return answers


def _no_key_in(gateway: Gateway, *things: object) -> None:
    if gateway.key is not None:
        for thing in things:
            assert gateway.key not in repr(thing), thing


# --- the contract ---------------------------------------------------------------------------


async def test_a_provider_has_a_name_and_the_models_it_serves(gateway: Gateway) -> None:
    """``name`` (recorded on each job) and ``models``; a plug-in's spec says the same,
    names where its key is looked for and its webhook path, and the registry finds it."""
    provider = gateway.provider
    assert isinstance(provider.name, str) and provider.name.strip() == provider.name != ""
    assert isinstance(provider.models, ModelTable) and MODEL in provider.models
    for method in ("create_task", "task_status", "aclose"):
        assert inspect.iscoroutinefunction(getattr(provider, method)), method
    spec = gateway.spec
    if spec is not None:
        assert gateway.registry_name is not None
        assert provider_spec(gateway.registry_name) is spec
        assert spec.name == provider.name and spec.models is provider.models
        assert spec.base_url.startswith("https://")
        assert spec.webhook_path.startswith("/webhooks/")
        assert spec.keys.env in spec.keys.variables and spec.keys.file_env in spec.keys.variables


async def test_an_accepted_submit_is_a_task_reference(gateway: Gateway) -> None:
    """One submit, one task: a TaskRef whose id is a clean string."""
    ref = await submit(gateway)
    assert isinstance(ref, TaskRef)
    assert isinstance(ref.task_id, str) and ref.task_id.strip() == ref.task_id != ""
    assert gateway.submits() == 1


@pytest.mark.parametrize("answer", sorted(SUBMIT_REFUSALS))
async def test_a_refused_submit_raises_our_error_and_is_sent_once(
    gateway: Gateway, answer: str, logs: list[dict[str, Any]]
) -> None:
    """Each refusal is the error that tells the engine what to do next, with the
    gateway's HTTP status; the provider sent the submit once (or, unreachable, never
    reached the gateway) and did not send it again; the key is in none of it."""
    error_class, status = SUBMIT_REFUSALS[answer]
    gateway.answer_submit(answer)
    with pytest.raises(E.SeedanceWatchError) as raised:
        await submit(gateway)
    assert type(raised.value) is error_class, raised.value
    assert raised.value.http_status == status
    over_the_network = gateway.key is not None
    assert gateway.submits() == (0 if answer == "unreachable" and over_the_network else 1)
    _no_key_in(gateway, raised.value, raised.value.message, logs)


@pytest.mark.parametrize("ending", sorted(ENDINGS))
async def test_a_task_is_followed_to_its_end(gateway: Gateway, ending: str) -> None:
    """Polls say ``pending`` until the task ends; then ``succeeded`` with its video URL,
    or ``failed``/``expired``/``cancelled`` with the job error of that ending (its code,
    its task id) and no video."""
    gateway.end_tasks(ending)
    ref = await submit(gateway)
    answers = await followed(gateway, ref)
    assert all(isinstance(a, TaskStatus) and isinstance(a.raw_status, str) for a in answers)
    assert [a.state for a in answers[:-1]] == ["pending"] * (len(answers) - 1)
    last = answers[-1]
    assert last.state == ending
    if ending == "succeeded":
        assert last.video_url is not None and last.video_url.startswith(("http://", "https://"))
        assert last.error is None
    else:
        assert last.video_url is None and isinstance(last.error, E.JobError)
        assert last.error.code == ENDINGS[ending] and last.error.task_id == ref.task_id
    assert gateway.submits() == 1


async def test_a_task_the_gateway_does_not_know_is_not_found(gateway: Gateway) -> None:
    """TaskNotFound, with the task's id: the engine retries a few times, then fails the job."""
    gateway.forget("no-such-task")
    with pytest.raises(E.TaskNotFound) as raised:
        await gateway.provider.task_status(TaskRef("no-such-task"))
    assert raised.value.task_id == "no-such-task"


async def test_the_free_key_check_creates_nothing(gateway: Gateway) -> None:
    """check_key answers True (the key is accepted) or False (no free call to tell),
    and costs nothing: no task is created, nothing billed."""
    assert await gateway.provider.check_key() in (True, False)
    assert gateway.submits() == 0


async def test_the_key_goes_to_the_gateway_and_nowhere_else(
    gateway: Gateway, logs: list[dict[str, Any]]
) -> None:
    """A task's whole life and a refused key later: nothing that reached another origin
    (where the gateway's answers point) carried the key, and no answer, error or log
    line shows it."""
    if gateway.key is None:
        pytest.skip("this provider holds no key")
    ref = await submit(gateway)
    answers = await followed(gateway, ref)
    gateway.answer_submit("key_refused")
    with pytest.raises(E.CredentialsRefused) as raised:
        await submit(gateway)
    assert all(gateway.key not in json.dumps(headers) for headers in gateway.elsewhere())
    _no_key_in(gateway, ref, answers, raised.value, raised.value.message, logs, gateway.provider)
    assert gateway.submits() == 2
