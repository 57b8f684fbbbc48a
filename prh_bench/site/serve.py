"""Previewing a built site on a local port (``prh-bench leaderboard serve``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .settings import LeaderboardError


def make_server(
    site: str | os.PathLike[str], port: int = 8000, host: str = "127.0.0.1", quiet: bool = False
):
    """An ``http.server`` serving ``site`` (not started; call ``serve_forever``)."""
    import functools
    import http.server

    site = Path(site)
    if not (site / "index.html").is_file():
        raise LeaderboardError(
            f"{site}: no built site (no index.html); run 'prh-bench leaderboard build -o {site}'"
        )

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            if not quiet:
                super().log_message(format, *args)

    handler = functools.partial(Handler, directory=str(site))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise LeaderboardError(f"cannot serve on {host}:{port}: {exc.strerror}") from None
