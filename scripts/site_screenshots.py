"""Screenshots of every kind of leaderboard page at desktop and phone width (docs/leaderboard.md).

Builds the site from result files (default: the published ones, leaderboard/results/ with
leaderboard/site.toml), serves it on 127.0.0.1 and saves a full-page screenshot of each page
kind (index, board, model, models, matrix, downstream, data, and history where the site has
one) at 1440 and 390 px into docs/screenshots/ as ``site-<kind>-<width>.png``:

    python scripts/site_screenshots.py                      # the published site -> docs/screenshots
    python scripts/site_screenshots.py --site /tmp/site -o /tmp/shots   # a site already built

Needs Playwright (the ``test`` extra) and Debian's chromium (apt-get install chromium); nothing
is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDTHS = (1440, 390)
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


def page_kinds(site: Path) -> dict[str, str]:
    """One page of each kind: kind -> path inside ``site``."""
    default = sorted(site.glob("matrix-*.html"))[0].name.removeprefix("matrix-")
    boards = sorted(p.name for p in site.glob("board-*.html"))
    # the model page of the front page's best-ranked model (its first model link)
    index = (site / "index.html").read_text(encoding="utf-8")
    model = index.split('href="models/', 1)[1].split('"', 1)[0]
    kinds = {
        "index": "index.html",
        "board": next((b for b in boards if b != f"board-{default}"), boards[0]),
        "model": f"models/{model}",
        "models": "models.html",
        "matrix": f"matrix-{default}",
        "downstream": f"downstream-{default}",
        "data": "data.html",
        "history": "history.html",
    }
    return {kind: page for kind, page in kinds.items() if (site / page).is_file()}


def shoot(site: Path, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    from prh_bench.site import make_server

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
    server = make_server(site, port=0, quiet=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            for width in WIDTHS:
                context = browser.new_context(viewport={"width": width, "height": 900})
                page = context.new_page()
                for kind, path in page_kinds(site).items():
                    page.goto(base + path, wait_until="load")
                    target = out / f"site-{kind}-{width}.png"
                    page.screenshot(path=str(target), full_page=True)
                    saved.append(target)
                context.close()
            browser.close()
    finally:
        server.shutdown()
        server.server_close()
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="*", help="result files or folders (default: published)")
    parser.add_argument("--site", type=Path, help="shoot this built site instead of building one")
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if args.site:
        saved = shoot(args.site, args.output)
    else:
        from prh_bench.site import build_site, load_settings

        with tempfile.TemporaryDirectory() as tmp:
            site = Path(tmp) / "site"
            settings = load_settings(ROOT / "leaderboard" / "site.toml")
            build_site(args.results or [ROOT / "leaderboard" / "results"], site, settings)
            saved = shoot(site, args.output)
    for path in saved:
        print(path)


if __name__ == "__main__":
    main()
