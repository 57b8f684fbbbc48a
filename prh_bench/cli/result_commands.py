"""Commands that read result files: correlate, check, downstream, leaderboard, agreement,
predict. Each is a thin shell over ``correlate``, ``check``, ``site`` and ``stats``."""

from __future__ import annotations

import sys

import click

from . import PrhBenchGroup, _echo_json, _table, cli


@cli.command()
@click.argument("result_file", type=click.Path(dir_okay=False))
@click.option(
    "--vision",
    "vision_model",
    required=True,
    help="The reference vision model (an id or a glob, e.g. '*dinov2*').",
)
@click.option("--metric", default="mutual_knn", show_default=True, help="Which metric's scores.")
@click.option(
    "--downstream",
    type=click.Path(dir_okay=False),
    help="Extra downstream scores: CSV with model,metric,value[,source].",
)
@click.option(
    "--save/--no-save",
    default=True,
    show_default=True,
    help="Store the correlations in the result file.",
)
def correlate(
    result_file: str, vision_model: str, metric: str, downstream: str | None, save: bool
) -> None:
    """Correlate language models' alignment to a vision model with their downstream scores."""
    from ..correlate import correlate as correlate_run
    from ..correlate import save_correlations, table_rows
    from ..results import read_downstream_csv, read_result

    result = read_result(result_file)
    extra = read_downstream_csv(downstream) if downstream else None
    records = correlate_run(result, vision_model, metric, extra)
    if not records:
        click.echo(
            "No downstream metric is known for 3 or more of the language models; "
            "give scores with --downstream FILE.csv."
        )
        return
    click.echo(f"{metric} alignment to {records[0].vision_model} vs downstream scores\n")
    click.echo(_table(table_rows(records), ""))
    if save:
        save_correlations(result, result_file, records)
        click.echo(f"\nstored in {result_file}")


@cli.command()
@click.argument("new_file", type=click.Path(dir_okay=False))
@click.option(
    "--baseline",
    required=True,
    type=click.Path(dir_okay=False),
    help="The result file to compare against.",
)
@click.option(
    "--tolerance",
    default=0.01,
    show_default=True,
    type=float,
    help="Largest allowed absolute change of a score.",
)
@click.option(
    "--markdown",
    type=click.Path(dir_okay=False),
    help="Also write a markdown report (for a CI comment).",
)
def check(new_file: str, baseline: str, tolerance: float, markdown: str | None) -> None:
    """Compare a run with a baseline; exit 1 if a score moved or a baseline pair is missing."""
    from ..check import compare_runs
    from ..results import read_result

    report = compare_runs(read_result(baseline), read_result(new_file), tolerance)
    for drift in report.drifts:  # features first: they explain the scores below
        click.echo(f"FEATURES MOVED: {drift.line()}", err=True)
    for note in report.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(_table(report.rows(), "Nothing to compare."))
    if markdown:
        report.write_markdown(markdown)
    if report.ok:
        click.echo(f"\nOK: {len(report.changes)} scores within {tolerance}.")
        return
    click.echo(
        f"\nFAILED: {len(report.drifts)} models' features moved; {len(report.failed)} scores "
        f"changed by more than {tolerance} or are missing.",
        err=True,
    )
    sys.exit(1)


@cli.group(cls=PrhBenchGroup)
def downstream() -> None:
    """Downstream scores (HellaSwag, GSM8K, ...) to correlate alignment with."""


@downstream.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False),
    help="The downstream CSV to write (rows for the same model and metric are replaced).",
)
@click.option("--model", help="The model id, when the files do not say it.")
def downstream_import(files: tuple[str, ...], output: str, model: str | None) -> None:
    """Import lm-evaluation-harness result JSON files into a downstream CSV."""
    from ..correlate import import_lm_eval

    imported = import_lm_eval(files, output, model)
    if imported.undefined:
        click.echo(
            f"left out {len(imported.undefined)} score(s) the files give as NaN or Infinity: "
            + ", ".join(imported.undefined),
            err=True,
        )
    click.echo(f"imported {imported.count} scores from {len(files)} file(s) into {output}")


@cli.group(cls=PrhBenchGroup)
def leaderboard() -> None:
    """The static leaderboard site: build it from result files, preview it locally."""


@leaderboard.command("build")
@click.argument("results", nargs=-1, type=click.Path())
@click.option(
    "--output",
    "-o",
    default="site",
    show_default=True,
    type=click.Path(file_okay=False),
    help="The folder to write the site to (replaced only if it is a site built before).",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False),
    help="Site settings TOML [default: leaderboard/site.toml when it exists].",
)
@click.option(
    "--reference",
    help="The reference vision model, an id or a glob (overrides reference_vision).",
)
@click.option("--metric", help="The metric the front page shows (overrides default_metric).")
@click.option("--title", help="The site's title (overrides title).")
@click.option(
    "--strict",
    is_flag=True,
    help="Fail on a result file that cannot be read (default: leave it out with a warning).",
)
def leaderboard_build(
    results: tuple[str, ...],
    output: str,
    settings_file: str | None,
    reference: str | None,
    metric: str | None,
    title: str | None,
    strict: bool,
) -> None:
    """Build the static site from result files or folders (default: leaderboard/results/).

    A result file that cannot be read is left out, with one warning line naming it and why.
    """
    from ..site import DEFAULT_SETTINGS, build_site, load_settings

    if settings_file is None and DEFAULT_SETTINGS.is_file():
        settings_file = str(DEFAULT_SETTINGS)
    settings = load_settings(settings_file).override(
        reference_vision=reference, default_metric=metric, title=title
    )
    report = build_site(
        results, output, settings, log=lambda m: click.echo(m, err=True), strict=strict
    )
    click.echo(
        f"wrote {report.output}: {len(report.pages)} pages for {', '.join(report.datasets)} "
        f"({', '.join(report.metrics)}); preview with 'prh-bench leaderboard serve {output}'"
    )


@leaderboard.command("serve")
@click.argument("site", default="site", type=click.Path(file_okay=False))
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="The port (0: any free).",
)
def leaderboard_serve(site: str, port: int) -> None:
    """Preview a built site on http://127.0.0.1:PORT/ (Ctrl-C stops it)."""
    from ..site import make_server

    server = make_server(site, port)
    click.echo(f"serving {site} on http://127.0.0.1:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    finally:
        server.server_close()


@cli.command()
@click.argument("result_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def agreement(result_file: str, as_json: bool) -> None:
    """Kendall's tau between the model-pair rankings of a run's metrics, with 95% intervals."""
    from ..results import read_result
    from ..stats import add_statistics

    records = add_statistics(read_result(result_file)).agreement
    if as_json:
        _echo_json([r.model_dump() for r in records])
        return
    rows = [
        {
            "metric a": r.metric_a,
            "metric b": r.metric_b,
            "pairs": r.n_pairs,
            "tau": None if r.tau is None else round(r.tau, 3),
            "95% interval": ""
            if r.interval is None
            else f"[{r.interval[0]:.3f}, {r.interval[1]:.3f}]",
            "p": None if r.p_value is None else round(r.p_value, 4),
        }
        for r in records
    ]
    click.echo(_table(rows, "No rank agreement: the run scores fewer than two metrics."))


@cli.command()
@click.argument("result_file", type=click.Path(dir_okay=False))
@click.option("--vision-model", required=True, help="The vision model the alignment is to.")
@click.option("--downstream", "name", required=True, help="The downstream score, e.g. bpb.")
@click.option("--metric", default="mutual_knn", show_default=True, help="The alignment metric.")
def predict(result_file: str, vision_model: str, name: str, metric: str) -> None:
    """Predict language models' downstream scores from their alignment, with 95% intervals.

    The line is fitted over the models with both; a model with a known score is predicted
    from the others (leave-one-out), so the last line says how often the interval held.
    """
    from ..correlate import downstream_scores
    from ..results import read_result
    from ..stats import prediction_rows

    result = read_result(result_file)
    alignment = {
        s.model_a: s.value
        for s in result.scores
        if s.model_b == vision_model and s.metric == metric
    }
    if not alignment:
        vision = sorted({s.model_b for s in result.scores if s.metric == metric})
        raise click.ClickException(
            f"no {metric} score to vision model '{vision_model}' in {result_file}; "
            f"its vision models: {', '.join(vision) or 'none'}"
        )
    downstream = {
        m.id: downstream_scores(m)[name]
        for m in result.models
        if m.id in alignment and name in downstream_scores(m)
    }
    rows = prediction_rows(alignment, downstream)
    click.echo(
        _table(
            [
                {
                    "model": r["model"],
                    "alignment": round(r["alignment"], 4),
                    name: r["actual"],
                    "predicted": round(r["predicted"], 4),
                    "95% prediction interval": f"[{r['interval'][0]:.4f}, {r['interval'][1]:.4f}]",
                    "inside": {None: "", True: "yes", False: "no"}[r["inside"]],
                }
                for r in rows
            ],
            "No models.",
        )
    )
    checked = [r["inside"] for r in rows if r["inside"] is not None]
    click.echo(f"leave-one-out: {sum(checked)} of {len(checked)} inside their 95% interval")
