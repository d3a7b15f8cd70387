"""A small static-file HTTP server on 127.0.0.1 for tests (and benchmarks) of code that downloads.

It serves the files under one folder, honours ``Range: bytes=START-[END]`` (206 with ``Content-Range``,
416 when unsatisfiable), logs every request, and can inject the faults a downloader must survive:

* a connection dropped after N bytes of the body (:meth:`TestHTTPServer.drop_after`),
* an HTTP error status such as 500 or 503 that succeeds once it has been served a number of times
  (:meth:`TestHTTPServer.fail`); a missing file is a plain 404,
* a server that ignores ``Range`` and always answers 200 with the whole file (``ignore_range=True``),
* a server that announces no ``Content-Length`` (``send_length=False``): the body ends when the
  connection closes, so a dropped connection looks like the end of the file,
* a redirect to another path, as Hugging Face's ``resolve`` URLs redirect to its file store
  (:meth:`TestHTTPServer.redirect`).

Usage::

    from tests.http_server import TestHTTPServer

    with TestHTTPServer(folder) as server:           # random free port on 127.0.0.1
        server.drop_after("lmo/resolve/main/lmo_models.zip", 100_000)   # next GET of it breaks
        url = server.url_for("lmo/resolve/main/lmo_models.zip")
        ...
        server.log                                  # [RequestRecord(method, path, range, status, bytes_sent)]
        server.bytes_served("lmo/resolve/main/lmo_models.zip")

Paths given to the methods are relative to the served folder, with ``/`` separators, without a leading
``/``. The server is a :class:`http.server.ThreadingHTTPServer` in a daemon thread; HTTP/1.0, so each
request is on its own connection. It only ever listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import re
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["RequestRecord", "TestHTTPServer"]

_RANGE_RE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 64 * 1024


@dataclass
class RequestRecord:
    """One request the server answered.

    Attributes:
        method: ``GET`` or ``HEAD``.
        path: the request path relative to the served folder (no leading ``/``, query removed).
        range: the ``Range`` header as sent, or None.
        status: the status code answered.
        bytes_sent: body bytes written to the socket (fewer than the file when a drop was injected;
            a write the client aborted is not counted).
    """

    method: str
    path: str
    range: str | None
    status: int
    bytes_sent: int = 0


@dataclass
class _Fault:
    kind: str  # "drop" or "status"
    times: int
    after: int = 0
    status: int = 500


class TestHTTPServer:
    """A Range-capable threaded static file server on 127.0.0.1 with fault injection.

    Args:
        directory: folder whose files are served (``GET /a/b.zip`` serves ``directory/a/b.zip``).
        ignore_range: answer every GET with 200 and the whole file, as servers without Range support do.
        send_length: send ``Content-Length`` with files (False: the body ends when the connection closes).
        port: port to listen on; 0 (default) picks a free one.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    __test__ = False  # not a pytest test class, despite the name

    def __init__(
        self, directory: str | Path, *, ignore_range: bool = False, send_length: bool = True, port: int = 0
    ):
        self.directory = Path(directory).resolve()
        self.ignore_range = ignore_range
        self.send_length = send_length
        self._port = port
        self._lock = threading.Lock()
        self._faults: dict[str, list[_Fault]] = {}
        self._redirects: dict[str, tuple[str, int]] = {}
        self.log: list[RequestRecord] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> TestHTTPServer:
        handler = _make_handler(self)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="TestHTTPServer", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> TestHTTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- addresses ----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    def url_for(self, path: str) -> str:
        """URL of ``path`` (relative to the served folder)."""
        return f"{self.url}/{urllib.parse.quote(path.lstrip('/'))}"

    # --- faults -------------------------------------------------------------------------------------

    def drop_after(self, path: str, n_bytes: int, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` send their headers and ``n_bytes`` of the body, then close
        the connection (the client sees a short read)."""
        self._add_fault(path, _Fault("drop", times, after=n_bytes))

    def fail(self, path: str, status: int = 500, times: int = 1) -> None:
        """The next ``times`` GETs of ``path`` are answered with ``status``; later ones succeed."""
        self._add_fault(path, _Fault("status", times, status=status))

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        """Every request of ``path`` is answered with ``status`` and ``Location: /to`` (not logged as a
        fault; the redirect itself is logged with its status)."""
        with self._lock:
            self._redirects[path.lstrip("/")] = (to.lstrip("/"), status)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, path: str, fault: _Fault) -> None:
        with self._lock:
            self._faults.setdefault(path.lstrip("/"), []).append(fault)

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            faults = self._faults.get(path)
            if not faults:
                return None
            f = faults[0]
            f.times -= 1
            if f.times <= 0:
                faults.pop(0)
            return f

    # --- log ----------------------------------------------------------------------------------------

    def requests_for(self, path: str, method: str = "GET") -> list[RequestRecord]:
        """The logged requests of ``path`` (relative to the served folder)."""
        path = path.lstrip("/")
        with self._lock:
            return [r for r in self.log if r.path == path and r.method == method]

    def bytes_served(self, path: str | None = None) -> int:
        """Body bytes sent for ``path`` (all paths when None)."""
        with self._lock:
            return sum(r.bytes_sent for r in self.log if path is None or r.path == path.lstrip("/"))

    def reset_log(self) -> None:
        with self._lock:
            self.log.clear()

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.log.append(rec)


def _make_handler(server: TestHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"
        server_version = "bopkd-test-server"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, head: bool) -> None:
            rel = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).lstrip("/")
            rng = self.headers.get("Range")
            rec = RequestRecord("HEAD" if head else "GET", rel, rng, 0)
            # Logged before answering, and each field set before the bytes it describes are written,
            # so a client that has read a response always finds it complete in the log.
            server._record(rec)
            self._answer(rel, rng, head, rec)

        def _error(self, rec: RequestRecord, status: int, extra: dict[str, str] | None = None) -> None:
            rec.status = status
            body = f"{status}\n".encode()
            self.send_response(status)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if rec.method == "GET":
                self.wfile.write(body)

        def _answer(self, rel: str, rng: str | None, head: bool, rec: RequestRecord) -> None:
            with server._lock:
                redirect = server._redirects.get(rel)
            if redirect is not None:
                self._error(rec, redirect[1], {"Location": "/" + urllib.parse.quote(redirect[0])})
                return
            target = (server.directory / rel).resolve()
            if server.directory not in target.parents or not target.is_file():
                self._error(rec, 404)
                return
            fault = None if head else server._take_fault(rel)
            if fault is not None and fault.kind == "status":
                self._error(rec, fault.status)
                return
            size = target.stat().st_size
            start, end = 0, size - 1
            partial = False
            if rng and not server.ignore_range:
                m = _RANGE_RE.match(rng.strip())
                if m is None or int(m.group(1)) >= size:
                    self._error(rec, 416, {"Content-Range": f"bytes */{size}"})
                    return
                start = int(m.group(1))
                if m.group(2):
                    end = min(int(m.group(2)), size - 1)
                partial = True
            length = end - start + 1
            rec.status = 206 if partial else 200
            self.send_response(rec.status)
            self.send_header("Content-Type", "application/octet-stream")
            if server.send_length:
                self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "none" if server.ignore_range else "bytes")
            if partial:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if head:
                return
            limit = length if fault is None else min(length, fault.after)
            with open(target, "rb") as f:
                f.seek(start)
                while rec.bytes_sent < limit:
                    chunk = f.read(min(_CHUNK, limit - rec.bytes_sent))
                    if not chunk:
                        break
                    rec.bytes_sent += len(chunk)
                    try:
                        self.wfile.write(chunk)
                    except (BrokenPipeError, ConnectionResetError):
                        rec.bytes_sent -= len(chunk)  # not known to have arrived
                        return
            if fault is not None and limit < length:
                # Simulate a dropped connection: flush what was promised so far, then cut the socket.
                with contextlib.suppress(OSError):
                    self.wfile.flush()
                    self.connection.shutdown(2)
                self.close_connection = True

    return Handler
