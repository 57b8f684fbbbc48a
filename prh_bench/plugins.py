"""The plugin manager: built-in and third-party plugins, all through the ``prh_bench`` entry points.

Loading is lazy (on first use) so ``prh-bench --help`` costs nothing. ``PRH_BENCH_LOAD_PLUGINS``
selects what loads: unset = all, ``""`` = none, ``"a,b"`` = only the entry points named.

A plugin whose import fails (or calls ``sys.exit``) does not stop the others: the failure is
kept in ``failed_plugins()``, shown by ``prh-bench plugins`` and warned about once on stderr,
and the ids it would have registered are simply absent. A name in ``PRH_BENCH_LOAD_PLUGINS``
that no installed plugin has is warned about too. ``call_hook`` calls a hook's
implementations one by one, so an exception inside one becomes a ``PluginError`` naming it.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from .errors import PluginError

ENTRY_POINT_GROUP = "prh_bench"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str | None
    version: str | None
    module: str | None = None
    error: str | None = None


_pm: pluggy.PluginManager | None = None
_infos: dict[str, PluginInfo] = {}
_failed: list[PluginInfo] = []
# Bumped whenever the set of plugins changes; what is built from the plugins (the registries)
# compares it with the generation it was built at, so this layer need not know who they are.
_generation = 0


def generation() -> int:
    """A number that changes whenever a plugin is registered or the plugins are reset."""
    return _generation


def _selected_names() -> set[str] | None:
    raw = os.environ.get("PRH_BENCH_LOAD_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def _warn(message: str) -> None:
    print(f"Warning: {message}", file=sys.stderr)


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    selected = _selected_names()
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    unknown = sorted((selected or set()) - {ep.name for ep in entry_points})
    if unknown:
        _warn(
            f"PRH_BENCH_LOAD_PLUGINS names {', '.join(repr(n) for n in unknown)}, which no "
            f"installed plugin is called; installed: "
            f"{', '.join(sorted({ep.name for ep in entry_points})) or 'none'}"
        )
    for ep in entry_points:
        if selected is not None and ep.name not in selected:
            continue
        if pm.has_plugin(ep.name):
            continue  # the same distribution seen twice on sys.path
        dist = ep.dist.name if ep.dist else None
        version = ep.dist.version if ep.dist else None
        try:
            module = ep.load()
            _register(pm, module, ep.name)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down
            error = describe(exc)
            _failed.append(PluginInfo(ep.name, dist, version, ep.value, error))
            _warn(
                f"plugin '{ep.name}' (distribution {dist}) failed to load: {error}. "
                "The other plugins still load."
            )
            continue
        _infos[ep.name] = PluginInfo(ep.name, dist, version, ep.value)


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, created and filled on first call."""
    global _pm
    if _pm is None:
        pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        pm.add_hookspecs(hookspecs)
        _load_entry_points(pm)
        _pm = pm
    return _pm


def _register(pm: pluggy.PluginManager, plugin: object, name: str | None) -> str:
    """Register one plugin; a hook implementation with no spec (a misspelt name) fails loudly."""
    label = name or getattr(plugin, "__name__", repr(plugin))
    try:
        registered = pm.register(plugin, name=name)
    except (pluggy.PluginValidationError, ValueError) as exc:
        raise PluginError(f"plugin '{label}' is not a valid prh-bench plugin: {exc}") from None
    if registered is None:
        raise PluginError(f"plugin '{label}' is blocked")
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        pm.unregister(name=registered)
        raise PluginError(
            f"plugin '{label}' implements an unknown hook: {exc}. "
            "Check the spelling against docs/plugins/hooks.md."
        ) from None
    return registered


def describe(exc: BaseException) -> str:
    """What went wrong inside a plugin, in one line."""
    if isinstance(exc, PluginError):
        return str(exc)
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def call_hook(
    name: str,
    *,
    first: bool = False,
    on_error: Callable[[PluginError], None] | None = None,
    **kwargs: Any,
) -> list[Any]:
    """The implementations of hook ``name``, called one by one in pluggy's order; their non-None
    answers (only the first with ``first``). An exception inside one is a ``PluginError`` naming
    the plugin and the hook: raised, or given to ``on_error`` (the others still run)."""
    answers = []
    for impl in reversed(getattr(get_plugin_manager().hook, name).get_hookimpls()):
        args = {arg: kwargs[arg] for arg in impl.argnames}
        try:
            answer = impl.function(**args)
        except (Exception, SystemExit) as exc:
            error = PluginError(
                f"plugin '{impl.plugin_name}' raised inside {name}: {describe(exc)}. "
                "Fix or disable it (PRH_BENCH_LOAD_PLUGINS)."
            )
            if on_error is None:
                raise error from exc
            on_error(error)
            continue
        if answer is not None:
            answers.append(answer)
            if first:
                break
    return answers


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin (a module or object with ``@hookimpl`` functions)."""
    registered = _register(get_plugin_manager(), plugin, name)
    _infos[registered] = PluginInfo(registered, None, None, getattr(plugin, "__name__", None))
    _changed()
    return registered


def plugin_info(name: str) -> PluginInfo:
    return _infos.get(name, PluginInfo(name, None, None))


def loaded_plugins() -> list[PluginInfo]:
    """The plugins that loaded, with the hooks each implements."""
    pm = get_plugin_manager()
    return [plugin_info(name) for name, _ in pm.list_name_plugin()]


def plugin_hooks(name: str) -> list[str]:
    pm = get_plugin_manager()
    plugin = pm.get_plugin(name)
    return sorted(caller.name for caller in pm.get_hookcallers(plugin) or [])


def failed_plugins() -> list[PluginInfo]:
    get_plugin_manager()
    return list(_failed)


def reset() -> None:
    """Forget every loaded plugin; the next use loads them again (tests use this)."""
    global _pm
    _pm = None
    _infos.clear()
    _failed.clear()
    _changed()


def _changed() -> None:
    global _generation
    _generation += 1
