"""Small real HTTP servers on 127.0.0.1 for fetch tests (threads, stopped by the fixture)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def make_handler(routes: dict[str, tuple[int, dict[str, str], bytes, float]],
                 arrived: threading.Event | None = None) -> type:
    """A handler answering path -> (status, headers, body, delay before the body); sets
    `arrived` when a request comes in."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if arrived is not None:
                arrived.set()
            status, headers, body, delay = routes.get(self.path, (404, {}, b"missing", 0.0))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            if delay:
                time.sleep(delay)
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def http_server(routes: dict[str, tuple[int, dict[str, str], bytes, float]],
                arrived: threading.Event | None = None) -> Iterator[str]:
    """Serve `routes` on 127.0.0.1:<free port>; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(routes, arrived))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
