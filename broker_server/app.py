"""The broker server: two ports, one IOLoop, and the command line.

* the Lambda-facing port serves ``/lambda/<function_id>`` and ``/healthz``;
* the developer-facing port serves ``/debug/<function_id>``, ``/``,
  ``/api/sessions`` and ``/healthz``.

Two ports rather than two paths on one port so that each can be exposed
separately (the Lambda port to the VPC, the debugger port to developers).
"""

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.netutil import bind_sockets
from tornado.web import Application

from lambda_debugger.wire.protocol import CloseCode

from .config import DEBUGGER_TOKEN_VARIABLE, LAMBDA_TOKEN_VARIABLE, BrokerConfig, ConfigError, read_token_file
from .handlers import BrokerState, DebugSocket, LambdaSocket
from .logfmt import format_event, log_event, logger
from .registry import Registry
from .web import HealthHandler, IndexPage, NoIcon, SessionsApi, StateApi, StatusApi, UiFile

#: Seconds between two runs of the reaper.
REAP_INTERVAL_S = 1.0

#: Seconds the shutdown waits for clients to answer the closing handshake.
SHUTDOWN_GRACE_S = 1.0


def make_apps(
    config: BrokerConfig, registry: Registry, state: Optional[BrokerState] = None
) -> Tuple[Application, Application]:
    """Return the Tornado applications of the Lambda and the debugger port."""
    if state is None:
        state = BrokerState(config, registry)
    settings: Dict[str, Any] = dict(
        websocket_max_message_size=config.max_frame_bytes,
        websocket_ping_interval=config.ping_interval_s,
        websocket_ping_timeout=config.ping_timeout_s,
        log_function=_log_request,
    )
    shared = dict(state=state)
    lambda_routes: List[Any] = [
        (r"/lambda/(.*)", LambdaSocket, shared),
        (r"/healthz", HealthHandler),
    ]
    debugger_routes: List[Any] = [
        (r"/debug/(.*)", DebugSocket, shared),
        (r"/api/sessions", SessionsApi, shared),
        (r"/api/status", StatusApi, shared),
        (r"/api/state", StateApi, shared),
        (r"/ui/([a-z.]+)", UiFile),
        (r"/favicon.ico", NoIcon),
        (r"/", IndexPage, shared),
    ]
    if config.shared_port:
        # Both sides on one port, for a proxy in front that keeps them apart.
        both = Application(lambda_routes + debugger_routes, **settings)
        return both, both
    health = [(r"/healthz", HealthHandler)]
    return Application(lambda_routes, **settings), Application(debugger_routes + health, **settings)


def _log_request(handler) -> None:
    # WebSocket connections log their own events; health checks would drown
    # everything else, so both are debug-level here.
    status = handler.get_status()
    quiet = status == 101 or handler.request.path == "/healthz"
    level = logging.DEBUG if quiet and status < 400 else logging.INFO
    log_event(
        "http_request",
        level,
        method=handler.request.method,
        path=handler.request.path,
        status=status,
        peer=handler.request.remote_ip,
        ms=1000.0 * handler.request.request_time(),
    )


class BrokerServer:
    """Both ports of one broker, on one IOLoop.

    Use :meth:`run_forever` in a process of its own, :meth:`start_in_thread`
    to embed the broker (local mode), or :meth:`start` on an IOLoop you run.
    """

    def __init__(self, config: BrokerConfig, registry: Optional[Registry] = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else Registry.from_config(config)
        self._state = BrokerState(config, self.registry)
        #: Actual ports once started (useful when the configured port is 0).
        self.lambda_port: Optional[int] = None
        self.debugger_port: Optional[int] = None
        self._servers: List[HTTPServer] = []
        self._reaper: Optional[PeriodicCallback] = None
        self._loop: Optional[IOLoop] = None
        self._loop_thread_id: Optional[int] = None
        self._thread: Optional[threading.Thread] = None
        self._stop_requested: Optional[asyncio.Event] = None
        self._stopping = False

    # Starting ---------------------------------------------------------------

    def start(self) -> None:
        """Bind both ports and serve on the current IOLoop.

        Call it on the thread of that loop; the loop must be run by the caller.

        Raises:
            OSError: a port cannot be bound.
            ssl.SSLError: the certificate or key cannot be loaded.
        """
        ssl_context = self._ssl_context()
        lambda_app, debugger_app = make_apps(self.config, self.registry, self._state)
        lambda_sockets = bind_sockets(self.config.lambda_port, self.config.host)
        listeners = [(lambda_app, lambda_sockets)]
        if self.config.shared_port:
            debugger_sockets = lambda_sockets
        else:
            try:
                debugger_sockets = bind_sockets(self.config.debugger_port, self.config.host)
            except OSError:
                for sock in lambda_sockets:
                    sock.close()
                raise
            listeners.append((debugger_app, debugger_sockets))
        for app, sockets in listeners:
            # A client that does not finish its HTTP request (or WebSocket
            # upgrade) within the handshake timeout is dropped.
            server = HTTPServer(
                app,
                ssl_options=ssl_context,
                idle_connection_timeout=self.config.handshake_timeout_s,
                body_timeout=self.config.handshake_timeout_s,
            )
            server.add_sockets(sockets)
            self._servers.append(server)
        self.lambda_port = lambda_sockets[0].getsockname()[1]
        self.debugger_port = debugger_sockets[0].getsockname()[1]
        self._state.name = self.config.name or "%s:%d" % (socket.gethostname(), self.lambda_port)
        if self.config.peers:
            # Each page view asks every peer at once; queued requests would time out.
            AsyncHTTPClient.configure(None, max_clients=max(10, 4 * len(self.config.peers)))
        self._reaper = PeriodicCallback(self._reap, REAP_INTERVAL_S * 1000)
        self._reaper.start()
        self._loop = IOLoop.current()
        self._loop_thread_id = threading.get_ident()
        log_event(
            "listening",
            broker=self._state.name,
            host=self.config.host,
            lambda_port=self.lambda_port,
            debugger_port=self.debugger_port,
            tls=self.config.tls,
            insecure=self.config.insecure,
        )

    def _ssl_context(self) -> Optional[ssl.SSLContext]:
        if not self.config.certfile:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.config.certfile, self.config.keyfile)
        return context

    def _reap(self) -> None:
        for connection in list(self._state.connections):
            connection.end_if_unresponsive()
        now = time.time()
        self.registry.reap(now)
        self.registry.heartbeat(now)

    def run_forever(self, on_ready: Optional[Callable[[], None]] = None) -> None:
        """Serve until SIGTERM, SIGINT or :meth:`stop`; blocks."""
        asyncio.run(self._serve(on_ready, handle_signals=True))

    def start_in_thread(self, timeout: float = 10.0) -> "BrokerServer":
        """Serve on an IOLoop of a daemon thread; return once both ports are bound.

        Raises:
            OSError, ssl.SSLError: the broker could not start.
        """
        ready = threading.Event()
        failure: List[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(ready.set))
            except BaseException as error:  # reported to the starting thread
                if ready.is_set():
                    logger.exception(format_event("broker_crashed"))
                failure.append(error)
                ready.set()

        self._thread = threading.Thread(target=run, name="broker", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise TimeoutError("broker did not start within %g s" % timeout)
        if failure:
            raise failure[0]
        return self

    async def _serve(self, on_ready: Optional[Callable[[], None]], handle_signals: bool = False) -> None:
        self._stop_requested = asyncio.Event()
        self.start()
        if handle_signals:
            self._handle_signals()
        if on_ready is not None:
            on_ready()
        await self._stop_requested.wait()
        await self._drain()

    def _handle_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, self.stop)
            except (NotImplementedError, RuntimeError):  # Windows
                signal.signal(signum, lambda *_: loop.call_soon_threadsafe(self.stop))

    # Stopping ---------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Close every session with ``GOING_AWAY`` and stop serving.

        Safe to call from any thread and more than once. From another thread
        it waits (up to ``timeout``) for the broker's own thread to end.
        """
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() == self._loop_thread_id:
            self._shutdown()
        else:
            loop.add_callback(self._shutdown)
            if self._thread is not None:
                self._thread.join(timeout)

    def _shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log_event("stopping", sessions=len(self.registry), connections=len(self._state.connections))
        if self._reaper is not None:
            self._reaper.stop()
        for server in self._servers:
            server.stop()  # no new connections
        reason = "broker shutting down"
        self.registry.close_all(CloseCode.GOING_AWAY, reason)
        for connection in list(self._state.connections):
            connection.close(CloseCode.GOING_AWAY, reason)  # those still in their handshake
        if self._stop_requested is not None:
            self._stop_requested.set()

    async def aclose(self) -> None:
        """Stop, on the broker's own loop, and wait until connections are gone."""
        self._shutdown()
        await self._drain()

    async def _drain(self) -> None:
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self._state.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for connection in list(self._state.connections):
            connection.abort()  # did not answer the closing handshake
        for server in self._servers:
            await server.close_all_connections()

    # Addresses ----------------------------------------------------------------

    @property
    def name(self) -> str:
        """How this broker names itself, once started."""
        return self._state.name

    @property
    def lambda_address(self) -> str:
        """``ws[s]://host:port`` of the Lambda port, dialable from this machine."""
        return self._address(self.lambda_port)

    @property
    def debugger_address(self) -> str:
        """``ws[s]://host:port`` of the debugger port, dialable from this machine."""
        return self._address(self.debugger_port)

    def _address(self, port: Optional[int]) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = "[%s]" % host
        return "%s://%s:%s" % ("wss" if self.config.tls else "ws", host, port)


# Command line -------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Pair AWS Lambda invocations with debuggers and relay the debug stream. "
        "Tokens come from %s and %s, or from the files given by --lambda-token-file and --debugger-token-file."
        % (LAMBDA_TOKEN_VARIABLE, DEBUGGER_TOKEN_VARIABLE),
    )
    add = parser.add_argument
    add("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    add("--lambda-port", type=int, help="Lambda-facing port (default 8080)")
    add(
        "--debugger-port",
        type=int,
        help="developer-facing port (default 9229); the same as --lambda-port serves both sides on one port, "
        "for a broker behind a proxy that keeps them apart (deploy/nginx)",
    )
    add("--name", help="how this broker names itself in its APIs and page, e.g. in a fleet (default host:port)")
    add(
        "--peer",
        action="append",
        metavar="HOST:PORT",
        help="another broker of the fleet (its debugger port, as this broker reaches it); the page and "
        "/api/state then show what every broker holds. Repeat for each",
    )
    add(
        "--lambda-token-file",
        metavar="PATH",
        help="read the Lambda token from this file instead of %s" % LAMBDA_TOKEN_VARIABLE,
    )
    add(
        "--debugger-token-file",
        metavar="PATH",
        help="read the debugger token from this file instead of %s" % DEBUGGER_TOKEN_VARIABLE,
    )
    add("--insecure", action="store_true", help="accept connections without tokens (trusted networks only)")
    add("--certfile", help="TLS certificate chain (PEM); serves wss://")
    add("--keyfile", help="TLS private key (PEM)")
    add("--max-sessions", type=int, help="sessions the broker holds at most (default 1000)")
    add("--max-sessions-per-function", type=int, help="sessions per function ID at most (default 100)")
    add(
        "--max-control-connections",
        type=int,
        help="control connections of warm containers (DEBUGGER_WAIT_MAX=0) kept at most (default 20000)",
    )
    add(
        "--control-heartbeat",
        type=float,
        metavar="S",
        help="seconds between the armed debuggers re-sent on control connections (default 20)",
    )
    add("--max-frame-bytes", type=int, help="largest WebSocket message (default 1 MiB)")
    add("--pairing-timeout", type=float, metavar="S", help="how long a debugger waits for an invocation (default 900)")
    add("--handshake-timeout", type=float, metavar="S", help="time for a Lambda to announce itself (default 10)")
    add(
        "--idle-timeout",
        type=float,
        metavar="S",
        help="close a paired debugger after this long without debug traffic; the invocation runs on and "
        "may be attached again; 0 for never (default 900)",
    )
    add("--ping-interval", type=float, metavar="S", help="WebSocket ping interval, 0 for none (default 10)")
    add("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser


def _insecure_warning(config: BrokerConfig) -> str:
    open_ports = []
    if not config.debugger_token:
        open_ports.append("the debugger port (%d)" % config.debugger_port)
    if not config.lambda_token:
        open_ports.append("the Lambda port (%d)" % config.lambda_port)
    if not open_ports:
        return "broker: --insecure given, but both tokens are set and still required"
    lines = [
        "",
        "*" * 72,
        "WARNING: --insecure: %s %s connections WITHOUT A TOKEN."
        % (" and ".join(open_ports), "accept" if len(open_ports) > 1 else "accepts"),
    ]
    if not config.debugger_token:
        lines.append(
            "Anyone who can reach the debugger port can attach a debugger to your\n"
            "functions and run code with their IAM roles."
        )
    if not _is_loopback(config.host):
        lines.append(
            "AND THE BROKER LISTENS ON %s, NOT ONLY ON LOOPBACK: that means anyone on\n"
            "any network this machine is on. Set the tokens, or use --host 127.0.0.1." % config.host
        )
    lines += ["*" * 72, ""]
    return "\n".join(lines)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Optional[List[str]] = None, *, environ=None, prog: str = "python -m broker_server") -> int:
    """Run the broker from the command line; returns the exit status.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        environ: where the tokens are read (default ``os.environ``).
        prog: program name for usage and error messages.

    Exits with status 2 (argparse's) when the settings are unusable, such as
    missing or equal tokens without ``--insecure``; returns 1 when a port
    cannot be bound or the certificate cannot be loaded.
    """
    parser = _parser(prog)
    args = parser.parse_args(argv)
    try:
        config = _config(args, dict(os.environ if environ is None else environ))
    except ConfigError as error:
        parser.error(str(error))  # exits with status 2
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if config.insecure:
        print(_insecure_warning(config), file=sys.stderr, flush=True)
    server = BrokerServer(config)

    def announce() -> None:
        print(
            "broker listening: lambda %s://%s:%s/lambda/<function_id>, debugger %s://%s:%s/debug/<function_id>;"
            " named %s%s"
            % (
                *_scheme_host(config),
                server.lambda_port,
                *_scheme_host(config),
                server.debugger_port,
                server.name,
                " (one port for both sides: keep it behind the proxy that splits them)" if config.shared_port else "",
            ),
            flush=True,
        )

    try:
        server.run_forever(on_ready=announce)
    except (OSError, ssl.SSLError) as error:
        print("broker: cannot start: %s" % error, file=sys.stderr)
        return 1
    return 0


def _config(args, environ: Dict[str, str]) -> BrokerConfig:
    """The validated settings of the command line and ``environ`` (which
    token files fill in).

    Raises:
        ConfigError: unusable settings, such as missing or equal tokens.
    """
    for option, path, variable in (
        ("--lambda-token-file", args.lambda_token_file, LAMBDA_TOKEN_VARIABLE),
        ("--debugger-token-file", args.debugger_token_file, DEBUGGER_TOKEN_VARIABLE),
    ):
        if path:
            if environ.get(variable):
                raise ConfigError("give the token in %s or in %s, not both" % (variable, option))
            environ[variable] = read_token_file(path, option)
    config = BrokerConfig.from_environ(
        environ,
        host=args.host,
        lambda_port=args.lambda_port,
        debugger_port=args.debugger_port,
        name=args.name,
        peers=tuple(args.peer or ()),
        insecure=args.insecure,
        certfile=args.certfile,
        keyfile=args.keyfile,
        max_sessions=args.max_sessions,
        max_sessions_per_function=args.max_sessions_per_function,
        max_control_connections=args.max_control_connections,
        control_heartbeat_s=args.control_heartbeat,
        max_frame_bytes=args.max_frame_bytes,
        pairing_timeout_s=args.pairing_timeout,
        handshake_timeout_s=args.handshake_timeout,
        idle_timeout_s=args.idle_timeout,
        ping_interval_s=args.ping_interval,
    )
    config.validate()
    return config


def _scheme_host(config: BrokerConfig) -> Tuple[str, str]:
    host = "[%s]" % config.host if ":" in config.host else config.host
    return ("wss" if config.tls else "ws", host)
