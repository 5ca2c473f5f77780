"""The providers the daemon can talk to, by name: ``gateway.provider``.

A built-in provider is a module of this package with a module-level ``PROVIDER``
(:class:`~seedance_watch.providers.base.ProviderSpec`); it is found by its name,
so adding one is adding its module.  A provider outside the package is named by
its import path, ``package.module:PROVIDER`` (as uvicorn names an application),
which is how a plug-in -- or a test's stub -- is used without touching this code.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil

from seedance_watch import providers
from seedance_watch.errors import ConfigError
from seedance_watch.providers.base import ProviderSpec

__all__ = ["DEFAULT_PROVIDER", "builtin_providers", "provider_spec"]

#: ``gateway.provider`` when the config names none.
DEFAULT_PROVIDER = "pixazo"

#: Modules of this package that are the shared machinery, not providers.
_NOT_PROVIDERS = frozenset({"base", "download", "http", "keys", "registry"})


@functools.cache
def builtin_providers() -> dict[str, ProviderSpec]:
    """Every provider module of this package, by its spec's name."""
    found: dict[str, ProviderSpec] = {}
    for info in pkgutil.iter_modules(providers.__path__):
        if info.name in _NOT_PROVIDERS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{providers.__name__}.{info.name}")
        spec = getattr(module, "PROVIDER", None)
        if isinstance(spec, ProviderSpec):
            found[spec.name] = spec
    return found


@functools.cache
def provider_spec(name: str) -> ProviderSpec:
    """The provider called ``name`` (built in) or at ``module:attribute``.

    Raises :class:`ConfigError` (key ``gateway.provider``) naming the choices.
    """
    known = builtin_providers()
    if name in known:
        return known[name]
    if ":" in name:
        module_name, _, attribute = name.partition(":")
        try:
            spec = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"gateway.provider {name!r} cannot be imported: {exc}", key="gateway.provider"
            ) from exc
        if isinstance(spec, ProviderSpec):
            return spec
        raise ConfigError(
            f"gateway.provider {name!r} is not a ProviderSpec", key="gateway.provider"
        )
    raise ConfigError(
        f"gateway.provider {name!r} is not a provider; built in: {', '.join(sorted(known))} "
        "(or a plug-in's module:PROVIDER)",
        key="gateway.provider",
    )
