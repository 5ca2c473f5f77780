"""What a reference sidecar tells the inbox before intake reads it: ``sidecar_hint``.

The inbox pairs a sidecar with the images its ``references:`` lists from the hint
alone (an event-stream reading of the YAML), so the hint must list exactly what
intake will read, in its order, and claim nothing when intake will refuse the
list (the drop then fails at once instead of waiting for images).
"""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seedance_watch.core.stability import DropHint
from seedance_watch.files import sidecar as sidecar_module
from seedance_watch.files.sidecar import (
    MAX_REFERENCES,
    bare_name_fault,
    check_sidecar,
    sidecar_hint,
)

ALONE = DropHint(alone=True)
NONE = DropHint()


def refs(*names: str) -> DropHint:
    return DropHint(alone=True, references=names)


HINTS: list[tuple[bytes, str, DropHint]] = [
    (b"prompt: x\nreferences: [shoe.jpg, shoe-2.jpg]\n", "ad.yaml", refs("shoe.jpg", "shoe-2.jpg")),
    (b"prompt: x\nreferences: [b.png, a.png]\n", "ad.yaml", refs("b.png", "a.png")),  # order
    (b"prompt: x\nreferences:\n  - a.jpg\n  - b.jpg\n", "ad.yaml", refs("a.jpg", "b.jpg")),
    (b"prompt: x\nreferences:\n- a.jpg\n- b.jpg\nmode: image\n", "ad.yaml", refs("a.jpg", "b.jpg")),
    (b"references: ['B e.JPG', \"c.gif\"]\nprompt: x\n", "sub/ad.yml", refs("B e.JPG", "c.gif")),
    (b"{prompt: x, references: [a.jpg]}", "ad.yaml", refs("a.jpg")),
    (b"prompt: x\nreferences: !!seq [a.jpg]\n", "ad.yaml", refs("a.jpg")),
    (b"prompt: x\nreferences: [!!str a.jpg]\n", "ad.yaml", refs("a.jpg")),
    (b"prompt: &p a.jpg\nreferences: [*p, b.jpg]\n", "ad.yaml", refs("a.jpg", "b.jpg")),
    (b"prompt: x\nreferences: &r [a.jpg]\n", "ad.yaml", refs("a.jpg")),
    # The sidecar's own name is never claimed (intake refuses it, naming both).
    (b"prompt: x\nreferences: [ad.png, b.jpg]\n", "ad.yaml", refs("b.jpg")),
    (b"prompt: x\nreferences: [ad.jpg]\n", "sub/ad.yml", ALONE),
    # A list intake refuses claims nothing: the drop fails at once, alone.
    (b"prompt: x\nreferences: a.jpg\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: []\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences:\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: {a.jpg: 1}\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, a.jpg]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, sub/b.jpg]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, b.txt]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, 42]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, [b.jpg]]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, {b: c.jpg}]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg, !!binary b.jpg]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: !foo [a.jpg]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg]\nreferences: [b.jpg]\n", "ad.yaml", ALONE),
    (
        b"prompt: x\nreferences: [" + b", ".join(b"%d.jpg" % i for i in range(10)) + b"]\n",
        "ad.yaml",
        ALONE,
    ),
    # Another kind beside it is refused by intake: nothing is claimed.
    (b"prompt: x\nreferences: [a.jpg]\nlast_frame: e.png\n", "ad.yaml", ALONE),
    (b"prompt: x\nlast_frame: e.png\nreferences: [a.jpg]\n", "ad.yaml", ALONE),
    (b"prompt: x\nreferences: [a.jpg]\nmode: text\n", "ad.yaml", ALONE),
    # Only the top level counts, and values are not keys.
    (b"prompt: {references: [a.jpg]}\n", "ad.yaml", NONE),
    (b"prompt: [references, [a.jpg]]\n", "ad.yaml", NONE),
    (b"prompt: references\nx: [a.jpg]\n", "ad.yaml", NONE),
    (b"- references: [a.jpg]\n", "ad.yaml", NONE),
    (b"references: [a.jpg]\n---\nreferences: [a.jpg]\n", "ad.yaml", NONE),  # two documents
    (b"references: [a.jpg, *nowhere]\n", "ad.yaml", NONE),  # not YAML: an undefined alias
    (b"references: [a.jpg\n", "ad.yaml", NONE),  # unclosed
]


@pytest.mark.parametrize("parser", ["libyaml", "pure"])
@pytest.mark.parametrize(("data", "name", "hint"), HINTS, ids=range(len(HINTS)))
def test_reference_hint(
    data: bytes, name: str, hint: DropHint, parser: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A references list intake accepts is claimed in its order (but for a name of the
    sidecar's own stem); any references key makes the drop one without an image of the
    sidecar's name; a list intake refuses claims nothing.  The same with PyYAML's
    pure-Python parser (patched in: no other way to reach it)."""
    if parser == "pure":
        monkeypatch.setattr(sidecar_module, "_EVENT_LOADER", yaml.SafeLoader)
    else:
        assert yaml.__with_libyaml__
    assert sidecar_hint(data, name) == hint


_yamlish = st.lists(
    st.sampled_from(
        [
            "references", "mode", "last_frame", "prompt", ":", ": ", " ", "\n", "  ", "-",
            "- ", "[", "]", "{", "}", ",", "'", '"', "a.jpg", "b.png", "ad.jpg", "x.txt",
            "sub/c.jpg", "text", "image", "&a ", "*a", "!!str ", "!!seq ", "#", "---", "?",
        ]
    ),
    max_size=40,
).map("".join)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | _yamlish.map(str.encode))
def test_a_reference_hint_is_always_consistent(data: bytes) -> None:
    """Whatever the bytes: references only on a drop without an image of its own name,
    never beside a last frame, 1 to 9 distinct valid bare image names, none of the
    sidecar's own stem."""
    hint = sidecar_hint(data, "ad.yaml")
    assert isinstance(hint, DropHint)
    if hint.references:
        assert hint.alone and hint.last_frame is None
        assert len(hint.references) <= MAX_REFERENCES
        assert len(set(hint.references)) == len(hint.references)
        assert all(bare_name_fault(name) is None for name in hint.references)
        assert all(PurePosixPath(name).stem != "ad" for name in hint.references)


_NAMES = ["a.jpg", "B e.PNG", "ad.png", "c.gif", "sub/x.jpg", "x.txt", "a.jpg"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(_NAMES), max_size=4),
    st.sampled_from(["flow", "block"]),
    st.sampled_from(["plain", "single", "double"]),
)
def test_the_reference_hint_agrees_with_parse(names: list[str], layout: str, style: str) -> None:
    """For every sidecar intake accepts, the hint lists what the parsed sidecar lists, in
    its order (but for a name of the sidecar's own stem, which intake refuses)."""
    quote = {"plain": "", "single": "'", "double": '"'}[style]
    quoted = [f"{quote}{name}{quote}" for name in names]
    if layout == "flow":
        text = f"prompt: x\nreferences: [{', '.join(quoted)}]\n"
    else:
        text = "prompt: x\nreferences:\n" + "".join(f"  - {item}\n" for item in quoted)
    sidecar, problems = check_sidecar(text.encode())
    hint = sidecar_hint(text.encode(), "ad.yaml")
    assert hint.alone
    if sidecar is None:
        assert problems
        assert hint.references == ()
        return
    assert sidecar.kind == "reference"
    own = [name for name in sidecar.references if PurePosixPath(name).stem == "ad"]
    assert hint.references == tuple(n for n in sidecar.references if n not in own)
