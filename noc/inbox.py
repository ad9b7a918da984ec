"""A loopback notification inbox for demos: receives what Apprise sends to ``json://`` URLs.

The demo's recipients point at ``json://127.0.0.1:8025/notify``; this server prints each
notification on one line, so a demo shows what a supervisor's phone would have received
without any real SMS or e-mail service.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO


def make_server(host: str, port: int, out: TextIO = sys.stdout) -> ThreadingHTTPServer:
    """An HTTP server that accepts any POST and prints its title/body. Must not be exposed."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
                title = body.get("title", "")
                message = body.get("message", body.get("body", ""))
            except (ValueError, AttributeError):
                title, message = "", raw.decode("utf-8", "replace")
            line = f"[inbox {self.path}] {title}: {message}".replace("\n", " ")
            print(line[:300], file=out, flush=True)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    return ThreadingHTTPServer((host, port), Handler)
