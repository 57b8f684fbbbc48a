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
# the four language models of make_result are just enough for a correlation here
FAST = SiteSettings(reference_vision="*dinov2*", bootstrap_resamples=200, correlation_min_models=4)


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
    assert re.search(r'<span class="ci">\[-?\d\.\d{3}, -?\d\.\d{3}\]</span>', rows[1])
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
    assert "has a downstream score" in html and "correlation-table" not in html
    assert "prh-bench run --downstream scores.csv" in html  # how to add some


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
    assert "from 1 result file(s)" in result.output and "wrote out: 17 pages" in result.output
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


# ---------------------------------------------------------------------------------------------
# Issue 17 (content): a site that explains itself, carries the headline, shows uncertainty,
# is honest at small numbers, links controls explicitly and keeps a history.

MAE = "vit_large_patch16_224.mae"  # the same family and size as the reference: not its control


def with_statistics(result: RunResult, replicates: int = 4) -> RunResult:
    """Give every score what a run with ``--replicates`` records: half-sample replicates (the
    language models' noise alternates in sign, so neighbours in the ranking overlap and models
    two places apart do not), an interval, an honest score and a p at the floor."""
    language = [m.id for m in result.models if m.modality == "language"]
    for s in result.scores:
        sign = (-1) ** language.index(s.model_a) if s.model_a in language else 1
        s.replicates = [s.value + sign * 0.04 * (-1) ** i for i in range(replicates)]
        s.interval = (s.value - 0.02, s.value + 0.02)
        s.honest = s.value - 0.003
        s.optimism = 0.003
        if s.null:
            s.null = NullRecord(
                permutations=20, mean=0.05, std=0.004, p_value=1 / 21, at_floor=True
            )
    result.replicates = replicates
    result.config = {**result.config, "seed": 0}
    return result


def make_rich_result() -> RunResult:
    """make_result with statistics, schema-3 metadata, a MAE ViT-L of the reference's size, a
    language model without a score against the reference and a language control."""
    result = make_result()
    models = {m.id: m for m in result.models}
    control = models[f"{REFERENCE}.random"]
    control.control_of = REFERENCE
    big = models["bigscience/bloomz-7b1"]
    big.source, big.revision = "hf:bigscience/bloomz-7b1", "0123abcd"
    big.quantisation = "GGUF Q4_K_M, dequantised to float32"
    big.notes, big.url = "instruction-tuned", "https://huggingface.co/bigscience/bloomz-7b1"
    mae = _model(MAE, "vision", 4, 304_000_000)
    lonely = _model("lonely-lm", "language", 3, 10**8, bpb=0.8)
    lm_control = _model(
        "bigscience/bloomz-560m.random", "language", 3, 10**9, tags=["random-init"], bpb=9.0
    )
    result.models += [mae, lonely, lm_control]

    def score(a: str, b: str, value: float) -> ScoreRecord:
        null = NullRecord(permutations=20, mean=0.05, std=0.004, p_value=0.05)
        return ScoreRecord(
            model_a=a,
            model_b=b,
            metric="mutual_knn",
            params={"topk": 10},
            value=value,
            best_index=(0, 0),
            matrix=[[value]],
            preprocessing={"q": 0.95},
            null=null,
        )

    language = [m.id for m in result.models if m.modality == "language" and m.id != lonely.id]
    result.scores += [score(lm, MAE, 0.07) for lm in language]
    result.scores += [score(lm_control.id, v, 0.03) for v in (REFERENCE, f"{REFERENCE}.random")]
    result.scores.append(score(lonely.id, "vit_small_patch14_dinov2.lvd142m", 0.2))
    return with_statistics(result)


@pytest.fixture(scope="module")
def rich_site(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rich")
    write_result(make_rich_result(), folder / "results")
    settings = SiteSettings(
        reference_vision="*dinov2*",
        bootstrap_resamples=200,
        reference_reason="The paper's reference; the test's largest DINOv2.",
        datasets={"wit_1024": "a test stand-in for the WIT pairs"},
    )
    build_site([folder / "results"], folder / "site", settings)
    return folder / "site"


def test_reading_panel_on_every_board(rich_site):
    slug = "wit_1024-n64-mutual_knn"
    for page in (
        "index.html",
        f"board-{slug}.html",
        f"matrix-{slug}.html",
        f"downstream-{slug}.html",
    ):
        html = read(rich_site, page)
        assert html.count('<details class="how-to-read" open>') == 1, page
    panel = (
        read(rich_site, "index.html")
        .split('class="how-to-read"', 1)[1]
        .split("</details>\n</dl>")[0]
    )
    assert "mutual nearest neighbours" in panel and "agree on" in panel  # the plain name
    assert '<details class="formula"><summary>Formula</summary>' in panel  # one click away
    assert "kNN_A(i) ∩ kNN_B(i)" in panel
    assert "0 (no neighbour in common) to 1" in panel  # the scale
    assert "The paper&#39;s reference; the test&#39;s largest DINOv2." in panel  # why this one
    assert "a test stand-in for the WIT pairs" in panel  # site.toml's description wins
    # chance = mean null of the language rows; untrained = their mean score against the control
    assert (
        'Chance level (the captions shuffled against the images): <strong class="num">0.050'
        in panel
    )
    assert "Untrained level" in panel and '<strong class="num">0.060</strong>' in panel
    assert "&lt;= 1/21</code> means none of 20 did" in panel
    html = read(rich_site, "index.html")
    alt = re.search(r'<figure class="scale">\s*<img[^>]* alt="([^"]+)"', html).group(1)
    assert alt.startswith("Scores of 5 language models against " + REFERENCE)
    assert "chance level 0.050" in alt and "untrained level 0.060" in alt
    svg = read(rich_site, f"figures/scale-{slug}.svg")
    assert "chance (shuffled captions): 0.050" in svg and "untrained (random-init control)" in svg


def test_dataset_description_comes_from_the_plugin_without_a_setting(site):
    panel = read(site, "index.html").split('class="how-to-read"', 1)[1]
    assert "the paper&#39;s 1,024 WIT image-caption pairs" in panel  # datasets_wit's summary


def test_every_page_has_one_distinct_h1(rich_site):
    titles = {}
    for page in rich_site.rglob("*.html"):
        found = re.findall(r"<h1[^>]*>(.*?)</h1>", page.read_text(encoding="utf-8"), flags=re.S)
        assert len(found) == 1, page
        titles[page.relative_to(rich_site).as_posix()] = found[0]
    assert len(set(titles.values())) == len(titles), titles
    assert titles["history.html"] == "Run history"


def test_scores_show_intervals_honest_scores_rank_ranges_and_p_at_the_floor(rich_site):
    rows = table_rows(read(rich_site, "index.html"), "language-table")
    best = rows[0]
    assert "bigscience/bloomz-7b1" in best
    assert '<strong>0.250</strong> <span class="ci">[0.230, 0.270]</span>' in best
    assert ">0.247</td>" in best  # the honest score beside the maximum
    # rank ranges from the replicates: neighbours overlap, two places apart they do not
    # (the rank range is the first secondary number: phones hide it)
    ranges = [re.findall(r'<td class="num secondary"[^>]*>([^<]*)</td>', r)[0] for r in rows]
    assert ranges[:4] == ["1-3", "1-4", "2-4", "2-4"] or ranges[0] != ranges[-1]
    assert ranges[0].startswith("1") and ranges[0] != "1"
    assert "&lt;= 1/21" in best and "0.048" not in best  # p at the floor, not a number
    vision = table_rows(read(rich_site, "index.html"), "vision-table")
    assert '<span class="ci">[' in vision[0]  # the mean's interval, from the same halves
    model = read(rich_site, "models/bigscience--bloomz-7b1.html")
    assert '0.250 <span class="ci">[0.230, 0.270]</span>' in model and "&lt;= 1/21" in model
    matrix = read(rich_site, "matrix-wit_1024-n64-mutual_knn.html")
    assert '<span class="ci">[0.230, 0.270]</span>' in matrix
    data = json.loads(read(rich_site, "data/leaderboard.json"))
    top = next(b for b in data["boards"] if b["metric"] == "mutual_knn")["language_ranking"][0]
    assert top["interval"] == [0.23, 0.27] and top["p_at_floor"] is True
    assert top["rank_range"][0] == 1 and top["honest"] == pytest.approx(0.247)
    rows = list(csv.DictReader(io.StringIO(read(rich_site, "data/scores.csv"))))
    assert {r["p_at_floor"] for r in rows if r["metric"] == "mutual_knn"} == {"True"}


def test_rank_ranges_agree_with_the_statistics_module(rich_site):
    """The board's ranges are prh_bench.stats.rank_ranges over its own rows."""
    from prh_bench.stats import format_rank, rank_ranges

    result = make_rich_result()
    ref = {
        s.model_a: s for s in result.scores if s.model_b == REFERENCE and s.metric == "mutual_knn"
    }
    expected = rank_ranges(
        {m: s.value for m, s in ref.items()}, {m: s.replicates for m, s in ref.items()}, 64
    )
    rows = table_rows(read(rich_site, "index.html"), "language-table")
    for row in rows:
        model = re.search(r'models/[^"]+\.html">([^<]+)<', row).group(1)
        assert f">{format_rank(expected[model])}</td>" in row, model


def test_headline_on_the_front_page(rich_site, site, tmp_path):
    # at the minimum (4 models with bpb, FAST's minimum 4): the fit and the finding in numbers
    html = read(site, "index.html")
    alt = re.search(r'<figure id="headline">\s*<img[^>]*alt="([^"]+)"', html).group(1)
    assert "against bits per byte for 4 language models: Pearson r = -" in alt
    assert re.search(r"r = -\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]", alt)  # with its interval
    svg = read(site, "figures/headline-wit_1024-n64-mutual_knn.svg")
    assert "least-squares fit" in svg and "untrained (random-init control): 0.060" in svg
    assert "headline" not in read(site, "board-wit_1024-n64-mutual_knn.html")  # front only
    # below the minimum (the default 5): the points with their values, no fit, and why;
    # neither the language control (a floor) nor a model without a reference score is a point
    html = read(rich_site, "index.html")
    alt = re.search(r'<figure id="headline">\s*<img[^>]*alt="([^"]+)"', html).group(1)
    assert "for 4 language models: bigscience/bloomz-7b1 0.250 at 0.85 bpb;" in alt
    assert "No fit line" in alt and "bloomz-560m.random" not in alt and "lonely" not in alt
    assert "this site shows a correlation from 5 models on" in html
    svg = read(rich_site, "figures/headline-wit_1024-n64-mutual_knn.svg")
    assert "least-squares fit" not in svg and "chance (shuffled captions): 0.050" in svg
    result = make_result()
    settings = SiteSettings(reference_vision="*dinov2*", bootstrap_resamples=200)
    # fewer than two with bpb: the explicit box, how many and how to add them
    for m in result.models:
        if m.id != "bigscience/bloomz-7b1":
            m.bpb = None
    write_result(result, tmp_path / "r1")
    build_site([tmp_path / "r1"], tmp_path / "s1", settings)
    html = read(tmp_path / "s1", "index.html")
    assert '<div id="headline" class="note headline-empty">' in html
    assert "1 of the 4 language models ranked against" in html and "prh-bench run --models" in html
    assert not list((tmp_path / "s1" / "figures").glob("headline-*"))


def test_downstream_page_is_honest_at_small_numbers(rich_site):
    html = read(rich_site, "downstream-wit_1024-n64-mutual_knn.html")
    # hellaswag: 4 trained ranked models (below 5): points with values, no fit, no interval
    section = html.split('id="ds-hellaswag"', 1)[1].split("</section>", 1)[0]
    assert "below the minimum of 5, so no fit line and no correlation" in section
    points = table_rows(section, "points-hellaswag")
    assert (
        len(points) == 4 and "0.460" in points[0] and '<span class="ci">[0.230, 0.270]' in points[0]
    )
    dropped = section.split('class="dropped"', 1)[1]
    assert "lonely-lm</a>: no mutual_knn score against " + REFERENCE + ", no hellaswag" in dropped
    assert 'bloomz-560m.random</a> <span class="badge">control</span>: a random-init' in dropped
    svg = read(rich_site, "figures/scatter-wit_1024-n64-mutual_knn-hellaswag.svg")
    assert "least-squares fit" not in svg and "too few models" in svg
    # bpb: 4 ranked plus lonely-lm's value listed with the reason it is out
    section = html.split('id="ds-bpb"', 1)[1].split("</section>", 1)[0]
    assert "(its bpb is 0.800)" in section
    assert "correlation-table" not in html  # no correlation at all below the minimum
    data = json.loads(read(rich_site, "data/leaderboard.json"))
    assert all(not b["correlations"] for b in data["boards"])


def test_controls_are_linked_explicitly_and_model_pages_say_where_weights_come_from(rich_site):
    rows = {r: r for r in table_rows(read(rich_site, "index.html"), "vision-table")}
    mae = next(r for r in rows if MAE in r)
    control_cell = re.findall(r'<td class="num floor secondary"[^>]*>([^<]*)<', mae)[-1]
    assert control_cell == "—"  # same family and size as the reference, yet not its control
    ref = next(r for r in rows if f"{REFERENCE}.html" in r)
    # the mean over the language models (the language control's 0.03 among them)
    assert re.findall(r'<td class="num floor secondary"[^>]*>([^<]*)<', ref)[-1] == "0.054"
    page = read(rich_site, "models/bigscience--bloomz-7b1.html")
    for fact in (
        "<dt>Weights from</dt><dd>hf:bigscience/bloomz-7b1</dd>",
        "<dt>Revision</dt><dd>0123abcd</dd>",
        "<dt>Quantisation</dt><dd>GGUF Q4_K_M, dequantised to float32</dd>",
        "<dt>Notes</dt><dd>instruction-tuned</dd>",
        'href="https://huggingface.co/bigscience/bloomz-7b1"',
    ):
        assert fact in page, fact
    control = read(rich_site, f"models/{slugify(REFERENCE + '.random')}.html")
    assert f'<dt>Control of</dt><dd><a href="../models/{slugify(REFERENCE)}.html">' in control
    reference = read(rich_site, f"models/{slugify(REFERENCE)}.html")
    assert "<dt>Random-init control</dt>" in reference
    assert "<dt>Random-init control</dt>" not in read(rich_site, f"models/{slugify(MAE)}.html")
    models = read(rich_site, "models.html")
    assert '<td class="secondary">GGUF Q4_K_M, dequantised to float32</td>' in models


def test_control_for_uses_control_of_and_never_family_and_size():
    from prh_bench.results import Results
    from prh_bench.site.model import control_for, make_datasets

    result = make_rich_result()
    [ds] = make_datasets(Results([(Path("x.json"), result)]))
    assert control_for(ds, ds.models[REFERENCE]).id == f"{REFERENCE}.random"
    assert control_for(ds, ds.models[MAE]) is None
    # an explicit control_of wins over the id: the control belongs to the model it names
    ds.models[f"{REFERENCE}.random"].control_of = MAE
    assert control_for(ds, ds.models[REFERENCE]) is None
    assert control_for(ds, ds.models[MAE]).id == f"{REFERENCE}.random"


def test_history_page_shows_what_changed_between_the_latest_two_runs(tmp_path):
    old = make_result("20260101T000000Z-old")
    new = make_result("20260102T000000Z-new")
    new.created = "2026-01-02T00:00:00+00:00"
    new.git_commit = "fedcba9876543210fedcba9876543210fedcba98"
    moved = next(s for s in new.scores if s.model_a == "bigscience/bloomz-7b1")
    moved.value += 0.05
    extra = _model("vit_giant_patch14_dinov2.lvd142m", "vision", 4, 10**9)
    new.models.append(extra)
    new.scores.append(
        ScoreRecord(
            model_a="bigscience/bloomz-7b1",
            model_b=extra.id,
            metric="mutual_knn",
            params={"topk": 10},
            value=0.3,
            best_index=(0, 0),
            matrix=[[0.3]],
            preprocessing={"q": 0.95},
        )
    )
    for r in (old, new):
        write_result(r, tmp_path / "r" / r.run_id)
    build_site([tmp_path / "r"], tmp_path / "s", FAST)
    html = read(tmp_path / "s", "history.html")
    runs = table_rows(html, "history-wit_1024-n64")
    assert "20260102T000000Z-new" in runs[0] and "fedcba987654" in runs[0]  # newest first
    assert "20260101T000000Z-old" in runs[1]
    assert "Models added: vit_giant_patch14_dinov2.lvd142m." in html
    assert "Models removed: none." in html
    assert "Scores that moved by more than 0.01: 1 of the 24 both runs have." in html
    changes = table_rows(html, "changes-wit_1024-n64")
    assert len(changes) == 2
    assert "+0.050" in changes[0] and "moved" in changes[0] and REFERENCE in changes[0]
    assert "new" in changes[1] and "vit_giant" in changes[1]
    # both runs stay published
    assert (tmp_path / "s/data/runs/wit_1024-n64/20260101T000000Z-old.json").exists()
    assert 'href="history.html#wit_1024-n64"' in read(tmp_path / "s", "index.html")


def test_history_page_says_when_runs_cannot_be_compared(tmp_path):
    old = make_result("20260101T000000Z-old")
    new = make_result("20260102T000000Z-new")
    new.created = "2026-01-02T00:00:00+00:00"
    new.dataset.content_hash = "cd" * 32  # other samples, same id and N
    for r in (old, new):
        write_result(r, tmp_path / "r" / r.run_id)
    build_site([tmp_path / "r"], tmp_path / "s", FAST)
    html = read(tmp_path / "s", "history.html")
    assert "Scores not compared: the baseline is on dataset wit_1024" in html


def test_committed_results_show_the_headline_and_every_bpb_point(tmp_path):
    from conftest import ROOT

    settings = load_settings(ROOT / "leaderboard" / "site.toml")
    build_site([ROOT / "leaderboard" / "results"], tmp_path / "site", settings)
    index = read(tmp_path / "site", "index.html")
    alt = re.search(r'<figure id="headline">\s*<img[^>]*alt="([^"]+)"', index).group(1)
    causal = ("SmolLM2-135M-Instruct", "gemma-3-270m", "Qwen2.5-Coder-0.5B-Instruct")
    assert all(m in alt for m in causal) and "No fit line" in alt  # 4 models: below the minimum
    assert "EfficientNet-Lite2" in index and "stands in" in index  # why this reference
    assert "not the paper&#39;s Wikipedia photos" in index
    html = read(tmp_path / "site", "downstream-openclipart-1024-n1024-mutual_knn.html")
    points = table_rows(html, "points-bpb")
    # the published zoo run's four causal LMs, each point with its bpb, best aligned first
    assert len(points) == 4 and "gemma-3-270m" in points[0] and "3.276" in points[0]
    assert [any(v in row for row in points) for v in ("2.970", "2.395", "2.254")] == [True] * 3
    assert "all-MiniLM-L6-v2</a>: no bpb value" in html
    assert "correlation-table" not in html


def test_site_settings_for_the_content(tmp_path):
    path = tmp_path / "site.toml"
    path.write_text(
        "[site]\ncorrelation_min_models = 6\nhistory_tolerance = 0\n"
        'reference_reason = "why"\n[site.datasets]\n"wit_1024" = "photos"\n'
    )
    settings = load_settings(path)
    assert settings.correlation_min_models == 6 and settings.history_tolerance == 0.0
    assert settings.datasets == {"wit_1024": "photos"} and settings.reference_reason == "why"
    path.write_text("correlation_min_models = 2\n")
    with pytest.raises(LeaderboardError, match="correlation_min_models must be >= 3"):
        load_settings(path)
    path.write_text("[datasets]\nwit_1024 = 3\n")
    with pytest.raises(LeaderboardError, match=r"datasets\.wit_1024 must be a string"):
        load_settings(path)


def test_every_built_in_metric_has_plain_words_and_a_formula():
    from prh_bench.registry import get_registry
    from prh_bench.site.explain import METRICS, metric_text

    names = {entry.id for entry in get_registry("metric")}
    assert names and names <= set(METRICS), names - set(METRICS)
    for name in names:
        text = metric_text(name)
        assert text.plain != name and text.meaning and text.formula and text.scale
    assert "unknown" not in metric_text("mutual_knn").formula
    assert metric_text("no-such-metric").meaning.startswith("a metric from a plugin")
