"""Which Seedance 1.0 models take which kind of drop: the one table (SPEC §4).

A drop is one of three kinds: ``image`` (image to video), ``frames`` (first and
last frame) or ``text`` (text to video).  Not every model offers every kind; a
model asked for a kind it lacks is refused by the gateway with a 400, after the
images were uploaded.  The daemon refuses such a drop itself, at intake, with a
sentence naming the model, what it takes and which models take the kind asked.

Pure data and small functions: the sidecar, the config, ``validate`` and the
simulator all read this one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal

__all__ = [
    "DEFAULT_IMAGE_MODEL",
    "DEFAULT_TEXT_MODEL",
    "KINDS",
    "KIND_NAMES",
    "KNOWN_MODELS",
    "MODEL_KINDS",
    "Kind",
    "kind_refusal",
    "kinds_of",
    "models_for",
]

#: What a drop asks for: image to video, first and last frame, or text to video.
Kind = Literal["image", "frames", "text"]

#: Every kind, in the order they are shown to people.
KINDS: Final[tuple[Kind, ...]] = ("image", "frames", "text")

#: Each kind in the words of the documentation.
KIND_NAMES: Final[Mapping[Kind, str]] = MappingProxyType(
    {"image": "image to video", "frames": "first and last frame", "text": "text to video"}
)

# Source: BytePlus ModelArk, video generation API reference, "Model capabilities"
# (the models the Pixazo gateway fronts):
#   seedance-1-0-pro-250528       first and last frames, first frame, text
#   seedance-1-0-pro-fast-251015  first frame, text (no last frame)
#   seedance-1-0-lite-i2v-250428  first frame, first and last frames, reference
#                                 images (which the daemon does not offer); no text
#   seedance-1-0-lite-t2v-250428  text only
#: The Seedance 1.0 models and the kinds of drop each takes.
MODEL_KINDS: Final[Mapping[str, frozenset[Kind]]] = MappingProxyType(
    {
        "seedance-1-0-lite-i2v-250428": frozenset({"image", "frames"}),
        "seedance-1-0-lite-t2v-250428": frozenset({"text"}),
        "seedance-1-0-pro-250528": frozenset({"image", "frames", "text"}),
        "seedance-1-0-pro-fast-251015": frozenset({"image", "text"}),
    }
)

#: Every model the daemon knows; a sidecar may still name another (a warning).
KNOWN_MODELS: Final = frozenset(MODEL_KINDS)

#: The defaults of ``gateway.model`` (image and frames drops) and ``gateway.text_model``.
DEFAULT_IMAGE_MODEL: Final = "seedance-1-0-lite-i2v-250428"
DEFAULT_TEXT_MODEL: Final = "seedance-1-0-lite-t2v-250428"


def models_for(kind: Kind) -> list[str]:
    """The known models that take ``kind``, sorted."""
    return sorted(model for model, kinds in MODEL_KINDS.items() if kind in kinds)


def kinds_of(model: str) -> str:
    """The kinds a known model takes, in words (``image to video, text to video``)."""
    return ", ".join(KIND_NAMES[k] for k in KINDS if k in MODEL_KINDS[model])


def kind_refusal(model: str, kind: Kind) -> str | None:
    """Why ``model`` cannot make a ``kind`` drop, or None when it can (or is unknown).

    An unknown model is not refused here: whether to accept it is the caller's
    choice (``gateway.strict_model``).
    """
    kinds = MODEL_KINDS.get(model)
    if kinds is None or kind in kinds:
        return None
    return (
        f"{model} does not offer {KIND_NAMES[kind]} (it takes {kinds_of(model)}); "
        f"models that do: {', '.join(models_for(kind))}"
    )
