"""The attach bridge: the IDE's local debug port, relayed to the broker.

The IDE connects to a local TCP port as if debugpy listened there. For each
IDE connection the bridge dials ``/debug/<function_id>`` on the broker,
waits to be paired with an invocation (keeping what the IDE already sent),
then relays bytes both ways with the shared pump. It tells the developer
what it waits for and what it is attached to.
"""

import socket
import sys
import time
from typing import Optional, TextIO, Tuple

from lambda_debugger import dap, protocol, relay
from lambda_debugger.endpoints import SocketEndpoint, WebSocketEndpoint, describe_close, describe_error

#: Bytes the IDE may send before pairing (its initialize/attach requests).
MAX_EARLY_BYTES = 1024 * 1024

#: Seconds between progress lines when the output is not a terminal.
REPORT_EVERY_S = 10.0

#: Seconds before the Lambda timeout at which the IDE's debug console is told.
WARN_AT_S = (60, 30, 10)

#: Close codes after which another attempt cannot succeed.
FATAL_CLOSES = (protocol.CloseCode.UNAUTHORIZED, protocol.CloseCode.BAD_REQUEST)


class BridgeError(Exception):
    """The bridge cannot go on (bad token, broker refused the request)."""


def parse_listen(text: str) -> Tuple[str, int]:
    """Parse ``host:port`` or ``port`` for ``--listen``.

    Raises:
        ValueError: not a host and a port from 0 to 65535.
    """
    host, _, port = text.rpartition(":")
    host = (host or "127.0.0.1").strip("[]")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError("--listen must be host:port or port, not %r" % text)
    return host, int(port)


class IdeEndpoint(SocketEndpoint):
    """The IDE's connection. Messages of the bridge's own (DAP ``output``
    events) go out only between two of debugpy's messages."""

    def __init__(self, sock: socket.socket):
        super().__init__(sock, "ide")
        self.boundaries = dap.MessageBoundaries()
        self._pending = []

    def frame(self, data: bytes):
        self.boundaries.feed(data)
        return (data,)

    def inject(self, message: bytes) -> None:
        """Queue a framed DAP message for the next boundary in the stream."""
        self._pending.append(message)

    def take_outgoing(self) -> bytes:
        if not self._pending or not self.boundaries.at_boundary:
            return b""
        data = b"".join(self._pending)
        self._pending.clear()
        return data


class AttachBridge:
    """Listens for the IDE and bridges each connection to the broker.

    Attributes:
        address: the (host, port) the IDE should attach to, once bound.
        sessions: how many sessions were paired so far.
        paired: the invocation of the current or last session.
    """

    def __init__(
        self,
        function_id: str,
        broker: str,
        *,
        token: Optional[str] = None,
        listen: Tuple[str, int] = ("127.0.0.1", 5678),
        out: TextIO = None,
        connect_timeout_s: float = 5.0,
        sslopt: Optional[dict] = None,
        warn_at: Tuple[int, ...] = WARN_AT_S,
    ):
        if not protocol.valid_function_id(function_id):
            raise BridgeError("function ID must match %s" % protocol.FUNCTION_ID_PATTERN)
        self.function_id = function_id
        self.url = protocol.broker_url(
            broker, protocol.DEFAULT_DEBUGGER_PORT, protocol.DEBUG_PATH_PREFIX + function_id
        )
        self.token = token
        self.out = out or sys.stderr
        self.connect_timeout_s = connect_timeout_s
        self.sslopt = sslopt
        self.warn_at = tuple(sorted(warn_at, reverse=True))
        self.sessions = 0
        self.paired: Optional[protocol.Paired] = None
        self._listener = socket.create_server(listen, reuse_port=False)
        self.address = self._listener.getsockname()[:2]
        self._tty = bool(getattr(self.out, "isatty", lambda: False)())

    def say(self, text: str, *, transient: bool = False) -> None:
        """Print a status line; on a terminal, transient lines overwrite each other."""
        if self._tty:
            self.out.write("\r\x1b[K" + text + ("" if transient else "\n"))
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def serve(self, *, once: bool = False, stop=None) -> None:
        """Accept IDE connections until ``stop`` (a threading.Event) is set,
        or after one paired session when ``once``.

        Raises:
            BridgeError: the broker refused us for good (e.g. bad token).
        """
        host, port = self.address
        self.say("listening for the IDE on %s:%d; attach a Python debugger (debugpy) to it" % (host, port))
        try:
            while stop is None or not stop.is_set():
                self._listener.settimeout(0.5)
                try:
                    ide, peer = self._listener.accept()
                except socket.timeout:
                    continue
                with ide:
                    paired = self.handle(ide, peer, stop=stop)
                if once and paired:
                    return
        finally:
            self._listener.close()

    def handle(self, ide: socket.socket, peer=None, *, stop=None) -> bool:
        """Bridge one IDE connection. Returns whether it was paired."""
        self.say("IDE connected%s; asking the broker for function %s"
                 % (" from %s:%d" % peer[:2] if peer else "", self.function_id))
        try:
            broker = self._connect()
        except BridgeError:
            raise  # refused for good: the caller stops
        except Exception as exc:
            self.say("cannot reach the broker at %s: %s" % (self.url, describe_error(exc)))
            return False
        ide_end = IdeEndpoint(ide)
        ide.settimeout(30)
        pump = None
        try:
            early = self._wait_for_pairing(broker, ide, stop)
            if early is None:
                return False
            self.sessions += 1
            pump = relay.Pump(ide_end, broker)
            self._relay(pump, broker, ide_end, early)
            return True
        except (OSError, ValueError) as exc:  # includes timeouts, resets, frame and protocol errors
            self.say("session ended: %s" % describe_error(exc))
            return pump is not None
        finally:
            # A frame left half-sent must not be followed by a close frame.
            broker.close(protocol.CloseCode.NORMAL, "debugger disconnected",
                         send_frame=pump is None or not pump.queued(broker))

    def _connect(self) -> WebSocketEndpoint:
        import websocket  # websocket-client

        try:
            ws = websocket.create_connection(
                self.url,
                timeout=self.connect_timeout_s,
                header=protocol.bearer(self.token),
                sslopt=self.sslopt,
            )
        except websocket.WebSocketBadStatusException as exc:
            raise BridgeError("the broker refused the connection: HTTP %s" % exc.status_code) from None
        return WebSocketEndpoint(ws, "broker", on_control=self._on_notice)

    def _wait_for_pairing(self, broker: WebSocketEndpoint, ide: socket.socket, stop) -> Optional[bytes]:
        """Wait for ``Paired``, buffering what the IDE sends meanwhile.

        Returns the buffered bytes, or None when the wait ended unpaired.
        """
        import select

        early = bytearray()
        started = time.monotonic()
        expires_ms = 0
        last_report = 0.0
        while stop is None or not stop.is_set():
            readable, _, _ = select.select([broker, ide], [], [], 1.0)
            if ide in readable:
                data = ide.recv(65536)
                if not data:
                    self.say("the IDE disconnected before an invocation came")
                    return None
                early += data
                if len(early) > MAX_EARLY_BYTES:
                    self.say("the IDE sent more than %d bytes before pairing; dropping it" % MAX_EARLY_BYTES)
                    return None
            if broker in readable or broker.has_buffered():
                try:
                    # A ping alone makes the socket readable: wait a moment
                    # for a message, not a whole socket timeout.
                    message = broker.receive_control(deadline=time.monotonic() + 1.0)
                except socket.timeout:
                    continue
                if message is None:
                    why = describe_close(broker.close_code, broker.close_reason)
                    if broker.close_code in FATAL_CLOSES:
                        raise BridgeError("the broker refused the debugger: " + why)
                    self.say("the broker ended the wait: " + why)
                    return None
                if isinstance(message, protocol.Armed):
                    expires_ms = message.expires_ms
                elif isinstance(message, protocol.Paired):
                    left = (message.deadline_ms - time.time() * 1000) / 1000.0
                    self.say("attached to %s: request %s, function %s (%s), %.1f s left"
                             % (message.function_id, message.request_id, message.function_name or "?",
                                message.runtime or "?", left))
                    if message.attachment > 1:
                        self.say("a debugger left this invocation earlier: its handler is running"
                                 " and stops at your next breakpoint")
                    self.paired = message
                    return bytes(early)
            now = time.monotonic()
            if not broker.keepalive_unpumped(now):
                self.say("the broker stopped answering while waiting")
                return None
            if self._tty or now - last_report >= REPORT_EVERY_S:
                last_report = now
                text = "waiting for an invocation of %s: %d s elapsed" % (self.function_id, now - started)
                if expires_ms:
                    text += ", %d s before the broker gives up" % max(0, expires_ms / 1000.0 - time.time())
                self.say(text, transient=True)
        return None

    def _relay(self, pump: relay.Pump, broker: WebSocketEndpoint, ide: IdeEndpoint, early: bytes) -> None:
        deadline_ms = self.paired.deadline_ms
        last_report = time.monotonic()
        # Warnings already due at pairing would only be noise.
        warnings = [t for t in self.warn_at if deadline_ms / 1000.0 - time.time() > t]
        if early:
            pump.enqueue(broker, early)
        while True:
            left = deadline_ms / 1000.0 - time.time()
            if warnings and left <= warnings[0]:
                while warnings and left <= warnings[0]:
                    due = warnings.pop(0)
                self._warn(ide, due)
            result = pump.run(deadline=time.monotonic() + 1.0)
            if result.reason == relay.CONTROL:
                message = broker.receive_control()
                self.say("broker: unexpected %s message; ignored" % message.type)
                continue
            if result.reason != relay.DEADLINE:
                break
            now = time.monotonic()
            if not broker.keepalive(now):
                self.say("session ended: the broker stopped answering")
                return
            if self._tty or now - last_report >= REPORT_EVERY_S:
                last_report = now
                left = max(0.0, deadline_ms / 1000.0 - time.time())
                self.say("attached to %s: %d s left before the Lambda timeout"
                         % (self.function_id, left), transient=True)
        if result.endpoint is broker:
            self.say("session ended: " + describe_close(broker.close_code, broker.close_reason))
        else:
            self.say("the IDE disconnected; the handler runs on, and attaching again debugs it further")

    def _warn(self, ide: IdeEndpoint, seconds: int) -> None:
        """Tell the developer, in the debug console too, that the Lambda
        timeout is near."""
        text = ("lambda-debugger: %d s left before the Lambda timeout of request %s. Lambda ends the invocation"
                " then, stopped at a breakpoint or not; raise the function's timeout to debug longer.\n"
                % (seconds, self.paired.request_id))
        ide.inject(dap.output_event(text, "important" if seconds <= 10 else "console"))
        self.say("%d s left before the Lambda timeout of %s" % (seconds, self.function_id))

    def _on_notice(self, message) -> None:
        if isinstance(message, protocol.Notice):
            self.say("broker: " + message.message[:200])
