"""What one job costs: per generation or per second (flat or by resolution), the
gateway's defaults for options not sent, ``duration: auto`` reserved then settled at
the video's real length, exact decimals rounded once, and ``budget.prices`` checked
key by key."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from seedance_watch.config import BudgetConfig, load_config
from seedance_watch.core.budget import (
    AUTO_RESERVE_SECONDS,
    BudgetPrices,
    BudgetTally,
    JobCost,
    daily_costs,
)
from seedance_watch.core.jobs import (
    Job,
    Placing,
    State,
    SubmitIntent,
    SubmitRefused,
    Submitted,
    TaskSucceeded,
    Uploaded,
    apply,
)
from seedance_watch.core.models import MODELS
from seedance_watch.errors import ConfigError
from seedance_watch.files.mp4 import video_seconds
from seedance_watch.simulator.video import make_video

pytestmark = pytest.mark.timeout(60)

PRO_FAST = "seedance-1-0-pro-fast-251015"
FAST = "seedance-2-0-fast"
MINI = "seedance-2-0-mini"
V25 = "seedance-2-5"


def prices(**budget: Any) -> BudgetPrices:
    return BudgetPrices.from_config(BudgetConfig.model_validate(budget))


def reserve(p: BudgetPrices, model: str, **options: Any) -> JobCost:
    return p.reserve(model, options)


# --- the built-in table ----------------------------------------------------------------------


def test_the_built_in_prices_are_the_model_table_s() -> None:
    """Without budget.prices every live row costs its table price: 1.0 Pro per
    generation, the Seedance 2 family per second (at the config's 720p, 5 s)."""
    p = prices()
    assert reserve(p, PRO_FAST, resolution="1080p", duration=12) == JobCost(
        20, "generation", Decimal("0.20")
    )
    assert reserve(p, "seedance-1-0-pro-250528").cents == 20
    five = {"resolution": "720p", "duration": 5}
    assert {m: p.reserve(m, five).cents for m in ("seedance-2-0", FAST, MINI, V25)} == {
        "seedance-2-0": 145,
        FAST: 120,
        MINI: 38,
        V25: 116,  # 0.231 × 5 = 1.155, half up
    }
    for row in MODELS.live():
        assert row.price is not None and p.price(row.model) == row.price


def test_mini_is_exact_then_rounded_once() -> None:
    """0.0756 × 5 = 0.378 → 0.38 (rounding the rate first would give 5 × 0.08 = 0.40);
    0.0756 × 7 = 0.5292 → 0.53; 0.0756 × 15 = 1.134 → 1.13."""
    p = prices()
    assert reserve(p, MINI, duration=5) == JobCost(38, "second", Decimal("0.0756"), 5)
    assert reserve(p, MINI, duration=7).cents == 53
    assert reserve(p, MINI, duration=15).cents == 113


def test_half_a_cent_rounds_up() -> None:
    """0.125 × 1 = 0.125 → 0.13; 0.105 per generation → 0.11 (never banker's rounding)."""
    p = prices(prices={"a": {"per_second": 0.125}, "b": 0.105, "c": 0.115})
    assert reserve(p, "a", duration=1).cents == 13
    assert reserve(p, "b").cents == 11
    assert reserve(p, "c").cents == 12


# --- per second ------------------------------------------------------------------------------


def test_per_second_flat_is_the_rate_times_the_seconds() -> None:
    """A flat rate ignores the resolution; the seconds are the effective duration."""
    p = prices(prices={"mine": {"per_second": 0.24}})
    assert reserve(p, "mine", resolution="480p", duration=6) == JobCost(
        144, "second", Decimal("0.24"), 6
    )
    assert reserve(p, "mine", resolution="1080p", duration=6).cents == 144


def test_per_second_by_resolution_takes_the_job_s_resolution() -> None:
    """By resolution: each job pays the rate at its own resolution."""
    p = prices(prices={"mine": {"per_second": {"480p": 0.10, "720p": 0.20, "1080p": 0.50}}})
    assert reserve(p, "mine", resolution="480p", duration=5).cents == 50
    assert reserve(p, "mine", resolution="720p", duration=5).cents == 100
    assert reserve(p, "mine", resolution="1080p", duration=10) == JobCost(
        500, "second", Decimal("0.5"), 10
    )


def test_options_not_sent_cost_the_gateway_s_defaults() -> None:
    """No resolution sent: 720p's rate; no duration sent: 5 seconds (what the gateway
    then makes).  Records without options are priced the same way."""
    p = prices(prices={"mine": {"per_second": {"480p": 0.10, "720p": 0.20}}})
    assert reserve(p, "mine") == JobCost(100, "second", Decimal("0.2"), 5)
    assert reserve(p, "mine", duration=8).cents == 160
    assert reserve(p, "mine", resolution="480p").cents == 50
    assert p.reserve("mine", None).cents == 100
    assert p.reserve("mine", {"resolution": None, "duration": None}).cents == 100


def test_an_unlisted_resolution_of_an_unknown_model_costs_its_dearest_rate() -> None:
    """A model the table does not know may be sent any resolution: one its prices do
    not list costs the dearest listed rate (never under-counted)."""
    p = prices(prices={"theirs": {"per_second": {"480p": 0.10, "720p": 0.30}}})
    assert reserve(p, "theirs", resolution="1080p", duration=2).cents == 60


def test_config_prices_override_and_extend_the_table() -> None:
    """budget.prices replaces a row's price (even its unit) and adds models; the rest
    keep the table's; a model in neither costs default_price per generation."""
    p = prices(prices={FAST: 1.5, PRO_FAST: {"per_second": 0.05}}, default_price=0.33)
    assert reserve(p, FAST, duration=15) == JobCost(150, "generation", Decimal("1.5"))
    assert reserve(p, PRO_FAST, duration=12).cents == 60
    assert reserve(p, MINI, duration=5).cents == 38
    assert reserve(p, "elsewhere", duration=15) == JobCost(33, "generation", Decimal("0.33"))


# --- duration: auto --------------------------------------------------------------------------


def test_auto_reserves_the_model_s_longest_duration_unsettled() -> None:
    """duration: auto reserves the model's longest duration (15 s), to be settled; a
    model the table does not know reserves the longest any model makes."""
    p = prices(prices={"theirs": {"per_second": 0.10}})
    fast = reserve(p, FAST, duration="auto")
    assert fast == JobCost(360, "second", Decimal("0.24"), 15, settled=False)
    assert MODELS[FAST].longest_duration() == 15 == AUTO_RESERVE_SECONDS
    assert reserve(p, "theirs", duration="auto") == JobCost(
        150, "second", Decimal("0.1"), AUTO_RESERVE_SECONDS, settled=False
    )
    assert reserve(p, FAST, duration=6).settled  # a set duration has nothing to settle


def test_settle_rounds_the_length_up_to_whole_seconds() -> None:
    """6.2 s is charged as 7; exactly 6.0 as 6; a settled cost never changes again."""
    reserved = reserve(prices(), FAST, duration="auto")
    settled = reserved.settle(6.2)
    assert settled == JobCost(168, "second", Decimal("0.24"), 7)
    assert reserved.settle(6.0).cents == 144
    assert settled.settle(14.5) == settled
    per_generation = reserve(prices(), PRO_FAST)
    assert per_generation.settle(9.0) == per_generation
    with pytest.raises(ValueError):
        reserved.settle(0)


@pytest.fixture(scope="module")
def mp4_of_6_2_seconds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264 mp4 asked for 6.2 s (8 fps: 50 frames, 6.25 s in its header)."""
    picture = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(picture, "PNG")
    path = tmp_path_factory.mktemp("mp4") / "clip.mp4"
    path.write_bytes(make_video(picture.getvalue(), seconds=6.2))
    return path


def test_a_real_mp4_s_header_settles_auto_at_7_seconds(mp4_of_6_2_seconds: Path) -> None:
    """The length comes from the mp4's header (mutagen): 6.2 s asked, settled at 7 s:
    0.0756 × 7 = 0.5292 → 0.53 for Mini, 0.24 × 7 = 1.68 for 2.0 Fast."""
    length = video_seconds(mp4_of_6_2_seconds)
    assert length is not None and 6.2 <= length < 7
    assert reserve(prices(), MINI, duration="auto").settle(length) == JobCost(
        53, "second", Decimal("0.0756"), 7
    )
    assert reserve(prices(), FAST, duration="auto").settle(length).cents == 168


def test_what_is_not_an_mp4_has_no_length(tmp_path: Path) -> None:
    """A file mutagen cannot read (or none at all) gives None, never an exception."""
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    assert video_seconds(junk) is None
    assert video_seconds(tmp_path / "missing.mp4") is None


# --- the record ------------------------------------------------------------------------------


def test_the_cost_round_trips_through_the_job_record() -> None:
    """Job.cost is JSON: cents, per, the exact rate as a string, seconds, settled."""
    cost = reserve(prices(), MINI, duration="auto")
    assert cost.to_dict() == {
        "cents": 113,
        "per": "second",
        "rate": "0.0756",
        "seconds": 15,
        "settled": False,
    }
    assert JobCost.from_dict(cost.to_dict()) == cost
    generation = reserve(prices(), PRO_FAST)
    assert generation.to_dict() == {
        "cents": 20,
        "per": "generation",
        "rate": "0.20",
        "settled": True,
    }
    assert JobCost.from_dict(generation.to_dict()) == generation
    assert cost.settle(6.25).to_output("EUR") == {
        "amount": 0.53,
        "currency": "EUR",
        "per": "second",
        "seconds": 7,
    }
    assert generation.to_output("USD") == {"amount": 0.2, "currency": "USD", "per": "generation"}
    for bad in (
        {"cents": 1},
        {"cents": -1, "per": "second", "rate": "1"},
        {"cents": 1, "per": "x", "rate": "1"},
    ):
        with pytest.raises((KeyError, ValueError)):
            JobCost.from_dict(bad)


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "job_id": "j1",
        "state": State.UPLOADED,
        "source": "a.jpg",
        "sidecar": "a.yaml",
        "created_at": 0.0,
        "updated_at": 0.0,
        "model": FAST,
        "options": {"resolution": "720p", "duration": "auto"},
        "uploads": (("image", "k"),),
    }
    return Job(**{**base, **fields})


def test_the_intent_records_the_reservation_and_placing_the_settlement() -> None:
    """SubmitIntent carries the reservation into Job.cost; Placing replaces it with the
    settled cost (durable before the output JSON); a refusal clears it."""
    reserved = reserve(prices(), FAST, duration="auto")
    job = apply(_job(), SubmitIntent(cost=reserved.to_dict()), 10.0)
    assert job.cost == reserved.to_dict() and job.intent_at == 10.0
    assert apply(job, SubmitRefused(), 11.0).cost is None
    job = apply(job, Submitted(task_id="t"), 11.0)
    job = apply(job, TaskSucceeded(video_url="https://v.example/x.mp4"), 50.0)
    settled = reserved.settle(6.25).to_dict()
    placed = apply(
        job,
        Placing(output="a.mp4", video_sha256="0" * 64, video_bytes=1, moved_to=(), cost=settled),
        51.0,
    )
    assert placed.cost == settled and Job.from_dict(placed.to_dict()).cost == settled
    unchanged = apply(
        job, Placing(output="a.mp4", video_sha256="0" * 64, video_bytes=1, moved_to=()), 51.0
    )
    assert unchanged.cost == reserved.to_dict()
    assert apply(_job(), Uploaded(uploads=(("image", "k"),)), 1.0).cost is None


# --- the tally -------------------------------------------------------------------------------


def test_a_settlement_changes_the_day_by_the_difference() -> None:
    """Reserved 3.60 (15 s), settled at 7 s (1.68): the day moves by -1.92, submits
    stay; a settlement the day does not hold changes nothing."""
    p = prices(max_cost_per_day=4.0)
    tally = BudgetTally(p)
    at = 1_790_000_000.0
    tally.intent(at, 360)
    tally.intent(at, 20)
    assert tally.check(at, 120) is not None  # 3.80 + 1.20 > 4.00
    assert tally.settled(at, 360, 168)
    assert tally.spent(at) == (188, 2)
    assert tally.check(at, 120) is None
    assert not tally.settled(at + 86400, 360, 168)  # nothing reserved that day
    assert tally.spent(at + 86400) == (0, 0)
    assert tally.settled(at, 20, 25) and tally.spent(at)[0] == 193  # it may go up too


def test_recorded_costs_win_and_older_records_are_priced_now() -> None:
    """The tally and `costs` count a job at its recorded cost; a record without one (an
    older ledger) at its model's price today."""
    p = prices(prices={PRO_FAST: 0.25})
    at = 1_790_000_000.0
    recorded = reserve(prices(), MINI, duration="auto").settle(6.25).to_dict()
    jobs = [
        _job(job_id="a", model=MINI, state=State.DONE, intent_at=at, cost=recorded),
        _job(job_id="b", model=PRO_FAST, options=None, intent_at=at),
    ]
    assert BudgetTally.from_jobs(p, jobs).spent(at) == (53 + 25, 2)
    (day,) = daily_costs(p, jobs)
    assert day.to_dict()["cost"] == 0.78
    assert day.to_dict()["models"] == {
        MINI: {"submits": 1, "cost": 0.53},
        PRO_FAST: {"submits": 1, "cost": 0.25},
    }


# --- budget.prices in the config -------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "seedance-watch.yaml"
    path.write_text("storage: {bucket: b}\n" + text)
    return path


def test_config_takes_the_three_forms(tmp_path: Path) -> None:
    """A number, {per_second: N} and {per_second: {RES: N, ...}}, whole numbers too."""
    config = load_config(
        write(
            tmp_path,
            "budget:\n  prices:\n    a: 1\n    b: {per_second: 0.0756}\n"
            "    seedance-2-5: {per_second: {480p: 0.1, 720p: 0.231, 1080p: 1}}\n",
        ),
        {},
    )
    p = BudgetPrices.from_config(config.budget)
    assert reserve(p, "a") == JobCost(100, "generation", Decimal("1"))
    assert reserve(p, "b", duration=5).cents == 38
    assert reserve(p, V25, resolution="1080p", duration=4).cents == 400
    assert reserve(p, V25, duration=5).cents == 116


@pytest.mark.parametrize(
    ("prices_yaml", "names"),
    [
        ("{a: -0.1}", "budget.prices.a ="),
        ("{a: true}", "budget.prices.a ="),
        ("{a: '0.2'}", "budget.prices.a ="),
        ("{a: .inf}", "budget.prices.a ="),
        ("{a: {per_second: .nan}}", "budget.prices.a.per_second ="),
        ("{a: {per_second: {720p: -1}}}", "budget.prices.a.per_second.720p ="),
        ("{a: {per_second: {4k: 1}}}", "budget.prices.a.per_second.4k is not a resolution"),
        ("{a: {per_second: {}}}", "budget.prices.a.per_second is empty"),
        ("{a: {per_generation: 0.2}}", "budget.prices.a takes"),
        ("{a: {per_second: 1, per_generation: 1}}", "budget.prices.a takes"),
        ("{a: [0.2]}", "budget.prices.a ="),
        ("[0.2]", "budget.prices maps a model"),
        (
            "{seedance-2-5: {per_second: {480p: 0.1, 720p: 0.2}}}",
            "budget.prices.seedance-2-5.per_second has no rate for 1080p",
        ),
    ],
)
def test_config_refuses_what_is_not_a_price(tmp_path: Path, prices_yaml: str, names: str) -> None:
    """Each wrong price is a config error whose message names the exact key."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f"budget: {{prices: {prices_yaml}}}\n"), {})
    assert info.value.key == "budget.prices"
    assert names in str(info.value)


def test_prices_from_the_environment(tmp_path: Path) -> None:
    """SEEDANCE_WATCH_BUDGET__PRICES takes a flow mapping like the file does."""
    config = load_config(
        write(tmp_path, ""),
        {"SEEDANCE_WATCH_BUDGET__PRICES": "{seedance-2-0-fast: {per_second: 0.3}}"},
    )
    assert reserve(BudgetPrices.from_config(config.budget), FAST, duration=5).cents == 150
