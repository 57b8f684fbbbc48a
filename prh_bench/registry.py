"""Id → object maps filled by the ``register_*`` hooks.

Every entry remembers the plugin (and its distribution version) that registered it; a second
registration of an id or alias fails naming both plugins; an unknown id fails with "did you
mean" suggestions and the command that lists what exists.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import DuplicateIdError, PluginError, UnknownIdError
from .plugins import PluginInfo, get_plugin_manager, plugin_info


@dataclass(frozen=True)
class Entry:
    id: str
    obj: Any
    plugin: PluginInfo
    aliases: tuple[str, ...] = ()


def object_id(obj: Any) -> str:
    """The id a registered object is known by: its ``id``, else its ``name``."""
    ident = getattr(obj, "id", None) or getattr(obj, "name", None)
    if not isinstance(ident, str) or not ident:
        raise TypeError(f"{obj!r} has no string 'id' or 'name' attribute to register it by")
    return ident


@dataclass
class Registry:
    kind: str  # "model", "dataset", "metric", "executor"
    list_command: str
    validate: Callable[[Any], None] | None = None
    _entries: dict[str, Entry] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def add(self, obj: Any, plugin: PluginInfo, aliases: tuple[str, ...] | list[str] = ()) -> None:
        if self.validate is not None:
            self.validate(obj)
        ident = object_id(obj)
        aliases = tuple(aliases)
        for name in (ident, *aliases):
            owner = self._owner(name)
            if owner is not None:
                raise DuplicateIdError(
                    f"{self.kind} id '{name}' is registered twice: by plugin "
                    f"'{owner.plugin.name}' and by plugin '{plugin.name}'. "
                    "Uninstall one of them or disable it with PRH_BENCH_LOAD_PLUGINS."
                )
        entry = Entry(ident, obj, plugin, aliases)
        self._entries[ident] = entry
        for alias in aliases:
            self._aliases[alias] = ident
        try:  # the object itself remembers who registered it
            obj.registered_by = plugin
        except (AttributeError, TypeError):
            pass

    def _owner(self, name: str) -> Entry | None:
        if name in self._entries:
            return self._entries[name]
        if name in self._aliases:
            return self._entries[self._aliases[name]]
        return None

    def entry(self, name: str) -> Entry:
        found = self._owner(name)
        if found is None:
            raise UnknownIdError(self.kind, name, self.suggest(name), self.list_command)
        return found

    def get(self, name: str) -> Any:
        return self.entry(name).obj

    def __contains__(self, name: str) -> bool:
        return self._owner(name) is not None

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self._entries.values(), key=lambda e: e.id))

    def __len__(self) -> int:
        return len(self._entries)

    def suggest(self, name: str, n: int = 3) -> list[str]:
        names = list(self._entries) + list(self._aliases)
        close = difflib.get_close_matches(name, names, n=n, cutoff=0.6)
        # a prefix of a long timm or hub id is the commonest slip ("vit_larg")
        starts = [x for x in names if x.lower().startswith(name.lower()) and x not in close]
        inside = [x for x in names if name.lower() in x.lower() and x not in close + starts]
        return [self._aliases.get(x, x) for x in (close + starts + inside)][:n] if name else []


_HOOKS = {
    "model": "register_models",
    "dataset": "register_datasets",
    "metric": "register_metrics",
    "executor": "register_executors",
}
_LIST_COMMANDS = {
    "model": "prh-bench models",
    "dataset": "prh-bench datasets",
    "metric": "prh-bench metrics",
    "executor": "prh-bench executors",
}
_cache: dict[str, Registry] = {}


def _validators() -> dict[str, Callable[[Any], None]]:
    from .datasets import validate_dataset
    from .executors import validate_executor
    from .metrics import validate_metric
    from .models import validate_model

    return {
        "model": validate_model,
        "dataset": validate_dataset,
        "metric": validate_metric,
        "executor": validate_executor,
    }


def get_registry(kind: str) -> Registry:
    """The registry of one kind ("model", "dataset", "metric", "executor"), built on first use."""
    if kind not in _HOOKS:
        raise ValueError(f"unknown registry kind {kind!r}")
    if kind in _cache:
        return _cache[kind]
    pm = get_plugin_manager()
    reg = Registry(kind, _LIST_COMMANDS[kind], _validators()[kind])
    # Call each implementation on its own so every object is attributed to its plugin.
    for impl in getattr(pm.hook, _HOOKS[kind]).get_hookimpls():
        info = plugin_info(impl.plugin_name)

        def register(obj: Any, aliases: tuple[str, ...] | list[str] = (), _info=info) -> None:
            reg.add(obj, _info, aliases)

        try:
            impl.function(register=register)
        except (DuplicateIdError, UnknownIdError):
            raise
        except Exception as exc:
            raise PluginError(
                f"plugin '{impl.plugin_name}' raised inside {_HOOKS[kind]}: "
                f"{type(exc).__name__}: {exc}. Fix or disable it (PRH_BENCH_LOAD_PLUGINS)."
            ) from exc
    _cache[kind] = reg
    return reg


def clear_cache() -> None:
    _cache.clear()
