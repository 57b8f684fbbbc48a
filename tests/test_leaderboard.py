"""The leaderboard site: results -> pages, figures, data files; settings, errors, escaping, CLI."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from prh_bench.results import (
    DatasetRecord,
    Downstream,
    ModelRecord,
    NullRecord,
    PluginRecord,
    RunResult,
    ScoreRecord,
    write_result,
)
from prh_bench.site import (
    SITE_MARKER,
    LeaderboardError,
    SiteSettings,
    build_site,
    load_settings,
    make_server,
    safe_url,
)
from prh_bench.storage import slug as slugify

HOSTILE = "<script>alert(1)</script>"
REFERENCE = "vit_large_patch14_dinov2.lvd142m"
FAST = SiteSettings(reference_vision="*dinov2*", bootstrap_resamples=200)


def _model(id, modality, layers, params, **kw) -> ModelRecord:
    return ModelRecord(
        id=id,
        modality=modality,
        family=kw.pop("family", "timm-vit" if modality == "vision" else "transformers-causal"),
        parameters=params,
        num_layers=layers,
        **kw,
    )


def make_result(
    run_id: str = "20260101T000000Z-abc123", hostile: bool = False, n: int = 64
) -> RunResult:
    """A result with 4 language models (bpb and HellaSwag known), two trained vision models and
    the random-init control of the reference; alignment grows as bpb falls, as in the paper."""
    vision = [
        _model(REFERENCE, "vision", 4, 304_000_000),
        _model("vit_small_patch14_dinov2.lvd142m", "vision", 4, 22_000_000),
        _model(f"{REFERENCE}.random", "vision", 4, 304_000_000, tags=["random-init", "control"]),
    ]
    language = []
    for i, (name, bpb, hella) in enumerate(
        [
            ("bigscience/bloomz-560m", 1.10, 0.31),
            ("bigscience/bloomz-1b7", 0.98, 0.37),
            ("bigscience/bloomz-3b", 0.92, 0.41),
            ("bigscience/bloomz-7b1", 0.85, 0.46),
        ]
    ):
        language.append(
            _model(
                name,
                "language",
                3,
                10**9 * (i + 1),
                bpb=bpb,
                downstream={"hellaswag": Downstream(value=hella, source="https://example.org/lb")},
            )
        )
    if hostile:
        language.append(
            _model(
                HOSTILE,
                "language",
                3,
                5,
                family='"><img src=x id=pwned-family>',
                revision="javascript:alert(2)",
                tags=["<b>tag</b>"],
                downstream={"hellaswag": Downstream(value=0.2, source="javascript:alert(3)")},
            )
        )
    scores = []
    for li, lm in enumerate(language):
        for vi, vm in enumerate(vision):
            value = 0.1 + 0.05 * li - 0.02 * vi if vi < 2 else 0.06  # vi 2: the control
            matrix = [[round(value * (0.5 + 0.1 * (a + b)), 6) for b in range(4)] for a in range(3)]
            matrix[1][2] = value
            scores.append(
                ScoreRecord(
                    model_a=lm.id,
                    model_b=vm.id,
                    metric="mutual_knn",
                    params={"topk": 10},
                    value=value,
                    best_index=(1, 2),
                    matrix=matrix,
                    preprocessing={"q": 0.95},
                    null=NullRecord(permutations=20, mean=0.05, std=0.004, p_value=0.05),
                )
            )
            scores.append(
                ScoreRecord(
                    model_a=lm.id,
                    model_b=vm.id,
                    metric="cka",
                    params={},
                    value=value * 2,
                    best_index=(2, 3),
                    matrix=[[value * 2]],
                    preprocessing={"q": 0.95},
                )
            )
    return RunResult(
        run_id=run_id,
        created="2026-01-01T00:00:00+00:00",
        prh_bench_version="0.1.0",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        environment={"python": "3.11"},
        plugins=[PluginRecord(name="tests")],
        config={"topk": 10},
        dataset=DatasetRecord(id="wit_1024", revision="1", content_hash="ab" * 32, n=n),
        models=vision + language,
        scores=scores,
    )


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("results")
    write_result(make_result(), folder)
    return folder


@pytest.fixture(scope="module")
def site(results_dir, tmp_path_factory) -> Path:
    """One site for the tests that only read it (a build takes a few seconds)."""
    out = tmp_path_factory.mktemp("built") / "site"
    build_site([results_dir], out, FAST)
    return out


def read(site: Path, page: str) -> str:
    return (site / page).read_text(encoding="utf-8")


def table_rows(html: str, table_id: str) -> list[str]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body.split("<tbody>", 1)[1], flags=re.S)


def test_build_writes_every_page_and_file(site):
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*") if p.is_file()}
    slug = "wit_1024-n64-mutual_knn"
    for expected in (
        "index.html",
        f"board-{slug}.html",
        f"matrix-{slug}.html",
        f"downstream-{slug}.html",
        "board-wit_1024-n64-cka.html",
        "models.html",
        "data.html",
        f"models/{slugify(REFERENCE)}.html",
        "models/bigscience--bloomz-7b1.html",
        "data/scores.csv",
        "data/leaderboard.json",
        f"figures/heatmap-{slug}.svg",
        f"figures/scatter-{slug}-bpb.svg",
        f"figures/scatter-{slug}-hellaswag.svg",
        "data/runs/wit_1024-n64/20260101T000000Z-abc123.json",
        "static/site.css",
        "static/sort.js",
        "static/favicon.svg",
        SITE_MARKER,
        ".nojekyll",
    ):
        assert expected in pages, expected


def test_language_ranking_against_reference_with_floors(site):
    html = read(site, "index.html")
    rows = table_rows(html, "language-table")
    order = [re.search(r"models/[^\"]+\.html\">([^<]+)<", r).group(1) for r in rows]
    assert order == [
        "bigscience/bloomz-7b1",
        "bigscience/bloomz-3b",
        "bigscience/bloomz-1b7",
        "bigscience/bloomz-560m",
    ]
    first = rows[0]
    assert "<strong>0.250</strong>" in first  # 0.1 + 0.05 * 3
    assert "0.050<small> ± 0.004</small>" in first  # the null floor
    assert 'data-sort="0.06"' in first  # the random-init control floor
    assert "1, 2" in first  # best layers (language, vision)
    assert f'the random-init control <a href="models/{slugify(REFERENCE + ".random")}' in html
    assert "Language models by alignment to" in html and REFERENCE in html


def test_vision_ranking_is_mean_over_language_models(site):
    rows = table_rows(read(site, "index.html"), "vision-table")
    assert len(rows) == 3
    assert REFERENCE in rows[0] and "<strong>0.175</strong>" in rows[0]  # mean of .1 .. .25
    assert "0.155" in rows[1]  # the small model: 0.02 lower
    assert "control" in rows[2] and 'class="badge"' in rows[2]
    assert 'data-sort="0.06"' in rows[0]  # its control's mean


def test_metric_and_dataset_switch_are_links(site, tmp_path, results_dir):
    html = read(site, "index.html")
    assert 'href="board-wit_1024-n64-cka.html"' in html
    assert 'href="board-wit_1024-n64-mutual_knn.html" aria-current="true"' in html
    # a second dataset (another N) shows up in the switcher with its N
    write_result(make_result("20260102T000000Z-def456", n=32), tmp_path / "more")
    build_site([results_dir, tmp_path / "more"], tmp_path / "two", FAST)
    html = read(tmp_path / "two", "index.html")
    assert "wit_1024 (N=32):" in html and 'href="board-wit_1024-n32-mutual_knn.html"' in html


def test_matrix_page_has_heatmap_and_numbers(site):
    html = read(site, "matrix-wit_1024-n64-mutual_knn.html")
    assert '<img class="figure" src="figures/heatmap-wit_1024-n64-mutual_knn.svg"' in html
    rows = table_rows(html, "matrix-table")
    assert len(rows) == 4 and rows[0].count('class="num h') == 3
    svg = read(site, "figures/heatmap-wit_1024-n64-mutual_knn.svg")
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "language model" in svg and "vision model" in svg  # axis labels
    assert "bigscience/bloomz-7b1" in svg  # tick labels stay text


def test_downstream_page_has_correlations_and_figures(site):
    html = read(site, "downstream-wit_1024-n64-mutual_knn.html")
    rows = table_rows(html, "correlation-table")
    assert [re.search(r'#fig-([^"]+)"', r).group(1) for r in rows] == ["bpb", "hellaswag"]
    assert "-1.000" in rows[0] or "-0.9" in rows[0]  # alignment falls as bpb rises
    assert "(lower is better)" in rows[0]
    assert re.search(r"\[-?\d\.\d{3}, -?\d\.\d{3}\]", rows[1])  # a bootstrap interval
    svg = read(site, "figures/scatter-wit_1024-n64-mutual_knn-hellaswag.svg")
    assert "least-squares fit" in svg and "Pearson r" in svg and "Spearman rho" in svg
    assert "alignment (mutual_knn)" in svg and "hellaswag" in svg


def test_downstream_page_explains_when_there_is_nothing_to_correlate(tmp_path):
    result = make_result()
    for m in result.models:
        m.bpb, m.downstream = None, {}
    write_result(result, tmp_path / "r")
    build_site([tmp_path / "r"], tmp_path / "s", FAST)
    html = read(tmp_path / "s", "downstream-wit_1024-n64-mutual_knn.html")
    assert "needs a downstream score" in html and "correlation-table" not in html


def test_model_page(site):
    html = read(site, "models/bigscience--bloomz-7b1.html")
    assert '<h1 class="model-id">bigscience/bloomz-7b1</h1>' in html
    assert 'href="https://huggingface.co/bigscience/bloomz-7b1"' in html  # the site_links plugin
    assert "4.0B" in html and "transformers-causal" in html
    assert "1 / 2" in html  # best layer of this model out of 0..2
    assert "hellaswag" in html and 'href="https://example.org/lb"' in html
    assert "20260101T000000Z-abc123" in html and "0123456789ab" in html  # provenance
    assert 'href="../board-wit_1024-n64-mutual_knn.html">1 of 4</a>' in html
    vision = read(site, f"models/{slugify(REFERENCE)}.html")
    assert "https://huggingface.co/timm/vit_large_patch14_dinov2.lvd142m" in vision


def test_data_downloads(site):
    rows = list(csv.DictReader(io.StringIO(read(site, "data/scores.csv"))))
    assert len(rows) == 24 and {r["metric"] for r in rows} == {"mutual_knn", "cka"}
    top = next(
        r
        for r in rows
        if r["model_a"] == "bigscience/bloomz-7b1"
        and r["model_b"] == REFERENCE
        and r["metric"] == "mutual_knn"
    )
    assert float(top["value"]) == pytest.approx(0.25) and top["layer_a"] == "1"
    assert float(top["null_mean"]) == 0.05 and top["modality_a"] == "language"
    data = json.loads(read(site, "data/leaderboard.json"))
    board = next(b for b in data["boards"] if b["metric"] == "mutual_knn")
    assert board["reference_vision"] == REFERENCE
    assert board["language_ranking"][0]["model"] == "bigscience/bloomz-7b1"
    assert {c["downstream"] for c in board["correlations"]} == {"bpb", "hellaswag"}
    raw = json.loads(read(site, "data/runs/wit_1024-n64/20260101T000000Z-abc123.json"))
    assert raw["run_id"] == "20260101T000000Z-abc123"


def test_footer_has_provenance(site, monkeypatch, results_dir, tmp_path):
    html = read(site, "index.html")
    footer = html.split("<footer>", 1)[1]
    assert "Built with prh-bench" in footer and "20260101T000000Z-abc123" in footer
    assert "commit <code>0123456789ab</code>" in footer
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    monkeypatch.setenv("GITHUB_SHA", "feedfacefeedfacefeedface")
    build_site([results_dir], tmp_path / "again", FAST)
    footer = read(tmp_path / "again", "index.html").split("<footer>", 1)[1]
    assert "on 1970-01-01 00:00 UTC from commit <code>feedfacefeed</code>" in footer


def test_pages_work_without_javascript_and_without_inline_code(site):
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert "Content-Security-Policy" in html
        # the only script is the external sort.js; no inline handlers or styles
        assert re.findall(r"<script[^>]*>", html) == [
            f'<script src="{"../" * (len(page.relative_to(site).parts) - 1)}static/sort.js" defer>'
        ]
        assert " onclick=" not in html and " style=" not in html
        assert "</table>" in html or "note" in html or page.name == "models.html"


def test_hostile_model_names_are_escaped(tmp_path):
    write_result(make_result(hostile=True), tmp_path / "r")
    build_site([tmp_path / "r"], tmp_path / "s", FAST)
    slug = slugify(HOSTILE)
    assert re.fullmatch(r"script-alert-1---script-[0-9a-f]{8}", slug)
    for page in (tmp_path / "s").rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        assert HOSTILE not in html and "<img src=x" not in html and "<b>tag</b>" not in html
        assert "javascript:" not in html.replace("javascript:alert(3)</td>", "").replace(
            "javascript:alert(2)</dd>", ""
        ), page  # the URLs appear only as text, never as an href
        assert 'href="javascript' not in html
    model = read(tmp_path / "s", f"models/{slug}.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in model
    assert "<td>javascript:alert(3)</td>" in model  # the source is text, not a link
    assert "&#34;&gt;&lt;img src=x id=pwned-family&gt;" in model
    # the CSV keeps the id as data (it is not HTML)
    assert HOSTILE in read(tmp_path / "s", "data/scores.csv")


def test_slugs_are_file_names_and_distinct():
    ids = ["bigscience/bloomz-7b1", "bigscience--bloomz-7b1", "a b", "a_b", "../../etc", HOSTILE]
    slugs = [slugify(i) for i in ids]
    assert slugs[0] == "bigscience--bloomz-7b1" and len(set(slugs)) == len(ids)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) and ".." not in s for s in slugs)


def test_safe_url_refuses_other_schemes():
    assert safe_url("https://huggingface.co/x") == "https://huggingface.co/x"
    assert safe_url("http://example.org") == "http://example.org"
    for bad in (
        "javascript:alert(1)",
        " JavaScript:alert(1)",
        "java\tscript:x",
        "data:text/html,x",
        "vbscript:x",
        "",
        None,
        3,
        "//evil.example/x",
        "file:///etc/passwd",
    ):
        assert safe_url(bad) is None, bad


def test_reference_glob_picks_largest_and_unknown_reference_fails(results_dir, tmp_path):
    site = tmp_path / "s"
    build_site([results_dir], site, SiteSettings(reference_vision="vit_*", bootstrap_resamples=200))
    assert f'alignment to <a href="models/{slugify(REFERENCE)}.html"' in read(site, "index.html")
    with pytest.raises(
        LeaderboardError,
        match=r"reference vision model 'clip\*' matches no trained"
        r" vision model in the results \(there: vit_large",
    ):
        build_site([results_dir], tmp_path / "t", SiteSettings(reference_vision="clip*"))
    with pytest.raises(LeaderboardError, match="matches no trained"):  # a control never counts
        build_site([results_dir], tmp_path / "t", SiteSettings(reference_vision="*.random"))
    assert not (tmp_path / "t").exists()


def test_unknown_default_metric_or_dataset_fails(results_dir, tmp_path):
    with pytest.raises(LeaderboardError, match=r"metric 'svcca' has no scores in the results"):
        build_site([results_dir], tmp_path / "s", SiteSettings(default_metric="svcca"))
    with pytest.raises(LeaderboardError, match=r"dataset 'coco' is in no result file \(there: wit"):
        build_site([results_dir], tmp_path / "s", SiteSettings(default_dataset="coco"))
    settings = SiteSettings(reference_vision="*dinov2*", bootstrap_resamples=200)
    settings.default_metric = "cka"
    build_site([results_dir], tmp_path / "s", settings)
    assert "<title>cka on wit_1024" in read(tmp_path / "s", "index.html")


def test_no_results_and_malformed_results_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LeaderboardError, match=r"no result files \(\*\.json\) in .*empty"):
        build_site([tmp_path / "empty"], tmp_path / "s")
    with pytest.raises(LeaderboardError, match="no such file or folder"):
        build_site([tmp_path / "missing"], tmp_path / "s")
    bad = tmp_path / "bad" / "x.json"
    bad.parent.mkdir()
    bad.write_text('{"schema_version": 1, "run_id": "x"}')
    from prh_bench.errors import PrhBenchError

    with pytest.raises(PrhBenchError, match=r"x\.json: invalid result file"):
        build_site([bad], tmp_path / "s")
    bad.write_text("{not json")
    with pytest.raises(PrhBenchError, match="not valid JSON"):
        build_site([bad], tmp_path / "s")


def test_rebuild_replaces_a_site_but_never_a_foreign_folder(results_dir, tmp_path):
    site = tmp_path / "site"
    build_site([results_dir], site, FAST)
    (site / "stale.html").write_text("old")
    build_site([results_dir], site, FAST)
    assert not (site / "stale.html").exists() and (site / "index.html").exists()
    project = tmp_path / "project"
    project.mkdir()
    (project / "precious.py").write_text("keep me")
    with pytest.raises(LeaderboardError, match="not empty and not a site built by prh-bench"):
        build_site([results_dir], project, FAST)
    assert (project / "precious.py").read_text() == "keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_failed_build_leaves_the_previous_site(results_dir, tmp_path, monkeypatch):
    import prh_bench.site.build as lb

    site = tmp_path / "site"
    build_site([results_dir], site, FAST)
    before = read(site, "index.html")

    def boom(board):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(lb, "draw_heatmap", boom)
    with pytest.raises(RuntimeError):
        build_site([results_dir], site, FAST)
    assert read(site, "index.html") == before


def test_missing_template_field_fails_the_build(results_dir, tmp_path):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "data.html").write_text("{{ no_such_field }}")
    settings = SiteSettings(
        reference_vision="*dinov2*", bootstrap_resamples=200, templates=str(templates)
    )
    import jinja2

    with pytest.raises(jinja2.UndefinedError, match="no_such_field"):
        build_site([results_dir], tmp_path / "s", settings)
    (templates / "data.html").write_text("custom {{ site.title }}")
    build_site([results_dir], tmp_path / "s", settings)
    assert read(tmp_path / "s", "data.html") == "custom prh-bench leaderboard"


def test_settings_file(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text('[site]\ntitle = "My board"\nreference_vision = "*clip*"\ntemplates = "tpl"\n')
    with pytest.raises(LeaderboardError, match=r"site\.toml, line 4: templates folder .*tpl does"):
        load_settings(path)  # a folder that is not there is not silently ignored
    (tmp_path / "tpl").mkdir()
    settings = load_settings(path)
    assert settings.title == "My board" and settings.reference_vision == "*clip*"
    assert settings.templates == str((tmp_path / "tpl").resolve())
    path.write_text('titel = "x"\n')
    with pytest.raises(LeaderboardError, match="unknown key 'titel'; known keys: "):
        load_settings(path)
    path.write_text("bootstrap_resamples = 'many'\n")
    with pytest.raises(
        LeaderboardError, match="line 1: key 'bootstrap_resamples' must be an integer"
    ):
        load_settings(path)
    path.write_text("title = \n")
    with pytest.raises(LeaderboardError, match="malformed TOML"):
        load_settings(path)


def test_repository_settings_and_results_build(tmp_path):
    """leaderboard/site.toml and leaderboard/results/ (what the Pages workflow builds)."""
    from conftest import ROOT

    settings = load_settings(ROOT / "leaderboard" / "site.toml")
    report = build_site([ROOT / "leaderboard" / "results"], tmp_path / "site", settings)
    assert "index.html" in report.pages and report.datasets


def test_build_from_a_real_run(fresh_plugins, tmp_path, monkeypatch):
    """The runner's own output (tiny real models) goes through unchanged."""
    from prh_bench.runner import RunConfig, run

    import runner_plugin

    fresh_plugins.register_plugin(runner_plugin, name="tiny")
    monkeypatch.setenv("PRH_BENCH_CACHE", str(tmp_path / "cache"))
    config = RunConfig(
        models="tiny/pixels-a,tiny/pixels-b,tiny/words-a,tiny/words-b,tiny/words-c",
        dataset="tiny-shapes",
        output=str(tmp_path / "results"),
        null_permutations=5,
        topk=3,
    )
    run(config, progress=False, log=lambda m: None)
    report = build_site(
        [tmp_path / "results"],
        tmp_path / "site",
        SiteSettings(reference_vision="tiny/pixels-*", bootstrap_resamples=200),
    )
    assert report.datasets == ["tiny-shapes"] and report.metrics == ["mutual_knn"]
    html = read(tmp_path / "site", "index.html")
    assert len(table_rows(html, "language-table")) == 3
    assert len(table_rows(html, "vision-table")) == 2


def test_cli_build_and_errors(run_cli, results_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no leaderboard/ here: defaults apply
    Path("fast.toml").write_text("bootstrap_resamples = 200\n")
    result = run_cli(
        "leaderboard",
        "build",
        str(results_dir),
        "-o",
        "out",
        "--settings",
        "fast.toml",
        "--reference",
        "*dinov2*",
        "--title",
        "T<&>",
    )
    assert result.exit_code == 0, result.output
    assert "wrote " in result.output and "pages for wit_1024 (cka, mutual_knn)" in result.output
    assert "<title>mutual_knn on wit_1024 · T&lt;&amp;&gt;</title>" in read(
        Path("out"), "index.html"
    )
    result = CliRunnerNoCatch.invoke("leaderboard", "build", "-o", "out")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "Error: leaderboard/results: no such file or folder of results"
    )
    result = CliRunnerNoCatch.invoke("leaderboard", "build", str(results_dir), "--reference", "x")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("Error: reference vision model 'x' matches no trained")


class CliRunnerNoCatch:
    """Invoke the CLI and return the result (errors become exit codes, as for a user)."""

    @staticmethod
    def invoke(*args: str):
        from click.testing import CliRunner

        from prh_bench.cli import cli

        return CliRunner().invoke(cli, list(args))


def test_serve_previews_the_site(site, tmp_path):
    server = make_server(site, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10) as r:
            assert r.status == 200 and b"Language models by alignment" in r.read()
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(LeaderboardError, match="no built site"):
        make_server(tmp_path)


def test_help_does_not_import_matplotlib():
    import subprocess

    code = (
        "import sys; from prh_bench.cli import cli;"
        "from click.testing import CliRunner;"
        "r = CliRunner().invoke(cli, ['leaderboard', 'build', '--help']); assert r.exit_code == 0;"
        "print(','.join(m for m in ('matplotlib', 'torch', 'jinja2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_results_collection_merges_runs_and_selects(tmp_path):
    """One collection for the site and load_results: later runs win per pair, per (dataset, N)."""
    from prh_bench.results import Results

    old, new = make_result("20260101T000000Z-old"), make_result("20260102T000000Z-new")
    new.created = "2026-01-02T00:00:00+00:00"
    new.scores[0].value = 0.9
    other_n = make_result("20260103T000000Z-n32", n=32)
    for r in (old, new, other_n):
        write_result(r, tmp_path / r.run_id)
    results = Results.read(tmp_path)
    assert len(results.runs) == 3
    first, second = results.by_dataset()
    assert (first.dataset.n, second.dataset.n) == (32, 64)
    assert [run.run_id for _, run in second.runs] == [old.run_id, new.run_id]
    pair = (new.scores[0].model_a, new.scores[0].model_b)
    score, run = second.scores[("mutual_knn", '{"topk": 10}')][pair]
    assert score.value == 0.9 and run.run_id == new.run_id
    picked = list(results.select(dataset="wit_1024", metric="cka"))
    assert len(picked) == 3 * len(old.scores) // 2 and {s.metric for _, _, s in picked} == {"cka"}
    assert list(results.select(dataset="nope")) == []
    assert len(results.frame()) == 3 * len(old.scores)


# ---------------------------------------------------------------------------------------------
# Issue 14 (reliability round two): every value the reader accepts builds; one bad file does
# not stop the build; what the scan must not read.


def test_huge_scores_and_very_long_ids_build(tmp_path):
    from prh_bench.site.figures import LABEL_CHARS

    long_id = "org/" + "m" * 5000
    result = make_result()
    for s in result.scores:
        if s.model_a == "bigscience/bloomz-560m":
            s.model_a = long_id
    next(m for m in result.models if m.id == "bigscience/bloomz-560m").id = long_id
    for i, s in enumerate(result.scores):  # the float range's ends, and the smallest number
        s.value = [1.7e308, -1.7e308, 5e-324][i % 3]
        if s.null:
            s.null.mean = 1.7e308
    result.models[4].bpb = 1.7e308
    write_result(result, tmp_path / "r")
    build_site([tmp_path / "r"], tmp_path / "s", FAST)
    page = read(tmp_path / "s", "index.html")
    assert long_id in page  # the pages show the id whole
    heatmaps = list((tmp_path / "s" / "figures").glob("heatmap-*.svg"))
    assert heatmaps and all(long_id not in p.read_text() for p in heatmaps)  # figures cut it
    assert "m" * (LABEL_CHARS - 6) + "…" in heatmaps[0].read_text()
    data = json.loads(read(tmp_path / "s", "data/leaderboard.json"))  # standard JSON: no Infinity
    assert data["scores"] and "Infinity" not in read(tmp_path / "s", "data/leaderboard.json")


def test_a_bad_result_file_is_left_out_with_one_warning_or_fails_with_strict(
    results_dir, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    Path("fast.toml").write_text("bootstrap_resamples = 200\n")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in results_dir.rglob("*.json"):
        (mixed / f.name).write_bytes(f.read_bytes())
    (mixed / "torn.json").write_text('{"schema_version": 1, "run_id": ')
    (mixed / "nan.json").write_text(
        (mixed / next(results_dir.rglob("*.json")).name).read_text().replace("0.85", "NaN")
    )
    args = ["leaderboard", "build", str(mixed), "-o", "out", "--settings", "fast.toml"]
    result = CliRunnerNoCatch.invoke(*args)
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: left out {mixed / 'nan.json'}: model 'bigscience/bloomz-7b1', field bpb is "
        "nan (not a finite number); a result file holds only finite numbers: fix the input "
        "that produced it, or rerun",
        f"warning: left out {mixed / 'torn.json'}: not valid JSON (line 1: Expecting value)",
    ]
    assert "from 1 result file(s)" in result.output and "wrote out: 16 pages" in result.output
    strict = CliRunnerNoCatch.invoke(*args, "--strict")
    assert strict.exit_code == 1 and strict.output.count("Error: ") == 1
    assert "nan.json: model 'bigscience/bloomz-7b1', field bpb is nan" in strict.output
    assert "(--strict: no build with a bad result file)" in strict.output


def test_a_site_built_inside_the_results_folder_is_not_read_as_results(results_dir, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for f in results_dir.rglob("*.json"):
        (results / f.name).write_bytes(f.read_bytes())
    first = build_site([results], results / "site", FAST)
    second = build_site([results], results / "site", FAST)  # the site's copies are not runs
    assert first.pages == second.pages and second.skipped == []
    assert read(results / "site", "index.html").count("bigscience/bloomz-7b1") > 0


def test_a_fifo_among_the_results_does_not_hang_the_build(results_dir, tmp_path):
    import os
    import subprocess

    results = tmp_path / "results"
    results.mkdir()
    for f in results_dir.rglob("*.json"):
        (results / f.name).write_bytes(f.read_bytes())
    os.mkfifo(results / "pipe.json")
    code = (
        "import sys; from prh_bench.site import SiteSettings, build_site;"
        "r = build_site([sys.argv[1]], sys.argv[2], SiteSettings(bootstrap_resamples=200));"
        "print(len(r.pages), r.skipped)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(results), str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,  # a FIFO opened for reading would block forever
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[1:] == ["[]"]  # not even a warning: it is not a result file
