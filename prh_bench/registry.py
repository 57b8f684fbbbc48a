"""Id → object maps filled by the ``register_*`` hooks, and every lookup of what plugins give:
``get_model``, ``get_dataset``, ``get_metric``, ``get_executor`` and ``get_knn_backend``.

Every entry remembers the plugin (and its distribution version) that registered it; a second
registration of an id or alias fails naming both plugins; an unknown id fails with "did you
mean" suggestions and the command that lists what exists.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .datasets import Dataset, validate_dataset
from .errors import (
    DatasetError,
    DuplicateIdError,
    InvalidInputError,
    PluginError,
    PrhBenchError,
    UnknownIdError,
)
from .executors import Executor, validate_executor
from .metrics import Metric, validate_metric
from .models import ModelAdapter, ModelPrefix, split_model_spec, validate_model
from .plugins import PluginInfo, call_hook, describe, generation, get_plugin_manager, plugin_info

if TYPE_CHECKING:
    import torch

    from .knn import KnnBackend


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


@dataclass(frozen=True)
class Kind:
    """One kind of registered object: the hook that fills it, the command that lists it and the
    check every registered object must pass (the interface module's validator)."""

    hook: str
    list_command: str
    validate: Callable[[Any], None]


KINDS = {
    "model": Kind("register_models", "prh-bench models", validate_model),
    "dataset": Kind("register_datasets", "prh-bench datasets", validate_dataset),
    "metric": Kind("register_metrics", "prh-bench metrics", validate_metric),
    "executor": Kind("register_executors", "prh-bench executors", validate_executor),
}
# kind -> (the plugins' generation it was built at, the registry)
_cache: dict[str, tuple[int, Registry]] = {}


def get_registry(kind: str) -> Registry:
    """The registry of one kind ("model", "dataset", "metric", "executor"), built on first use
    and again after the plugins change."""
    if kind not in KINDS:
        raise ValueError(f"unknown registry kind {kind!r}")
    pm = get_plugin_manager()
    built = _cache.get(kind)
    if built is not None and built[0] == generation():
        return built[1]
    spec = KINDS[kind]
    reg = Registry(kind, spec.list_command, spec.validate)
    # Each implementation is called on its own rather than through pluggy's hook call: a
    # plain hook call would give every plugin the same ``register`` and lose who registered
    # what, which the duplicate-id error and `prh-bench models` need.
    for impl in getattr(pm.hook, spec.hook).get_hookimpls():
        info = plugin_info(impl.plugin_name)

        def register(obj: Any, aliases: tuple[str, ...] | list[str] = (), _info=info) -> None:
            reg.add(obj, _info, aliases)

        try:
            impl.function(register=register)
        except (DuplicateIdError, UnknownIdError):
            raise
        except (Exception, SystemExit) as exc:
            raise PluginError(
                f"plugin '{impl.plugin_name}' raised inside {spec.hook}: "
                f"{describe(exc)}. Fix or disable it (PRH_BENCH_LOAD_PLUGINS)."
            ) from exc
    _cache[kind] = (generation(), reg)
    return reg


# --------------------------------------------------------------------------- lookups


def get_model(model_id: str, **options: Any) -> ModelAdapter:
    """The model ``model_id`` (weights not loaded): a registered id or alias, or a model by
    name such as ``hf:ORG/NAME``; ``options`` (e.g. ``pooling="last"``) as ``with_options``."""
    reg = get_registry("model")
    if model_id in reg:
        model = reg.get(model_id)
        if isinstance(model, ModelPrefix):
            raise InvalidInputError(f"'{model_id}' needs an argument: {model.syntax}")
        return model.with_options(**options) if options else model
    opened = open_models(model_id, **options)
    if opened is None:
        reg.entry(model_id)  # raises the did-you-mean error
    assert opened is not None
    if len(opened) != 1:
        ids = ", ".join(m.id for m in opened)
        raise InvalidInputError(f"'{model_id}' names {len(opened)} models ({ids}); name one")
    return opened[0]


def _prefix_handler(spec: str) -> ModelPrefix | None:
    """The handler registered for ``spec``'s prefix (``hf:`` of ``hf:ORG/NAME``), if any."""
    prefix, colon, _ = spec.partition(":")
    reg = get_registry("model")
    handler = reg.get(f"{prefix}:") if colon and f"{prefix}:" in reg else None
    return handler if isinstance(handler, ModelPrefix) else None


def is_model_by_name(model_id: str) -> bool:
    """Whether ``model_id`` names a model through a prefix handler (``hf:...``)."""
    return _prefix_handler(model_id) is not None


def open_models(spec: str, **options: Any) -> list[ModelAdapter] | None:
    """The models ``prefix:ARGUMENT[?KEY=VALUE&...]`` names, opened by the handler registered
    as ``prefix:``; None when no handler has that prefix."""
    handler = _prefix_handler(spec)
    if handler is None:
        return None
    _, argument, given = split_model_spec(spec)
    if not argument:
        raise InvalidInputError(f"'{spec}' needs an argument: {handler.syntax}")
    twice = sorted(set(given) & set(options))
    if twice:
        raise InvalidInputError(f"model '{spec}': option {twice[0]!r} is given twice")
    return handler.open(argument, **given, **options)


def get_dataset(spec: str, **options: Any) -> Dataset:
    """The dataset ``spec``: a registered id, ``prefix:ARGUMENT`` or a folder path."""
    reg = get_registry("dataset")
    if spec in reg and not options:
        return reg.get(spec)
    if spec in reg:
        return reg.get(spec).with_options(**options)
    prefix, sep, argument = spec.partition(":")
    if sep and f"{prefix}:" in reg:
        return reg.get(f"{prefix}:").open(argument, **options)
    if os.path.isdir(spec) and "local:" in reg:
        return reg.get("local:").open(spec, **options)
    reg.entry(spec)  # raises the did-you-mean error
    raise DatasetError(f"cannot open dataset {spec!r}")  # unreachable


def get_metric(name: str, **params: Any) -> Metric:
    """The registered metric ``name`` with its parameters (e.g. ``topk=10``)."""
    cls = get_registry("metric").get(name)
    return cls(**params)


def get_executor(name: str, options: dict[str, Any] | None = None) -> Executor:
    """The registered executor ``name`` configured with ``options``."""
    base = get_registry("executor").get(name)
    return base.with_options(**(options or {}))


def get_knn_backend(device: str, n: int, dim: int, k: int) -> KnnBackend:
    """The kNN backend the ``knn_backend`` hook picks for this problem (the first that answers)."""
    answers = call_hook("knn_backend", first=True, device=device, n=n, dim=dim, k=k)
    backend = answers[0] if answers else None
    if backend is None:
        raise PluginError(
            f"no kNN backend serves device={device}, n={n}, dim={dim}, k={k}; the built-in "
            "plugin 'knn_torch' is missing (check PRH_BENCH_LOAD_PLUGINS)"
        )
    return backend


def knn_indices(feats: torch.Tensor, k: int) -> torch.Tensor:
    """Indices [N, k] of each row's k nearest rows (self excluded) by inner product."""
    from .knn import check_answer

    n, dim = feats.shape
    backend = get_knn_backend(feats.device.type, n, dim, k)
    try:
        answer = backend(feats, k)
    except PrhBenchError:  # e.g. the typed overflow error: the user's to fix
        raise
    except Exception as exc:
        name = getattr(backend, "name", type(backend).__name__)
        raise PluginError(f"kNN backend '{name}' failed: {describe(exc)}") from exc
    check_answer(backend, answer, n, k)
    return answer
