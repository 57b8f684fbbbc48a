"""The ``prh-bench`` command line: a Click group of thin commands over the library.

Every user-caused error is a ``PrhBenchError``; the group prints it as one line
(``Error: ...``) and exits 1, never with a traceback.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from . import __version__
from .errors import PrhBenchError


class PrhBenchGroup(click.Group):
    """A Click group that shows user errors as one line and lets plugins add commands."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from .plugins import get_plugin_manager

        get_plugin_manager().hook.register_commands(cli=self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:  # only then load plugins: built-in commands stay fast
            self._add_plugin_commands()
            command = super().get_command(ctx, cmd_name)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except PrhBenchError as exc:
            raise click.ClickException(str(exc)) from None


def _table(rows: list[dict[str, Any]], empty: str) -> str:
    from tabulate import tabulate

    if not rows:
        return empty
    return tabulate(rows, headers="keys", tablefmt="github")


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False))


@click.group(cls=PrhBenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="prh-bench")
def cli() -> None:
    """Measure how alike vision and language models see the world.

    prh-bench extracts per-layer features of vision and language models on paired
    image-caption data and scores every (language, vision) pair with alignment metrics
    such as mutual k-nearest-neighbour overlap (Huh et al. 2024, arXiv:2405.07987).
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List the loaded plugins with their versions and hooks."""
    from .plugins import failed_plugins, loaded_plugins, plugin_hooks

    rows = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": plugin_hooks(p.name),
        }
        for p in loaded_plugins()
    ]
    failed = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "error": p.error}
        for p in failed_plugins()
    ]
    if as_json:
        _echo_json({"plugins": rows, "failed": failed} if failed else rows)
        return
    shown = [{**r, "hooks": ", ".join(r["hooks"])} for r in rows]
    click.echo(_table(shown, "No plugins loaded (is PRH_BENCH_LOAD_PLUGINS set to ''?)."))
    for f in failed:
        click.echo(f"failed: {f['name']} ({f['distribution']}): {f['error']}", err=True)


@cli.command()
@click.option(
    "--modality",
    type=click.Choice(["vision", "language"]),
    help="Only models of this modality.",
)
@click.option("--tag", "tags", multiple=True, help="Only models with this tag (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(modality: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List the registered models (weights are not loaded)."""
    from .registry import get_registry

    rows = []
    for entry in get_registry("model"):
        m = entry.obj
        if modality and m.modality != modality:
            continue
        if tags and not set(tags) <= set(m.tags):
            continue
        rows.append(
            {
                "id": m.id,
                "modality": m.modality,
                "family": m.family,
                "tags": list(m.tags),
                "parameters": m.metadata.parameters,
                "plugin": entry.plugin.name,
            }
        )
    if as_json:
        _echo_json(rows)
        return
    shown = [{**r, "tags": ",".join(r["tags"])} for r in rows]
    click.echo(_table(shown, "No models match."))


@cli.group(cls=PrhBenchGroup, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List the registered datasets, their size and whether each is available here."""
    if ctx.invoked_subcommand is not None:
        return
    from .registry import get_registry

    rows = []
    for entry in get_registry("dataset"):
        d = entry.obj
        if d.id.endswith(":"):
            rows.append(
                {
                    "id": f"{d.id}PATH",
                    "samples": None,
                    "available": "yes",
                    "summary": d.summary,
                    "plugin": entry.plugin.name,
                }
            )
            continue
        ok, why = d.availability()
        rows.append(
            {
                "id": d.id,
                "samples": len(d) if ok else None,
                "available": "yes" if ok else f"no: {why}",
                "summary": d.summary,
                "plugin": entry.plugin.name,
            }
        )
    if as_json:
        _echo_json(rows)
    else:
        click.echo(_table(rows, "No datasets registered."))


@datasets.command("show")
@click.argument("dataset_id")
@click.option("-n", "count", default=5, show_default=True, help="How many samples to print.")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A dataset option, e.g. skip_bad=true or caption_index=1 (repeatable).",
)
def datasets_show(dataset_id: str, count: int, options: tuple[str, ...]) -> None:
    """Print the first samples of a dataset: id, caption and image size."""
    from .datasets import get_dataset

    parsed = {}
    for opt in options:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {opt!r}", param_hint="--option")
        parsed[key.strip()] = value
    ds = get_dataset(dataset_id, **parsed)
    rows = []
    for i in range(min(count, len(ds))):
        s = ds[i]
        rows.append(
            {
                "index": i,
                "sample_id": s.sample_id,
                "caption": s.text,
                "image": f"{s.image.width}x{s.image.height}",
            }
        )
    click.echo(f"{ds.id} (revision {ds.revision}): {len(ds)} samples, hash {ds.content_hash[:16]}")
    click.echo(_table(rows, "The dataset is empty."))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def metrics(as_json: bool) -> None:
    """List the registered alignment metrics and their parameters."""
    from .registry import get_registry

    rows = [
        {
            "name": e.obj.name,
            "parameters": dict(e.obj.defaults),
            "symmetric": e.obj.symmetric,
            "summary": e.obj.summary,
            "plugin": e.plugin.name,
        }
        for e in get_registry("metric")
    ]
    if as_json:
        _echo_json(rows)
        return
    shown = [
        {**r, "parameters": ", ".join(f"{k}={v}" for k, v in r["parameters"].items())} for r in rows
    ]
    click.echo(_table(shown, "No metrics registered."))


def main() -> None:
    try:
        cli(prog_name="prh-bench")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
