"""Threaded HTTP/1.1 server for the emulator app.

werkzeug's development server answers every request with ``Connection: close``; botocore pools keep-alive
connections, and a benchmark against a server that reconnects per request measures the wrong thing. So this is
a small keep-alive WSGI gateway on the standard library's ``ThreadingHTTPServer`` (one thread per connection).
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote_to_bytes

from .app import EmulatorApp, WSGIEnvironment
from .emulator import Emulator

logger = logging.getLogger(__name__)

#: Keep-alive connections idle this long are closed (urllib3 notices and reconnects).
IDLE_TIMEOUT_S = 300.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT_S
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; with Nagle on, the second waits for a delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, opened=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: per-request logging would dominate throughput (and paths are all there is to log)."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def _environ(self, body: bytes) -> WSGIEnvironment:
        path, _, query = self.path.partition("?")
        host, port = self.server.server_address[:2]
        environ: WSGIEnvironment = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query,
            "RAW_URI": self.path,
            "REQUEST_URI": self.path,
            "SERVER_NAME": str(host),
            "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        for key, value in self.headers.items():
            name = key.upper().replace("-", "_")
            if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ[f"HTTP_{name}"] = value
        return environ

    def _serve(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            self.send_error(411, "chunked request bodies are not supported")
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.close_connection = True
            self.send_error(400, "invalid Content-Length")
            return
        body = self.rfile.read(length) if length > 0 else b""
        status: list[str] = []
        headers: list[tuple[str, str]] = []

        def start_response(status_line: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            status[:] = [status_line]
            headers[:] = response_headers
            return None

        try:
            result = self.server.app(self._environ(body), start_response)
            try:
                chunks = [bytes(chunk) for chunk in result]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except Exception:
            logger.exception("emulator app failed")
            self.close_connection = True
            self.send_error(500, "emulator error")
            return
        sent = sum(len(chunk) for chunk in chunks)
        code, _, reason = status[0].partition(" ")
        self.send_response(int(code), reason)
        declared: int | None = None
        for key, value in headers:
            lower = key.lower()
            if lower == "connection":
                continue
            if lower == "content-length":
                declared = int(value)
            self.send_header(key, value)
        if declared is None:
            declared = sent
            self.send_header("Content-Length", str(sent))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(chunk)
        if sent != declared:
            # A short body (the truncate_body fault) can only end by closing: the client then sees EOF
            # before Content-Length bytes, like a connection dropped mid-transfer.
            self.close_connection = True


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # socketserver's default of 5 drops SYNs when 50 clients connect at once

    def __init__(self, address: tuple[str, int], app: EmulatorApp) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.connections_opened = 0
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup that can stall on some hosts.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, *, opened: bool) -> None:
        with self._connections_lock:
            if opened:
                self._connections.add(connection)
                self.connections_opened += 1
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class EmulatorServer:
    """Serve an :class:`~ahi_emulator.emulator.Emulator` over HTTP/1.1 on a background thread.

    Parameters
    ----------
    emulator
        The state to serve.
    host
        Interface to bind; loopback by default, and there is rarely a reason to change it.
    port
        TCP port; 0 picks a free one (read it back from :attr:`port` after :meth:`start`).
    verify_signatures
        Refuse service requests whose SigV4 signature does not verify (:mod:`ahi_emulator.sigv4`); None (the
        default) follows ``emulator.verify_signatures``.

    Examples
    --------
    >>> with EmulatorServer(Emulator()) as server:  # doctest: +SKIP
    ...     os.environ.update(server.client_env())
    ...     boto3.client("medical-imaging").get_image_set(...)
    """

    def __init__(
        self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *, verify_signatures: bool | None = None
    ) -> None:
        self.emulator = emulator
        self.app = EmulatorApp(emulator, verify_signatures)
        self._host = host
        self._requested_port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> EmulatorServer:
        """Bind and start serving; calling it again is a no-op.

        Returns
        -------
        EmulatorServer
            ``self``, for chaining.
        """
        if self._httpd is not None:
            return self
        httpd = _HTTPServer((self._host, self._requested_port), self.app)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ahi-emulator-{httpd.server_port}",
            daemon=True,
        )
        thread.start()
        self._httpd, self._thread = httpd, thread
        return self

    def stop(self) -> None:
        """Stop accepting, close open keep-alive connections and release the port."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _running(self) -> _HTTPServer:
        if self._httpd is None:
            raise RuntimeError("EmulatorServer is not running; call start() first")
        return self._httpd

    @property
    def host(self) -> str:
        """The bound host."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (only known once started)."""
        return self._running().server_port

    @property
    def endpoint_url(self) -> str:
        """``http://<host>:<port>``, for ``AWS_ENDPOINT_URL_MEDICAL_IMAGING`` or ``endpoint_url=``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted so far (keep-alive reuse keeps this low)."""
        return self._running().connections_opened

    def client_env(self, region: str = "us-east-1") -> dict[str, str]:
        """Environment that points a plain ``boto3.client("medical-imaging")`` at this server.

        Parameters
        ----------
        region
            Any region; the emulator ignores it.

        Returns
        -------
        dict
            The endpoint, host-prefix switch (else botocore calls ``runtime-127.0.0.1``), fake credentials,
            region and ``AWS_EC2_METADATA_DISABLED`` (else botocore probes the instance metadata service).
        """
        return {
            "AWS_ENDPOINT_URL_MEDICAL_IMAGING": self.endpoint_url,
            "AWS_DISABLE_HOST_PREFIX_INJECTION": "true",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
