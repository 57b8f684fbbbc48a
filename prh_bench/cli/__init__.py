"""The ``prh-bench`` command line: a Click group of thin commands over the library.

Every user-caused error is a ``PrhBenchError``; the group prints it as one line
(``Error: ...``) and exits 1, never with a traceback. Ctrl-C prints ``Interrupted.`` and exits
130. A plugin that raises while adding its commands is warned about in one line; the other
commands (and ``--help``) still work.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .. import __version__
from ..errors import PrhBenchError


class PrhBenchGroup(click.Group):
    """A Click group that shows user errors as one line and lets plugins add commands."""

    _plugin_commands_added = False

    def _add_plugin_commands(self) -> None:
        if self._plugin_commands_added:
            return
        self._plugin_commands_added = True
        from ..plugins import call_hook

        def warn(error: PrhBenchError) -> None:
            click.echo(f"Warning: {error}", err=True)

        call_hook("register_commands", on_error=warn, cli=self)

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
        except KeyboardInterrupt:  # click would say "Aborted!" and exit 1, like an error
            click.echo("\nInterrupted.", err=True)
            raise click.exceptions.Exit(130) from None


def _device(value: str | None) -> str | None:
    """--device must name a device kind, whatever the flags after it (checked at parse time)."""
    if value is not None:
        from ..extract import check_device_name

        try:
            check_device_name(value)
        except PrhBenchError as exc:
            raise click.BadParameter(str(exc)) from None
    return value


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
    from ..plugins import failed_plugins, loaded_plugins, plugin_hooks

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
    """List the registered models and whether each is available here (weights are not
    loaded), then the prefixes that open any model by name (hf:, timm:, ...)."""
    from ..models import ModelPrefix
    from ..registry import get_registry

    rows, prefixes = [], []
    for entry in get_registry("model"):
        m = entry.obj
        if isinstance(m, ModelPrefix):
            prefixes.append({"syntax": m.syntax, "summary": m.summary, "plugin": entry.plugin.name})
            continue
        if modality and m.modality != modality:
            continue
        if tags and not set(tags) <= set(m.tags):
            continue
        ok, why = m.availability()
        rows.append(
            {
                "id": m.id,
                "modality": m.modality,
                "family": m.family,
                "tags": list(m.tags),
                "parameters": m.metadata.parameters,
                "available": "yes" if ok else f"no: {why}",
                "plugin": entry.plugin.name,
            }
        )
    if as_json:
        _echo_json(rows)
        return
    # the table keeps each reason's first clause; --json has the whole (what to install/fetch)
    shown = [
        {**r, "tags": ",".join(r["tags"]), "available": r["available"].split("; ")[0]} for r in rows
    ]
    click.echo(_table(shown, "No models match."))
    if any(r["available"] != "yes" for r in rows):
        click.echo("\n'prh-bench models --json' says how to get each model that is not available.")
    if prefixes and not (modality or tags):
        click.echo("\nAny other model by name (see docs/models.md):\n")
        click.echo(_table(prefixes, ""))


@cli.group(cls=PrhBenchGroup, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def datasets(ctx: click.Context, as_json: bool) -> None:
    """List the registered datasets, their size and whether each is available here."""
    if ctx.invoked_subcommand is not None:
        return
    from ..registry import get_registry

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
    from ..config import parse_option
    from ..errors import InvalidInputError
    from ..registry import get_dataset

    parsed = dict(
        parse_option(o, "dataset option", InvalidInputError, "skip_bad=true") for o in options
    )
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
    from ..registry import get_registry

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


@cli.group(cls=PrhBenchGroup)
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    envvar="PRH_BENCH_CACHE",
    help="The feature cache (default: $PRH_BENCH_CACHE, else ~/.cache/prh-bench).",
)
@click.pass_context
def cache(ctx: click.Context, cache_dir: str | None) -> None:
    """List or remove cached per-layer features."""
    ctx.obj = {"cache_dir": cache_dir}


def _cache_rows(entries: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "model": e.model_id,
            "dataset": e.dataset_id,
            "samples": e.num_samples,
            "layers": e.num_layers,
            "MB": round(e.size_bytes / 1e6, 2),
            "state": e.state,
            "path": str(e.path),
        }
        for e in entries
    ]


@cache.command("ls")
@click.option("--model", help="Only features of this model id.")
@click.option("--dataset", help="Only features on this dataset id.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.pass_context
def cache_ls(ctx: click.Context, model: str | None, dataset: str | None, as_json: bool) -> None:
    """List the cached feature files, unfinished extractions and torn temporary files."""
    from ..store import cache_root, list_cache

    rows = _cache_rows(list_cache(ctx.obj["cache_dir"], model, dataset))
    if as_json:
        _echo_json(rows)
        return
    click.echo(_table(rows, f"No cached features in {cache_root(ctx.obj['cache_dir'])}."))


@cache.command("rm")
@click.option("--model", help="Only features of this model id.")
@click.option("--dataset", help="Only features on this dataset id.")
@click.option("--all", "everything", is_flag=True, help="Remove every cached feature file.")
@click.pass_context
def cache_rm(ctx: click.Context, model: str | None, dataset: str | None, everything: bool) -> None:
    """Remove cached features of a model and/or dataset (or --all).

    What a running extraction is using (its lock, checkpoints, temporary files) is kept.
    """
    from ..errors import InvalidInputError
    from ..store import remove_cache

    if not (model or dataset or everything):
        raise InvalidInputError("say what to remove: --model ID, --dataset ID or --all")
    removed, in_use = remove_cache(ctx.obj["cache_dir"], model, dataset)
    for e in removed:
        click.echo(f"removed {e.path}")
    for e in in_use:
        click.echo(f"kept {e.path}: a running extraction is using it", err=True)
    click.echo(f"{len(removed)} entr{'y' if len(removed) == 1 else 'ies'} removed.")


# --------------------------------------------------------------------------- the main job


@cli.command()
@click.option(
    "--models",
    help="all, offline, vision, language, a comma list of ids/tags, a glob such as 'vit_*', "
    "or any model by name (hf:, timm:, open_clip:, gguf:; see below). [default: offline]",
)
@click.option("--dataset", help="Dataset id, local:PATH or a folder. [default: openclipart-1024]")
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="Metric name (repeatable), or 'all'. [default: mutual_knn]",
)
@click.option("--topk", type=int, help="k of the kNN metrics. [default: 10]")
@click.option(
    "--pairs",
    type=click.Choice(["cross", "all"]),
    help="cross: language x vision; all: every pair. [default: cross]",
)
@click.option(
    "--device",
    callback=lambda ctx, param, value: _device(value),
    help="cpu, cuda, cuda:N or mps. [default: the best available]",
)
@click.option("--batch-size", type=int, help="Override every model's batch size.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    envvar="PRH_BENCH_CACHE",
    help="The feature store. [default: $PRH_BENCH_CACHE, else ~/.cache/prh-bench]",
)
@click.option(
    "--output",
    type=click.Path(file_okay=False),
    help="Where result files go: OUTPUT/<dataset>/<run_id>.json. [default: results]",
)
@click.option("--limit", type=int, help="Use only the first N samples (quick runs).")
@click.option(
    "--null-permutations",
    type=int,
    help="Shuffled-pairs permutations for each score's floor (0: none). [default: 100]",
)
@click.option(
    "--replicates",
    type=int,
    help="Half-samples for each score's 95% interval and honest score; even (0: none). "
    "[default: 20]",
)
@click.option(
    "--downstream",
    type=click.Path(dir_okay=False),
    help="CSV of downstream scores: model,metric,value[,source].",
)
@click.option(
    "--keep-going",
    is_flag=True,
    default=None,
    help="Report a failing model and go on; exit code 3 says some failed.",
)
@click.option(
    "--executor",
    help="Who runs extraction: local, slurm, ray (prh-bench executors). [default: local]",
)
@click.option(
    "--executor-option",
    "executor_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="An executor option (repeatable), e.g. slurm_partition=gpu or address=auto.",
)
@click.option(
    "--shard",
    metavar="I/N",
    help="Extract only units with index % N == I (0-based), then stop; score with a run "
    "without --shard once every shard is done.",
)
@click.option(
    "--precision",
    type=click.Choice(["exact", "reference"]),
    help="exact: float32 pooling, exact quantile, float32 Gram (the reference's --precise); "
    "reference: model-dtype pooling, approximate quantile, TF32 Gram on CUDA (the reference's "
    "default GPU run). See docs/metrics.md. [default: exact]",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="A run.toml with the same keys; flags given here override it.",
)
def run(
    config_file: str | None,
    metrics: tuple[str, ...],
    executor_options: tuple[str, ...],
    **flags: Any,
) -> None:
    """Extract features, score every model pair with every metric, and write a result file.

    With no options: the offline suite on openclipart-1024 with mutual_knn (topk 10).

    \b
    Any model by name in --models (options after '?', joined by '&'; docs/models.md):
      hf:ORG/NAME[@REVISION] | hf:PATH                     a transformers language model
      timm:NAME | timm:FOLDER | timm:NAME?checkpoint=FILE  a timm vision model
      open_clip:ARCH/PRETRAINED[/image|/text]              CLIP towers (tag or file)
      gguf:FILE                                            a causal LM in a GGUF file
      e.g. --models 'hf:./my-llama?pooling=last&batch_size=8,timm:vit_base_patch16_224'
    """
    from ..registry import get_registry
    from ..runner import RunConfig, load_config_file, summary_rows, timing_rows
    from ..runner import run as run_job

    settings: dict[str, Any] = load_config_file(config_file) if config_file else {}
    settings.update({k: v for k, v in flags.items() if v is not None})
    if metrics:
        settings["metrics"] = list(metrics)
    if executor_options:
        from ..config import parse_option
        from ..executors import ExecutorError

        settings["executor_options"] = {
            **settings.get("executor_options", {}),
            **dict(parse_option(o, "executor option", ExecutorError) for o in executor_options),
        }
    if settings.get("metrics") in (["all"], "all"):
        settings["metrics"] = [e.obj.name for e in get_registry("metric")]
    outcome = run_job(RunConfig(**settings), log=lambda m: click.echo(m, err=True))
    result = outcome.result
    if result is None:  # --shard: features are in the store, alignment comes later
        done = sum(u.ok for u in outcome.units)
        for f in outcome.failures:
            click.echo(f"failed: {f.model}: {f.reason}", err=True)
        click.echo(f"shard {settings['shard']}: {done} of {len(outcome.units)} units in the store")
        sys.exit(3 if outcome.failed else 0)
    click.echo(f"\n{result.dataset.id} (N={result.dataset.n}), run {result.run_id}\n")
    click.echo(_table(summary_rows(result), "No scores."))
    skipped = [f for f in result.failures if f.stage == "availability"]
    if skipped:  # each was listed with its reason as it was skipped
        click.echo(f"{len(skipped)} model(s) skipped: not available here (reasons above)", err=True)
    for f in result.failures:
        if f.stage != "availability":
            click.echo(f"failed: {f.model}: {f.reason}", err=True)
    click.echo("\ntime breakdown\n")
    click.echo(_table(timing_rows(result.timings), ""))
    click.echo(f"\nwrote {outcome.path}")
    if outcome.failed:
        sys.exit(3)


# The commands that read result files (correlate, check, downstream, leaderboard, agreement,
# predict) live in their own room; importing it adds them to ``cli``.
from . import result_commands  # noqa: E402, F401


def main() -> None:
    try:
        cli(prog_name="prh-bench")
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
