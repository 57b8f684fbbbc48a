"""The leaderboard site in a real browser: Debian's chromium driven by Playwright.

The site is built from test results, served on 127.0.0.1, and every page is loaded: no console
errors, no failed requests, figures render, tables sort by clicking a header, links lead where
they say, the tables read without JavaScript, and a hostile model name stays inert text.

The layout is checked at desktop and phone width (1440 and 390 px) on the published results
and on a large synthetic set (15 language, 12 vision models): no number wraps, the page never
scrolls sideways, every text has 4.5:1 contrast, every figure has alt text that states what it
shows and text of at least 10 px, the heatmap and its table share one colour scale.

Only the browser is looked for: without chromium these tests skip with that reason; CI installs
it (apt-get install chromium). Playwright drives the installed binary; nothing is downloaded.
Screenshots go to ``$PRH_BENCH_SCREENSHOTS`` (default: a folder under pytest's temp dir); the
folder is printed at the end of the session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from test_leaderboard import FAST, HOSTILE, REFERENCE, _model, make_result

from prh_bench.results import (
    DatasetRecord,
    Downstream,
    NullRecord,
    PluginRecord,
    RunResult,
    ScoreRecord,
    write_result,
)
from prh_bench.site import build_site, load_settings, make_server
from prh_bench.site.figures import HEAT_COLOURS
from prh_bench.storage import slug as slugify


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = _find_chromium()
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (apt-get install chromium); the browser tests need it",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("playwright") is None,
        reason="playwright is not installed (pip install -e '.[test]'); the browser tests need it",
    ),
]
# a closed network makes chromium slow unless its background services are off
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-extensions",
]
SLUG = "wit_1024-n64-mutual_knn"


def _serve(site: Path) -> Iterator[str]:
    server = make_server(site, port=0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    results = tmp_path_factory.mktemp("results")
    write_result(make_result(), results)
    site = tmp_path_factory.mktemp("site") / "site"
    build_site([results], site, FAST)
    yield from _serve(site)


@pytest.fixture(scope="module")
def hostile_url(tmp_path_factory) -> Iterator[str]:
    results = tmp_path_factory.mktemp("hostile-results")
    write_result(make_result(hostile=True), results)
    site = tmp_path_factory.mktemp("hostile-site") / "site"
    build_site([results], site, FAST)
    yield from _serve(site)


@pytest.fixture(scope="session")
def screenshots(request, tmp_path_factory) -> Path:
    folder = Path(
        os.environ.get("PRH_BENCH_SCREENSHOTS") or tmp_path_factory.getbasetemp() / "screenshots"
    ).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        request.addfinalizer(lambda: reporter.write_line(f"site screenshots: {folder}"))
    print(f"site screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # Playwright gives every launch a fresh temporary profile (--user-data-dir)
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Watched:
    """A page whose console errors, uncaught exceptions, failed requests and dialogs are kept."""

    def __init__(self, browser, javascript: bool = True):
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, java_script_enabled=javascript
        )
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        self.page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        # a request cut off by leaving the page is no fault (a missing file shows as HTTP 404)
        self.page.on(
            "requestfailed",
            lambda r: (
                self.problems.append(f"failed: {r.url} ({r.failure})")
                if "ERR_ABORTED" not in (r.failure or "")
                else None
            ),
        )
        self.page.on(
            "response",
            lambda r: (
                self.problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None
            ),
        )

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        self.page.on("dialog", on_dialog)

    def goto(self, url: str) -> None:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.ok, url

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser) -> Iterator[Watched]:
    w = Watched(browser)
    yield w
    w.close()


def _internal_links(page, base: str) -> set[str]:
    hrefs = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    out = set()
    for href in hrefs:
        url = urljoin(page.url, href).split("#", 1)[0]
        if url.startswith(base) and url.endswith(".html"):
            out.add(url)
    return out


def _figures_rendered(page) -> list[str]:
    """The src of every <img> that did not load or has no size."""
    return page.eval_on_selector_all(
        "img",
        "els => els.filter(e => !e.complete || e.naturalWidth === 0 || e.clientWidth < 100)"
        ".map(e => e.getAttribute('src'))",
    )


def _crawl(watched: Watched, base: str) -> set[str]:
    """Load every page reachable from index.html; each must render its footer and figures."""
    seen: set[str] = set()
    todo = [base + "index.html"]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        watched.goto(url)
        assert watched.page.title(), url
        assert watched.page.locator("footer").inner_text().startswith("Built with prh-bench")
        assert _figures_rendered(watched.page) == [], url
        todo.extend(_internal_links(watched.page, base) - seen)
    return seen


def test_every_page_loads_clean_and_figures_render(watched, base_url, screenshots):
    seen = _crawl(watched, base_url)
    assert watched.problems == []
    paths = {urlsplit(u).path.lstrip("/") for u in seen}
    assert {
        "index.html",
        f"matrix-{SLUG}.html",
        f"downstream-{SLUG}.html",
        "models.html",
        "data.html",
        f"models/{slugify(REFERENCE)}.html",
    } <= paths
    assert len([p for p in paths if p.startswith("models/")]) == 7  # every model has a page
    # the record: one screenshot per kind of page
    for name, page in (
        ("index", "index.html"),
        ("matrix", f"matrix-{SLUG}.html"),
        ("downstream", f"downstream-{SLUG}.html"),
        ("model", "models/bigscience--bloomz-7b1.html"),
        ("data", "data.html"),
    ):
        watched.goto(base_url + page)
        watched.page.screenshot(path=str(screenshots / f"site-{name}.png"), full_page=True)
    assert watched.problems == []


def test_figures_are_svg_drawn_with_titles(watched, base_url):
    watched.goto(base_url + f"downstream-{SLUG}.html")
    images = watched.page.locator("figure[id^=fig-] img")  # the scatters (not the scale figure)
    assert images.count() == 2
    for i in range(2):
        img = images.nth(i)
        assert img.get_attribute("src").endswith(".svg")
        assert img.evaluate("e => e.naturalWidth") > 200
    # the alt texts state the finding: alignment rises with quality, the best model's score
    bpb = watched.page.locator("#fig-bpb img").get_attribute("alt")
    assert bpb.startswith("Scatter of 4 language models: mutual_knn alignment to " + REFERENCE)
    assert "rises as bpb falls (better models), Spearman rho -1.00" in bpb
    assert bpb.endswith("most aligned bigscience/bloomz-7b1 at 0.250 (bpb 0.85).")
    hellaswag = watched.page.locator("#fig-hellaswag img").get_attribute("alt")
    assert "rises as hellaswag rises, Spearman rho 1.00" in hellaswag
    # the SVG itself: its title and axis labels are text
    svg = watched.page.request.get(base_url + f"figures/scatter-{SLUG}-bpb.svg")
    assert svg.ok and svg.headers["content-type"] == "image/svg+xml"
    text = svg.text()
    assert "Pearson r" in text and "bpb (lower is better)" in text
    assert "alignment (mutual_knn)" in text and "least-squares fit" in text
    assert watched.problems == []


def _column(page, table: str, header: str) -> list[str]:
    """The texts of the column headed ``header`` (found by its text, so new columns do not
    shift it), each without its interval."""
    index = _header(page, table, header)
    return page.eval_on_selector_all(
        f"#{table} tbody tr",
        """(rows, i) => rows.map(r => {
             const cell = r.cells[i].cloneNode(true);
             cell.querySelectorAll(".ci").forEach(ci => ci.remove());
             return cell.textContent.trim();
           })""",
        index,
    )


def _header(page, table: str, header: str) -> int:
    texts = page.eval_on_selector_all(
        f"#{table} thead th", "hs => hs.map(h => h.textContent.trim())"
    )
    assert header in texts, f"no column {header!r} in #{table}: {texts}"
    return texts.index(header)


def test_clicking_a_header_sorts_the_table(watched, base_url, screenshots):
    watched.goto(base_url + "index.html")
    page = watched.page
    score = "Score [95% interval]"
    scores = [float(x) for x in _column(page, "language-table", score)]
    assert len(scores) == 4 and scores == sorted(
        scores, reverse=True
    )  # server-rendered: best first
    header = page.locator("#language-table thead th").nth(_header(page, "language-table", score))
    header.locator("button").click()  # a sorted numeric column flips
    assert header.get_attribute("aria-sort") == "ascending"
    assert [float(x) for x in _column(page, "language-table", score)] == sorted(scores)
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    assert [float(x) for x in _column(page, "language-table", score)] == sorted(
        scores, reverse=True
    )
    # a text column: A to Z on the first click
    name = page.locator("#vision-table thead th").nth(_header(page, "vision-table", "Model"))
    name.locator("button").click()
    models = _column(page, "vision-table", "Model")
    assert models == sorted(models, key=str.lower) and name.get_attribute("aria-sort")
    # bpb: a numeric column, high to low on the first click
    bpb_header = _header(page, "language-table", "bpb")
    page.locator("#language-table thead th").nth(bpb_header).locator("button").click()
    bpb = [float(x) for x in _column(page, "language-table", "bpb")]
    assert bpb == sorted(bpb, reverse=True)
    page.screenshot(path=str(screenshots / "site-index-sorted-by-bpb.png"), full_page=True)
    assert watched.problems == []


def test_links_lead_where_they_say(watched, base_url):
    page = watched.page
    watched.goto(base_url + "index.html")
    page.locator("#language-table a", has_text="bigscience/bloomz-3b").click()
    page.wait_for_url("**/models/bigscience--bloomz-3b.html")
    assert page.locator("h1").inner_text() == "bigscience/bloomz-3b"
    hub = page.locator("dl.facts a")
    assert hub.get_attribute("href") == "https://huggingface.co/bigscience/bloomz-3b"
    rank = page.locator(f"a[href='../board-{SLUG}.html']")  # its rank, back to the board
    assert rank.inner_text() == "2 of 4"
    rank.click()
    page.wait_for_url(f"**/board-{SLUG}.html")
    page.locator("nav.switch a", has_text="cka").click()  # switch metric
    page.wait_for_url("**/board-wit_1024-n64-cka.html")
    assert page.locator("nav.switch a.current").inner_text() == "cka"
    page.locator("nav.tabs a", has_text="Alignment matrix").click()
    page.wait_for_url("**/matrix-wit_1024-n64-cka.html")
    assert page.locator("#matrix-table tbody tr").count() == 4
    page.locator("header nav a", has_text="Data").click()
    page.wait_for_url("**/data.html")
    with page.expect_download() as download:
        page.locator("a", has_text="scores.csv").click()
    assert download.value.suggested_filename == "scores.csv"
    assert watched.problems == []


def test_tables_read_without_javascript(browser, base_url, screenshots):
    plain = Watched(browser, javascript=False)
    try:
        plain.goto(base_url + "index.html")
        page = plain.page
        page.screenshot(path=str(screenshots / "site-index-no-javascript.png"), full_page=True)
        assert page.locator("#language-table tbody tr").count() == 4
        assert page.locator("#vision-table tbody tr").count() == 3
        assert page.locator("th button.sort").count() == 0  # sorting is the script's addition
        assert _column(page, "language-table", "Model")[0] == "bigscience/bloomz-7b1"
        page.locator("nav.switch a", has_text="cka").click()
        page.wait_for_url("**/board-wit_1024-n64-cka.html")  # switching needs no script
        plain.goto(base_url + f"matrix-{SLUG}.html")
        assert _figures_rendered(page) == []
        assert plain.problems == []
    finally:
        plain.close()


def test_hostile_model_name_is_inert(watched, hostile_url, screenshots):
    page = watched.page
    slug = slugify(HOSTILE)
    for path in (
        "index.html",
        f"matrix-{SLUG}.html",
        f"downstream-{SLUG}.html",
        "models.html",
        f"models/{slug}.html",
    ):
        watched.goto(hostile_url + path)
        assert page.locator("#pwned-family").count() == 0, path  # no injected element
        assert page.locator("a[href^='javascript:' i]").count() == 0, path
        assert page.locator("body script").count() == 0, path  # only the head's sort.js
    assert page.locator("h1").inner_text() == HOSTILE  # shown as the text it is
    assert page.locator("td", has_text="javascript:alert(3)").count() == 1  # text, not a link
    assert page.locator("td a", has_text="javascript:").count() == 0
    assert page.locator("dd", has_text="javascript:alert(2)").count() == 1
    page.screenshot(path=str(screenshots / "site-hostile-model.png"), full_page=True)
    watched.goto(hostile_url + "index.html")
    row = page.locator("#language-table tbody tr", has_text="<script>")
    assert row.count() == 1
    row.locator("a").first.click()
    page.wait_for_url(f"**/models/{slug}.html")
    assert watched.dialogs == [] and watched.problems == []


def test_published_results_site(watched, published, screenshots):
    """The site of leaderboard/ itself (what the Pages workflow deploys) loads clean."""
    base, _ = published
    seen = _crawl(watched, base)
    assert len(seen) >= 5 and watched.problems == []
    watched.goto(base + "index.html")
    assert watched.page.locator("#language-table tbody tr").count() >= 1
    watched.page.screenshot(path=str(screenshots / "site-published-index.png"), full_page=True)


# ---------------------------------------------------------------------------------------------
# Issue 17: a layout that holds at 1440 and 390 px, on the published results and on a large set.

WIDTHS = (1440, 390)
# 15 language models in six families (org prefixes, long ids; bpb and HellaSwag for all but the
# encoder), 12 vision models with two random-init controls; the best models cluster, so their
# scatter labels would collide
LARGE_LANGUAGE = [
    ("bigscience/bloomz-560m", "bloom", 1.12),
    ("bigscience/bloomz-1b7", "bloom", 1.01),
    ("bigscience/bloomz-3b", "bloom", 0.95),
    ("bigscience/bloomz-7b1", "bloom", 0.88),
    ("meta-llama/Llama-3.2-1B", "llama", 0.86),
    ("meta-llama/Llama-3.2-3B", "llama", 0.79),
    ("meta-llama/Meta-Llama-3.1-8B-Instruct", "llama", 0.72),
    ("Qwen/Qwen2.5-0.5B", "qwen", 0.93),
    ("Qwen/Qwen2.5-1.5B", "qwen", 0.84),
    ("Qwen/Qwen2.5-Coder-7B-Instruct-GGUF-q4_k_m", "qwen", 0.73),
    ("google/gemma-3-270m", "gemma", 1.05),
    ("google/gemma-2-2b", "gemma", 0.81),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm", 1.15),
    ("HuggingFaceTB/SmolLM2-360M", "smollm", 1.06),
    ("sentence-transformers/all-MiniLM-L6-v2", "encoder", None),
]
LARGE_VISION = [  # the reference first: the largest trained model
    REFERENCE,
    "vit_giant_patch14_dinov2.lvd142m.small_head",
    "vit_base_patch14_dinov2.lvd142m",
    "vit_small_patch14_dinov2.lvd142m",
    "convnext_base.fb_in22k_ft_in1k",
    "mae_vit_large_patch16_224",
    "clip-vit-base-patch32",
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    f"{REFERENCE}.random",
    "efficientnet_lite2.random",
]


def make_large_result() -> RunResult:
    """Alignment rises as bpb falls, a little noise; controls sit near the 0.04 floor."""
    import random

    rng = random.Random(17)
    vision = [
        _model(
            v,
            "vision",
            24,
            10**9 // (i + 1),
            family="timm-vit" if "vit" in v else "timm-cnn",
            tags=["random-init", "control"] if v.endswith(".random") else [],
        )
        for i, v in enumerate(LARGE_VISION)
    ]
    language = [
        _model(
            name,
            "language",
            24,
            10**8 * (i + 2),
            family=family,
            bpb=bpb,
            downstream={}
            if bpb is None
            else {
                "hellaswag": Downstream(
                    value=round(1.3 - bpb + rng.uniform(-0.05, 0.05), 3),
                    source="https://example.org/lb",
                )
            },
        )
        for i, (name, family, bpb) in enumerate(LARGE_LANGUAGE)
    ]
    scores = []
    for lm, (_, _, bpb) in zip(language, LARGE_LANGUAGE, strict=True):
        for vi, vm in enumerate(vision):
            if vm.id.endswith(".random"):
                value = 0.04
            else:
                value = 0.05 + 0.3 * (1.2 - (bpb or 1.1)) * (1 - vi / 20)
            value = round(value + rng.uniform(-0.005, 0.005), 4)
            scores.append(
                ScoreRecord(
                    model_a=lm.id,
                    model_b=vm.id,
                    metric="mutual_knn",
                    params={"topk": 10},
                    value=value,
                    best_index=(11, 7),
                    matrix=[[value]],
                    preprocessing={"q": 0.95},
                    null=NullRecord(permutations=99, mean=0.012, std=0.002, p_value=0.01),
                )
            )
    return RunResult(
        run_id="20260301T000000Z-large1",
        created="2026-03-01T00:00:00+00:00",
        prh_bench_version="0.1.0",
        git_commit="0123456789abcdef0123456789abcdef01234567",
        environment={"python": "3.11"},
        plugins=[PluginRecord(name="tests")],
        config={"topk": 10},
        dataset=DatasetRecord(id="wit_1024", revision="1", content_hash="cd" * 32, n=1024),
        models=vision + language,
        scores=scores,
    )


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    results = tmp_path_factory.mktemp("large-results")
    write_result(make_large_result(), results)
    site = tmp_path_factory.mktemp("large-site") / "site"
    build_site([results], site, FAST)
    for url in _serve(site):
        yield url, site


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    from conftest import ROOT

    site = tmp_path_factory.mktemp("published-site") / "site"
    settings = load_settings(ROOT / "leaderboard" / "site.toml")
    build_site([ROOT / "leaderboard" / "results"], site, settings)
    for url in _serve(site):
        yield url, site


def _layout_pages(site: Path) -> list[str]:
    """Every page but most model pages (they share one template): the longest id's, a
    control's, and the first."""
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html"))
    models = [p for p in pages if p.startswith("models/")]
    keep = {models[0], max(models, key=len)} | {p for p in models if "random" in p}
    return [p for p in pages if not p.startswith("models/")] + sorted(keep)


# What is wrong with the layout of the loaded page, as lines (none: it holds). Contrast is WCAG
# 2's (relative luminance), against the backgrounds composited from the root down.
LAYOUT_PROBLEMS = """
async () => {
  const problems = [];
  const width = window.innerWidth, wide = document.scrollingElement.scrollWidth;
  if (wide > width) problems.push(`the page is ${wide} px wide in a ${width} px window`);

  const lines = node => {
    const range = document.createRange();
    range.selectNodeContents(node);
    return new Set(Array.from(range.getClientRects(), r => Math.round(r.top))).size;
  };
  const texts = el => {
    const out = [], walk = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) if (n.textContent.trim()) out.push(n);
    return out;
  };
  for (const td of document.querySelectorAll("td.num"))
    for (const node of texts(td))
      if (lines(node) > 1) problems.push(`number wraps: "${node.textContent.trim()}"`);

  const rgba = c => {
    const p = c.match(/[\\d.]+/g).map(Number);
    return [p[0], p[1], p[2], p.length > 3 ? p[3] : 1];
  };
  const over = (top, under) => [0, 1, 2].map(i => top[i] * top[3] + under[i] * (1 - top[3]));
  const luminance = rgb => {
    const f = v => (v /= 255) <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    return 0.2126 * f(rgb[0]) + 0.7152 * f(rgb[1]) + 0.0722 * f(rgb[2]);
  };
  const backdrop = el => {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.unshift(e);
    let bg = [255, 255, 255];
    for (const e of chain) bg = over(rgba(getComputedStyle(e).backgroundColor), bg);
    return bg;
  };
  for (const el of document.body.querySelectorAll("*")) {
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length || el.closest("svg")) continue;
    const style = getComputedStyle(el);
    if (style.visibility !== "visible") continue;
    const bg = backdrop(el), fg = over(rgba(style.color), bg);
    const [hi, lo] = [luminance(fg), luminance(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    if (ratio < 4.5)
      problems.push(`contrast ${ratio.toFixed(2)}:1 for "${el.textContent.trim().slice(0, 40)}"`
        + ` (${style.color} on rgb(${bg.map(Math.round)}))`);
  }

  for (const img of document.querySelectorAll("img, svg[role=img]")) {
    const alt = img.tagName === "IMG" ? img.getAttribute("alt")
      : img.getAttribute("aria-label") || (img.querySelector("title") || {}).textContent;
    const words = (alt || "").trim().split(/\\s+/).filter(Boolean);
    if (words.length < 8 || !/\\d/.test(alt))
      problems.push(`alt text does not say what the figure shows: "${alt}"`);
    if (img.tagName !== "IMG" || !img.currentSrc.endsWith(".svg")) continue;
    // the smallest text of an SVG figure, in CSS pixels as shown
    const svg = new DOMParser().parseFromString(
      await (await fetch(img.currentSrc)).text(), "image/svg+xml").documentElement;
    const box = svg.getAttribute("viewBox").split(/[ ,]+/).map(Number);
    const sizes = Array.from(svg.querySelectorAll("text"), t =>
      parseFloat(((t.getAttribute("style") || "").match(/font-size:\\s*([\\d.]+)/) || [])[1]));
    const smallest = Math.min(...sizes.filter(x => x > 0)) * img.clientWidth / box[2];
    if (smallest < 10) problems.push(`${img.getAttribute("src")}: text of ${smallest.toFixed(1)} px`);
  }
  return problems;
}
"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", ["published", "large"])
def test_layout_holds(request, browser, which, width, screenshots):
    """No number wraps, no sideways scrolling, 4.5:1 contrast, figures described and readable."""
    base, site = request.getfixturevalue(which)
    context = browser.new_context(viewport={"width": width, "height": 900})
    context.set_default_timeout(15_000)
    page = context.new_page()
    problems = []
    try:
        for path in _layout_pages(site):
            page.goto(base + path, wait_until="load")
            problems += [f"{path} at {width} px: {p}" for p in page.evaluate(LAYOUT_PROBLEMS)]
            if path.startswith(("index", "matrix", "downstream")):
                name = f"site-{which}-{path.split('-', 1)[0].removesuffix('.html')}-{width}.png"
                page.screenshot(path=str(screenshots / name), full_page=True)
    finally:
        context.close()
    assert problems == []


@pytest.mark.parametrize("width", WIDTHS)
def test_phone_hides_secondary_columns_and_keeps_the_heatmap(browser, large, width):
    base, _ = large
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(base + "index.html")
        cells = page.eval_on_selector_all(
            "#language-table th, #language-table td",
            "cs => cs.map(c => [c.classList.contains('secondary'), c.offsetWidth > 0])",
        )
        assert any(secondary for secondary, _ in cells)  # family, params, floors, layers, bpb
        # phones: the secondary columns hidden, every other one shown; desktop: all shown
        assert all(shown == (width > 640 or not secondary) for secondary, shown in cells)
        headers = page.eval_on_selector_all(
            "#language-table thead th", "hs => hs.filter(h => h.offsetWidth).map(h => h.innerText)"
        )
        essential = {"#", "Model", "Score [95% interval]", "Honest"}
        assert essential <= {h.strip("\xa0▲▼ ") for h in headers}
        if width == 390:  # the table fits the phone: nothing of it is scrolled out of sight
            assert page.evaluate(
                "() => { const s = document.querySelector('#language-table').parentElement;"
                " return s.scrollWidth <= s.clientWidth; }"
            )
        # a model name wraps at its hyphens, never a letter per line
        name = page.locator("#language-table a", has_text="Qwen2.5-Coder-7B-Instruct")
        lines = name.evaluate("a => a.getClientRects().length")
        assert 1 <= lines <= 3 and name.evaluate("a => a.offsetWidth") > 90
        page.goto(base + "matrix-wit_1024-n1024-mutual_knn.html")
        heatmap = page.locator("figure img[src*='figures/heatmap-']")
        assert heatmap.evaluate("e => e.complete && e.clientWidth") >= min(width - 40, 500)
    finally:
        context.close()


def test_heatmap_and_table_share_one_colour_scale(watched, large):
    """The table's cells take the heatmap's colours, cell for cell, dark = most aligned."""
    import re

    base, site = large
    watched.goto(base + "matrix-wit_1024-n1024-mutual_knn.html")
    cells = watched.page.eval_on_selector_all(
        "#matrix-table tbody td",
        "tds => tds.map(td => [td.className.match(/h(\\d)/)[1], td.textContent,"
        " getComputedStyle(td).backgroundColor])",
    )
    assert len(cells) == 15 * 12

    def rgb(hex_colour: str) -> str:
        r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return f"rgb({r}, {g}, {b})"

    assert all(colour == rgb(HEAT_COLOURS[int(b)]) for b, _, colour in cells)
    values = [float(text) for _, text, _ in cells]
    assert cells[values.index(max(values))][0] == "9" and cells[values.index(min(values))][0] == "0"
    svg = (site / "figures" / "heatmap-wit_1024-n1024-mutual_knn.svg").read_text()
    mesh = svg.split('<g id="QuadMesh_1">', 1)[1].split("</g>", 1)[0]
    fills = re.findall(r"fill: (#[0-9a-f]{6})", mesh)  # row by row, best language model first
    assert fills == [HEAT_COLOURS[int(b)] for b, _, _ in cells]
    assert watched.problems == []


def test_skip_link_and_landmarks(watched, large):
    base, site = large
    page = watched.page
    for path in _layout_pages(site):
        watched.goto(base + path)
        assert page.locator("body > a.skip[href='#main']").count() == 1, path
        assert page.locator("main#main").count() == 1, path
        assert page.locator("header nav[aria-label], footer").count() == 2, path
        assert page.locator("h1").count() == 1, path
    watched.goto(base + "index.html")
    page.keyboard.press("Tab")  # the first stop: the skip link, now on screen
    skip = page.locator("a.skip")
    assert skip.evaluate("a => a === document.activeElement")
    box = skip.bounding_box()
    assert box is not None and box["y"] >= 0
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    assert page.evaluate("() => document.activeElement.id") == "main"
    assert watched.problems == []


# The contract with the site's content (issue 17 items 1 and 2): each page's own <h1> and
# the front page's headline.
def test_every_page_has_its_own_h1(watched, large):
    base, site = large
    seen: dict[str, str] = {}
    for path in sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")):
        watched.goto(base + path)
        h1 = watched.page.locator("h1")
        assert h1.count() == 1, path
        text = " ".join(h1.inner_text().split())
        assert text not in seen, f"{path} has the <h1> of {seen.get(text)}: {text}"
        seen[text] = path


@pytest.mark.parametrize("width", WIDTHS)
def test_front_page_carries_the_headline(browser, published, width):
    base, _ = published
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        page.goto(base + "index.html")
        headline = page.locator("#headline")
        assert headline.count() == 1 and headline.is_visible()
        if headline.evaluate("e => e.tagName") == "FIGURE":
            image = headline.locator("img, svg[role=img]").first
            alt = image.get_attribute("alt") or image.get_attribute("aria-label") or ""
            assert len(alt.split()) >= 8 and any(c.isdigit() for c in alt)
        else:  # too few models have bpb: a box saying how many and how to add them
            assert "headline-empty" in headline.get_attribute("class")
            assert any(c.isdigit() for c in headline.inner_text())
    finally:
        context.close()
