"""An embedded AWS Lambda Runtime API, enough for the real ``awslambdaric``.

The runtime client long-polls ``GET /2018-06-01/runtime/invocation/next`` and
posts each outcome to ``.../invocation/<id>/response`` or ``.../<id>/error``;
a failed init posts ``.../runtime/init/error`` and exits. :class:`RuntimeAPI`
serves those endpoints on a loopback port and offers :meth:`RuntimeAPI.invoke`,
which queues an event and blocks until its outcome, like a synchronous Lambda
Invoke. The bookkeeping lives in :mod:`lambda_debugger.local.invocations`.

Like the service, the API marks itself as needing a fresh runtime
(:attr:`RuntimeAPI.needs_restart`) after an init error, a runtime exit, a
timeout or an oversized response; whoever runs the runtime process restarts it
and calls :meth:`RuntimeAPI.reset`, see :mod:`lambda_debugger.local.function`.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import os
import re
import select
import socket
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, Optional, Union

from .invocations import (
    MAX_RESPONSE_BYTES,
    Invocation,
    InvocationQueue,
    InvocationResult,
    QueueClosed,
    error_document,
    new_trace_id,
)

__all__ = ["RuntimeAPI", "InvocationResult", "QueueClosed"]

logger = logging.getLogger("lambda_debugger.local")

API_PREFIX = "/2018-06-01/runtime"

#: How long an on-demand runtime may take to initialise before it polls for
#: the first event: Lambda's own init phase limit.
DEFAULT_INIT_TIMEOUT_S = 10.0

_RESPONSE_PATH = re.compile(re.escape(API_PREFIX) + r"/invocation/(?P<id>[^/]+)/(?P<kind>response|error)\Z")
_JsonHeader = Union[None, str, Dict[str, Any]]


def _encode_json_header(value: _JsonHeader) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)  # ASCII only: safe in an HTTP header


class RuntimeAPI:
    """A Lambda Runtime API on a loopback port for one runtime process at a time."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        function_name: str = "local-function",
        function_version: str = "$LATEST",
        memory_mb: int = 128,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        init_timeout_s: float = DEFAULT_INIT_TIMEOUT_S,
    ):
        self.host = host
        self.port = port
        self.function_name = function_name
        self.function_version = function_version
        self.memory_mb = memory_mb
        self.region = region
        self.account_id = account_id
        self.init_timeout_s = init_timeout_s
        #: The events between callers and the runtime.
        self.queue = InvocationQueue()
        self._server: Optional[_Server] = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "RuntimeAPI":
        """Bind and serve in a daemon thread. Returns self."""
        if self._stopped:
            raise RuntimeError("a stopped RuntimeAPI cannot start again")
        server = _Server((self.host, self.port), _Handler)
        server.api = self
        self._server = server
        self.port = server.server_address[1]
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() waits for the loop
            name="lambda-runtime-api",
            daemon=True,
        ).start()
        logger.info("Runtime API listening on %s", self.address)
        return self

    def stop(self) -> None:
        """Stop serving; ``invoke`` calls still waiting raise QueueClosed."""
        self._stopped = True
        self.queue.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "RuntimeAPI":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def address(self) -> str:
        """``host:port``, the form ``AWS_LAMBDA_RUNTIME_API`` takes."""
        return "%s:%d" % (self.host, self.port)

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    @property
    def function_arn(self) -> str:
        return "arn:aws:lambda:%s:%s:function:%s" % (
            self.region,
            self.account_id,
            self.function_name,
        )

    @property
    def needs_restart(self) -> bool:
        """True once the runtime process must be replaced, as Lambda would."""
        return self.queue.needs_restart

    def reset(self) -> None:
        """Forget the previous runtime; call it just before starting a new one."""
        self.queue.reset()

    def runtime_exited(self, description: str) -> None:
        """Report that the runtime process ended (``exit status 3``, ``signal: killed``).

        Events it held or would have taken fail with ``Runtime.ExitError``.
        """
        self.queue.runtime_exited(description)

    def environment(self, handler: str, task_root: str, *, timeout_s: float) -> Dict[str, str]:
        """The variables Lambda sets for a runtime process of this function.

        No credentials: the process keeps whatever the caller's environment has.
        """
        version = "%d.%d" % sys.version_info[:2]
        today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y/%m/%d")
        return {
            "AWS_LAMBDA_RUNTIME_API": self.address,
            "_HANDLER": handler,
            "LAMBDA_TASK_ROOT": os.path.abspath(task_root),
            "AWS_LAMBDA_FUNCTION_NAME": self.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": self.function_version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mb),
            "AWS_LAMBDA_FUNCTION_TIMEOUT": str(max(1, math.ceil(timeout_s))),
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/" + self.function_name,
            "AWS_LAMBDA_LOG_STREAM_NAME": "%s/[%s]%s" % (today, self.function_version, uuid.uuid4().hex),
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_python" + version,
            "TZ": ":UTC",
        }

    # -- the caller's side --------------------------------------------------

    def invoke(
        self,
        event: bytes,
        *,
        timeout_s: float,
        client_context: _JsonHeader = None,
        cognito_identity: _JsonHeader = None,
        trace_id: Optional[str] = None,
    ) -> InvocationResult:
        """Queue ``event`` (JSON bytes) and block until its outcome.

        The deadline starts when the runtime takes the event; a runtime that
        never asks for it fails the invocation after ``init_timeout_s``.

        Args:
            event: the request body, passed to the runtime unchanged.
            timeout_s: the function timeout.
            client_context, cognito_identity: dict (sent as JSON) or JSON text.
            trace_id: the X-Ray header value; a fresh one by default.

        Raises:
            QueueClosed: (a RuntimeError) the API is not running or stopped meanwhile.
        """
        if self._server is None:
            raise QueueClosed("the runtime API is not running")
        headers = {
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Trace-Id": trace_id or new_trace_id(),
            "Lambda-Runtime-Client-Context": _encode_json_header(client_context),
            "Lambda-Runtime-Cognito-Identity": _encode_json_header(cognito_identity),
        }
        inv = Invocation(str(uuid.uuid4()), bytes(event), timeout_s, headers)
        return self.queue.run(inv, init_timeout_s=self.init_timeout_s)


def _error_type_of(body: bytes, header: Optional[str], default: str) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("errorType"), str):
        if document["errorType"]:
            return document["errorType"]
    return header or default


def _socket_closed(sock: socket.socket) -> bool:
    """True when the peer has closed: readable with nothing to read."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _TruncatingLineReader:
    """Reads header lines of any length, truncating those over the caller's limit.

    ``http.client`` rejects header lines over 64 KiB, but awslambdaric sends
    the X-Ray cause of an error as a header of up to 1 MiB (about 90 bytes a
    frame: a RecursionError gets there). Refusing it would crash the runtime
    and lose the error; that header's value is not used here anyway.
    """

    def __init__(self, rfile):
        self._rfile = rfile

    def readline(self, size: int = -1) -> bytes:
        line = self._rfile.readline(size)
        if size <= 0 or len(line) < size:
            return line
        while not line.endswith(b"\n"):  # drop the rest of the overlong line
            line = line[:size] + self._rfile.readline(64 * 1024)
            if len(line) <= size:  # end of stream
                break
        return line[: size - 3] + b"\r\n"

    def __getattr__(self, name: str):
        return getattr(self._rfile, name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    api: RuntimeAPI

    def handle_error(self, request, client_address) -> None:
        # A runtime killed mid-request resets its connection: routine here.
        logger.debug("Runtime API connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    """Translates Runtime API requests into calls on the server's RuntimeAPI."""

    protocol_version = "HTTP/1.1"  # the runtime client keeps its connection alive
    # Headers and body go out as separate writes; with Nagle's algorithm the
    # client's delayed ACK would hold the body back ~40 ms on every event.
    disable_nagle_algorithm = True
    server_version = "lambda-debugger-runtime-api"

    server: _Server

    @property
    def api(self) -> RuntimeAPI:
        return self.server.api

    def parse_request(self) -> bool:
        rfile = self.rfile
        self.rfile = _TruncatingLineReader(rfile)  # type: ignore[assignment]  # reads like the file it wraps
        try:
            return super().parse_request()
        finally:
            self.rfile = rfile

    def log_message(self, format: str, *args) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("runtime api: " + format, *args)

    def _send(self, status: int, body: bytes, headers: Optional[dict] = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            if value is not None:
                self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _accepted(self) -> None:
        self._send(202, b'{"status":"OK"}')

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:
        if self.path != API_PREFIX + "/invocation/next":
            return self._not_found()
        inv = self.api.queue.take(lambda: _socket_closed(self.connection))
        if inv is None:  # stopped, stale runtime or client gone: just hang up
            self.close_connection = True
            return
        headers = dict(inv.headers)
        headers["Lambda-Runtime-Aws-Request-Id"] = inv.request_id
        headers["Lambda-Runtime-Deadline-Ms"] = str(inv.deadline_ms)
        try:
            self._send(200, inv.event, headers)
        except OSError:
            self.api.queue.put_back(inv)
            raise
        logger.debug("Runtime took %s (%d bytes)", inv.request_id, len(inv.event))

    def do_POST(self) -> None:
        body = self._read_body()
        header_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
        if self.path == API_PREFIX + "/init/error":
            error_type = _error_type_of(body, header_type, "Runtime.Unknown")
            logger.info("Runtime init failed: %s", error_type)
            self.api.queue.init_failed(body, error_type)
            return self._accepted()
        match = _RESPONSE_PATH.match(self.path)
        if match is None:
            return self._not_found()
        ok = match.group("kind") == "response"
        outcome_type = None if ok else _error_type_of(body, header_type, "Unhandled")
        status = self.api.queue.complete(match.group("id"), ok, body, outcome_type)
        if status == 400:
            logger.warning("Runtime posted for unknown request %s", match.group("id"))
            self._send(400, error_document("InvalidRequestID", "Invalid request ID"))
        elif status == 413:
            message = "Exceeded maximum allowed payload size (%d bytes)." % MAX_RESPONSE_BYTES
            self._send(413, error_document("RequestEntityTooLarge", message))
        else:
            self._accepted()

    def _not_found(self) -> None:
        self._send(404, error_document("NotFound", "Unknown Runtime API path " + self.path))
