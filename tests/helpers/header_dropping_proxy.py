"""An HTTP front that forwards every request to another endpoint without one header.

In front of moto's S3 server, without ``If-None-Match``, it is an S3 endpoint that ignores
conditional writes, as older S3-compatible stores do: a real server, which only never sees
the condition.
"""

from __future__ import annotations

import contextlib
import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

HOST = "127.0.0.1"
_FORWARD_TIMEOUT_SECONDS = 30.0
# Hop-by-hop headers: each connection has its own, and the body is passed on whole.
_NOT_PASSED_ON = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


@contextlib.contextmanager
def header_dropping_proxy(upstream: str, dropped_header: str) -> Iterator[str]:
    """The URL of a front that forwards to ``upstream`` without ``dropped_header``, while the block runs."""
    upstream_address = urlsplit(upstream)

    class Forwarder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and 100-continue as boto3 expects

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            headers = {
                name: value
                for name, value in self.headers.items()
                if name.lower() not in _NOT_PASSED_ON and name.lower() != dropped_header.lower()
            }
            connection = http.client.HTTPConnection(
                upstream_address.hostname or HOST, upstream_address.port, timeout=_FORWARD_TIMEOUT_SECONDS
            )
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                reply = connection.getresponse()
                reply_body = reply.read()
            finally:
                connection.close()
            self.send_response(reply.status, reply.reason)
            for name, value in reply.getheaders():
                if name.lower() not in _NOT_PASSED_ON:
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply_body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply_body)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward  # noqa: N815 -- http.server's names

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests' output is not the place for an access log."""

    server = ThreadingHTTPServer((HOST, 0), Forwarder)
    server.daemon_threads = True
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        serving.join()
