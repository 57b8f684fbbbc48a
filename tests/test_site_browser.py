"""The leaderboard site in a real browser: Debian's chromium driven by Playwright.

The site is built from test results, served on 127.0.0.1, and every page is loaded: no console
errors, no failed requests, figures render, tables sort by clicking a header, links lead where
they say, the tables read without JavaScript, and a hostile model name stays inert text.

Only the browser is looked for: without chromium these tests skip with that reason; CI installs
it (apt-get install chromium). Playwright drives the installed binary; nothing is downloaded.
Screenshots go to ``$PRH_BENCH_SCREENSHOTS`` (default: a folder under pytest's temp dir); the
folder is printed at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from test_leaderboard import FAST, HOSTILE, REFERENCE, make_result

from prh_bench.results import write_result
from prh_bench.site import build_site, make_server
from prh_bench.storage import slug as slugify


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


CHROMIUM = _find_chromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install chromium); the browser tests need it",
)
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
    images = watched.page.locator("figure img")
    assert images.count() == 2
    for i in range(2):
        img = images.nth(i)
        assert img.get_attribute("src").endswith(".svg")
        assert img.evaluate("e => e.naturalWidth") > 200
        assert "Scatter plot" in img.get_attribute("alt")
    # the SVG itself: its title and axis labels are text
    svg = watched.page.request.get(base_url + f"figures/scatter-{SLUG}-bpb.svg")
    assert svg.ok and svg.headers["content-type"] == "image/svg+xml"
    text = svg.text()
    assert "Pearson r" in text and "bpb (lower is better)" in text
    assert "alignment (mutual_knn)" in text and "least-squares fit" in text
    assert watched.problems == []


def _column(page, table: str, index: int) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody tr", f"rows => rows.map(r => r.cells[{index}].textContent.trim())"
    )


def test_clicking_a_header_sorts_the_table(watched, base_url, screenshots):
    watched.goto(base_url + "index.html")
    page = watched.page
    scores = [float(x) for x in _column(page, "language-table", 4)]
    assert scores == sorted(scores, reverse=True)  # server-rendered: best first
    header = page.locator("#language-table thead th").nth(4)
    header.locator("button").click()  # a sorted numeric column flips
    assert header.get_attribute("aria-sort") == "ascending"
    assert [float(x) for x in _column(page, "language-table", 4)] == sorted(scores)
    header.locator("button").click()
    assert header.get_attribute("aria-sort") == "descending"
    assert [float(x) for x in _column(page, "language-table", 4)] == sorted(scores, reverse=True)
    # a text column: A to Z on the first click
    name = page.locator("#vision-table thead th").nth(1)
    name.locator("button").click()
    models = _column(page, "vision-table", 1)
    assert models == sorted(models, key=str.lower) and name.get_attribute("aria-sort")
    # bpb: a numeric column, high to low on the first click
    page.locator("#language-table thead th").nth(9).locator("button").click()
    bpb = [float(x) for x in _column(page, "language-table", 9)]
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
        assert _column(page, "language-table", 1)[0] == "bigscience/bloomz-7b1"
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


def test_published_results_site(watched, tmp_path, screenshots):
    """The site of leaderboard/ itself (what the Pages workflow deploys) loads clean."""
    from prh_bench.site import load_settings

    from conftest import ROOT

    site = tmp_path / "site"
    settings = load_settings(ROOT / "leaderboard" / "site.toml")
    build_site([ROOT / "leaderboard" / "results"], site, settings)
    for base in _serve(site):
        seen = _crawl(watched, base)
        assert len(seen) >= 5 and watched.problems == []
        watched.goto(base + "index.html")
        assert watched.page.locator("#language-table tbody tr").count() >= 1
        watched.page.screenshot(path=str(screenshots / "site-published-index.png"), full_page=True)
