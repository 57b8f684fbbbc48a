"""Every hook a prh-bench plugin can implement. docs/plugins/hooks.md shows each one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    import click
    import jinja2

    from .knn import KnnBackend

hookspec = pluggy.HookspecMarker("prh_bench")
hookimpl = pluggy.HookimplMarker("prh_bench")


class Register(Protocol):
    """The callable a ``register_*`` hook receives."""

    def __call__(self, obj: Any, aliases: tuple[str, ...] | list[str] = ()) -> None: ...


@hookspec
def register_models(register: Register) -> None:
    """Register model adapters: call ``register(adapter, aliases=(...))`` once per model.

    An adapter is cheap to construct; weights load only in ``adapter.load(device, dtype)``.
    A ``prh_bench.models.ModelPrefix`` (id ending in ``:``) is a prefix handler:
    ``get_model("hf:ORG/NAME")`` calls its ``open("ORG/NAME")``.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register paired image-caption datasets: ``register(dataset, aliases=(...))``.

    A dataset whose id ends in ``:`` is a prefix handler: ``get_dataset("local:PATH")`` calls
    its ``open("PATH")``.
    """


@hookspec
def register_metrics(register: Register) -> None:
    """Register metric classes (subclasses of ``prh_bench.Metric``): ``register(cls)``.

    ``prh_bench.get_metric(name, **params)`` instantiates the class with the parameters.
    """


@hookspec(firstresult=True)
def knn_backend(device: str, n: int, dim: int, k: int) -> KnnBackend | None:
    """Return a kNN backend that can serve this problem, or None to pass.

    The first non-None answer wins, so a fast backend (a GPU kernel) answers for what it
    supports and the built-in exact torch backend answers last (``trylast``) for everything.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors (``prh_bench.executors.Executor`` instances) by ``name``:
    ``register(executor)``. ``prh-bench run --executor NAME`` hands the run's extraction units
    to it; its ``run(units)`` returns one ``UnitResult`` per unit, and the workers write into
    the shared feature store.
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add subcommands to the ``prh-bench`` Click group: ``@cli.command()``."""


@hookspec
def prepare_jinja2_environment(env: jinja2.Environment, settings: Any) -> None:
    """Change the Jinja2 environment the leaderboard site is rendered with: add filters, tests
    or globals (``env.filters["name"] = fn``). Called once per ``prh-bench leaderboard build``,
    after the built-in filters are in place; the environment autoescapes and is strict, so a
    filter returns plain text (escaped on output) or ``markupsafe.Markup`` it has escaped.

    ``settings`` is the build's ``prh_bench.site.SiteSettings`` (title, reference_vision, ...;
    typed ``Any`` here, as the hook specifications sit below the site in the layers); an
    implementation may leave it out of its signature and take ``env`` alone.
    """
