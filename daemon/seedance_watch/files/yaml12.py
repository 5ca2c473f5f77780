"""YAML loading with YAML 1.2 core-schema scalars.

PyYAML implements YAML 1.1, where ``16:9`` is the sexagesimal number 969 and
``yes``/``no``/``on``/``off`` are booleans.  Sidecars are written by people, so
``ratio: 16:9`` must stay the string "16:9".  This loader keeps only the 1.2
core schema's implicit types: null, true/false, decimal/octal/hex ints and
decimal floats (plus .inf/.nan); everything else is a string.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["Yaml12Loader", "load_yaml"]


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit resolvers."""


Yaml12Loader.yaml_implicit_resolvers = {}

Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _construct_int(loader: yaml.SafeLoader, node: yaml.Node) -> int:
    value = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    if value.startswith("0o"):
        return int(value[2:], 8)
    return int(value, 0) if value.startswith("0x") else int(value, 10)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str | bytes) -> Any:
    """Parse one YAML document with 1.2 scalars.  Raises ``yaml.YAMLError``."""
    return yaml.load(text, Loader=Yaml12Loader)
