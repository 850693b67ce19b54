"""The attach bridge: the IDE's local debug port, relayed to the broker.

The IDE connects to a local TCP port as if debugpy listened there. Once the
IDE has sent its first DAP message (a connection that closes before that,
such as a port probe, changes nothing at the broker), the bridge dials
``/debug/<function_id>`` on the broker, waits to be paired with an
invocation (keeping what the IDE sent meanwhile), then relays bytes both
ways with the shared pump.

It tells the developer what it waits for and what it is attached to, and
tells the IDE, as debugpy's own adapter would, when and why a session ends
or cannot start.
"""

import select
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, List, Optional, TextIO, Tuple

from lambda_debugger.developer.live_code import DROP, LiveCode
from lambda_debugger.wire import dap, filters, pairing, protocol, relay
from lambda_debugger.wire.endpoints import (
    SocketEndpoint,
    WebSocketEndpoint,
    describe_close,
    describe_error,
    open_websocket,
)
from lambda_debugger.wire.pairing import Waited
from lambda_debugger.wire.prefetch import StopAnswers

#: Bytes the IDE may send before pairing (its initialize/attach requests).
MAX_EARLY_BYTES = 1024 * 1024

#: An answer to the bridge's own request larger than this is not read.
MAX_OWN_ANSWER_BYTES = 8 * 1024 * 1024

#: The bridge's own requests go to the broker in WebSocket frames of at most this size.
FRAME_BYTES = 256 * 1024

#: Seconds between progress lines when the output is not a terminal.
REPORT_EVERY_S = 10.0

#: Seconds before the Lambda timeout at which the IDE's debug console is told.
WARN_AT_S = (60, 30, 10)

#: Close codes after which another attempt cannot succeed.
FATAL_CLOSES = (protocol.CloseCode.UNAUTHORIZED, protocol.CloseCode.BAD_REQUEST)

#: A connection that sends no whole DAP message this long is not an IDE.
FIRST_MESSAGE_S = 10.0

#: How often the broker is checked again while it is down.
CHECK_EVERY_S = 5.0

#: After telling the IDE that its session ended, how long to wait for its
#: ``disconnect`` (VS Code sends one on ``terminated``) before closing.
LINGER_S = 2.0


class BridgeError(Exception):
    """The bridge cannot go on (bad token, broker refused the request)."""


class SessionOver(Exception):
    """A session ends; ``why`` is said to the developer and, unless the IDE
    itself left, to the IDE.

    Attributes:
        why: the reason, in plain words.
        ide_left: the IDE closed its connection or said ``disconnect``.
        exit_code: the exit status of the handler's process, when known.
    """

    def __init__(self, why: str, *, ide_left: bool = False, exit_code: Optional[int] = None):
        super().__init__(why)
        self.why = why
        self.ide_left = ide_left
        self.exit_code = exit_code


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
    """The IDE's connection, following the DAP conversation both ways.
    Messages of the bridge's own go out only between two of the adapter's
    messages. With ``prefetch``, the IDE's requests that a stop's context
    answers are answered here, and contexts are kept from the IDE. Push and
    restart (:class:`LiveCode`) take their messages out of both directions.

    Attributes:
        stops: the current stop's context, or None without prefetch.
        live: push and restart for this session.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        prefetch: bool = True,
        push_dir: Optional[str] = None,
        say: Callable[[str], None] = lambda text: None,
    ):
        super().__init__(sock, "ide")
        self.dap = dap.Conversation()
        self.stops: Optional[StopAnswers] = StopAnswers() if prefetch else None
        self.live = LiveCode(push_dir, self.dap, say=say, to_ide=self._to_ide)
        self._out: Optional[List[bytes]] = None
        self._own_answer: Optional[bytearray] = None  # a large answer to the bridge's own request
        self._pending: List[bytes] = []
        self._for_adapter: List[bytes] = []  # the bridge's requests, and what the IDE sent after them
        self._dropping = False  # the adapter's message being relayed is not for the IDE

    def read(self) -> Optional[bytes]:
        data = super().read()
        if not data:
            return data
        forward = []
        for chunk in self.dap.ide_chunks(data):
            if self._for_adapter:  # behind a request of the bridge's: keep the order
                self._for_adapter.append(chunk.data)
                continue
            if chunk.whole and chunk.head.get("type") == "request" and self.live.from_ide(chunk.head):
                if self.stops is not None:
                    self.stops.forget()
                self._take_own()
                continue
            if self.stops is not None and not chunk.unparsed:
                if chunk.whole and chunk.head.get("type") == "request":
                    response = self.stops.answer(chunk.head)
                    if response is not None:
                        self.inject(self.dap.respond(response))
                        continue
                    self.stops.on_request(chunk.head)
                elif chunk.first:
                    self.stops.forget()  # too large to read now: it may change anything
                elif chunk.last and chunk.head.get("type") == "request":
                    self.stops.on_request(chunk.head)  # its seq, read from its end
            forward.append(chunk.data)
        return b"".join(forward)

    def frame(self, data: bytes):
        out: List[bytes] = []
        self._out = out  # messages of the bridge's own made meanwhile go here, in order
        try:
            for chunk in self.dap.adapter_chunks(data):
                self._frame_chunk(chunk, out)
        finally:
            self._out = None
        return out

    def _frame_chunk(self, chunk: dap.Chunk, out: List[bytes]) -> None:
        if self._own_answer is not None or (chunk.first and not chunk.last and self.live.owns(chunk.head)):
            # An answer to the bridge's own request, too large to come whole: collect it.
            if chunk.first:
                self._own_answer = bytearray()
            assert self._own_answer is not None
            if len(self._own_answer) <= MAX_OWN_ANSWER_BYTES:
                self._own_answer += chunk.data
            if chunk.last:
                whole = len(self._own_answer) <= MAX_OWN_ANSWER_BYTES
                message = dap.parse_framed(bytes(self._own_answer)) if whole else None
                self._own_answer = None
                self.live.from_adapter(message or dict(chunk.head), whole=message is not None)
            return
        if chunk.first:
            verdict = self.live.from_adapter(chunk.head, whole=chunk.last)
            hidden = verdict == DROP
            if not hidden and self.stops is not None:
                hidden = self.stops.on_adapter_message(chunk.head, whole=chunk.last)
            if isinstance(verdict, dict) and not hidden:  # changed on its way (initialize's capabilities)
                out.append(dap.encode(verdict))
                hidden = True
            self._dropping = hidden
        if not self._dropping:
            out.append(chunk.data)

    def _to_ide(self, message: bytes) -> None:
        """A message of the bridge's own for the IDE: in place while a
        message of the adapter's is being handled, else at the next boundary."""
        if self._out is not None:
            self._out.append(message)
        else:
            self.inject(message)

    def _take_own(self) -> None:
        if self.live.own and not self.dap.from_ide.inside_message:
            self._for_adapter += self.live.own
            self.live.own.clear()

    def control_waiting(self) -> bool:
        """Whether the bridge has requests for the Lambda side (see :meth:`take_for_adapter`)."""
        self._take_own()
        return bool(self._for_adapter)

    def take_for_adapter(self) -> List[bytes]:
        """The bridge's requests for the Lambda side, in the order of the
        IDE's stream, to send now."""
        out, self._for_adapter = self._for_adapter, []
        return out

    def inject(self, message: bytes) -> None:
        """Queue a framed DAP message for the next boundary in the stream."""
        self._pending.append(message)

    def take_outgoing(self) -> bytes:
        if not self._pending or not self.dap.may_insert:
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
        broker_problem: what the last check of the broker found wrong, or
            None while it answers and accepts the token.
    """

    def __init__(
        self,
        function_id: str,
        broker: str,
        *,
        token: Optional[str] = None,
        listen: Tuple[str, int] = ("127.0.0.1", 5678),
        out: Optional[TextIO] = None,
        connect_timeout_s: float = 5.0,
        sslopt: Optional[dict] = None,
        warn_at: Tuple[int, ...] = WARN_AT_S,
        first_message_s: float = FIRST_MESSAGE_S,
        prefetch: bool = True,
        when: Optional[str] = None,
        push_dir: Optional[str] = None,
    ):
        if not protocol.valid_function_id(function_id):
            raise BridgeError("function ID must match %s" % protocol.FUNCTION_ID_PATTERN)
        if when is not None:
            problem = filters.problem(when)
            if problem:
                raise BridgeError("--when: " + problem)
        self.function_id = function_id
        self.broker = broker
        self.when = when
        self.url = protocol.broker_url(broker, protocol.DEFAULT_DEBUGGER_PORT, protocol.DEBUG_PATH_PREFIX + function_id)
        self.token = token
        self.out = out or sys.stderr
        self.connect_timeout_s = connect_timeout_s
        self.sslopt = sslopt
        self.warn_at = tuple(sorted(warn_at, reverse=True))
        self.first_message_s = first_message_s
        self.prefetch = prefetch
        self.push_dir = push_dir
        self.sessions = 0
        self.paired: Optional[protocol.Paired] = None
        self.broker_problem: Optional[str] = None
        self._broker_refuses = False  # the last check found a refusal no retry can mend
        self._checked = False  # whether the broker was checked yet
        self._down_since = 0.0  # when the current broker problem was first seen
        self._last_check_report = 0.0
        self._ended: Optional[protocol.Ended] = None
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

    # Serving --------------------------------------------------------------

    def serve(self, *, once: bool = False, stop=None, check: bool = True) -> None:
        """Accept IDE connections until ``stop`` (a threading.Event) is set,
        or after one paired session when ``once``. With ``check``, checks
        the broker at start and again every few seconds while it is down.

        Raises:
            BridgeError: the broker refused us for good (e.g. bad token),
                after the IDE was told.
        """
        host, port = self.address
        self.say("listening for the IDE on %s:%d; attach a Python debugger (debugpy) to it" % (host, port))
        next_check = time.monotonic() if check else float("inf")
        try:
            while stop is None or not stop.is_set():
                if time.monotonic() >= next_check:
                    self.check_broker()
                    down = self.broker_problem is not None and not self._broker_refuses
                    next_check = time.monotonic() + CHECK_EVERY_S if down else float("inf")
                self._listener.settimeout(0.5)
                try:
                    ide, peer = self._listener.accept()
                except socket.timeout:
                    continue
                with ide:
                    paired = self.handle(ide, peer, stop=stop)
                if self.broker_problem is not None and not self._broker_refuses:
                    next_check = time.monotonic()  # say at once whether it is still down
                if once and paired:
                    return
        finally:
            self._listener.close()

    def check_broker(self) -> Optional[str]:
        """Ask the broker, with the debugger token, for its sessions: this
        proves that it answers, that TLS verifies and that the token is
        accepted. Says what fails in one line (on a change, and while it
        stays down, as progress). Returns the problem, or None."""
        from lambda_debugger.developer.sessions import TOKEN, SessionsError, fetch_sessions

        context = None
        if self.sslopt and self.sslopt.get("ca_certs"):
            import ssl

            context = ssl.create_default_context(cafile=self.sslopt["ca_certs"])
        was = self.broker_problem
        try:
            self._bounded(
                lambda: fetch_sessions(self.broker, self.token, timeout=self.connect_timeout_s, context=context)
            )
        except SessionsError as exc:
            self.broker_problem = str(exc)
            self._broker_refuses = exc.kind == TOKEN
            if self._broker_refuses and not self.token:
                self.broker_problem = (
                    "the broker asks for a debugger token and none was given"
                    " (BROKER_DEBUGGER_TOKEN, --token or --token-file)"
                )
        else:
            self.broker_problem = None
            self._broker_refuses = False
        now = time.monotonic()
        first, self._checked = not self._checked, True
        if self.broker_problem is None:
            if first or was is not None:
                secure = self.url.startswith("wss:")
                self.say(
                    "broker ok: %s answers%s; %s"
                    % (
                        self.url.rsplit("/debug/", 1)[0],
                        ", TLS verified" if secure else " (no TLS)",
                        "debugger token accepted" if self.token else "it asks for no token (--insecure)",
                    )
                )
        elif self._broker_refuses:
            self.say(
                "broker check failed: %s; fix the token and start attach again (an IDE that attaches is told"
                " this too)" % self.broker_problem
            )
        elif first or was != self.broker_problem:
            self._down_since = self._last_check_report = now
            self.say("broker check failed: %s" % self.broker_problem)
        elif self._tty or now - self._last_check_report >= REPORT_EVERY_S:
            self._last_check_report = now
            self.say(
                "broker still down: %s (for %d s; checking every %d s)"
                % (self.broker_problem, now - self._down_since, CHECK_EVERY_S),
                transient=True,
            )
        return self.broker_problem

    def _bounded(self, call: Callable[[], Any]) -> None:
        """Run ``call`` in a daemon thread for at most a connect timeout and
        a second: a DNS lookup has no timeout of its own, and a hanging
        resolver must not keep the bridge from serving the IDE.

        Raises:
            SessionsError: what ``call`` raised, or that it did not finish.
        """
        from lambda_debugger.developer.sessions import UNREACHABLE, SessionsError

        errors: List[BaseException] = []

        def run():
            try:
                call()
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run, name="lambda-debugger-broker-check", daemon=True)
        thread.start()
        thread.join(self.connect_timeout_s + 1.0)
        if thread.is_alive():
            raise SessionsError(
                "no answer from %s within %.0f s (the DNS lookup or the connection hangs)"
                % (self.broker, self.connect_timeout_s + 1.0),
                UNREACHABLE,
            )
        if errors:
            raise errors[0]

    def handle(self, ide: socket.socket, peer=None, *, stop=None) -> bool:
        """Bridge one IDE connection. Returns whether it was paired.

        Raises:
            BridgeError: the broker refused the debugger for good.
        """
        where = " from %s:%d" % peer[:2] if peer else ""
        ide.settimeout(30)
        ide_end = IdeEndpoint(ide, prefetch=self.prefetch, push_dir=self.push_dir, say=self.say)
        early = self._first_message(ide_end, where, stop)
        if early is None:
            return False
        self.say("IDE connected%s; asking the broker for function %s" % (where, self.function_id))
        try:
            broker = self._connect()
        except BridgeError as exc:
            self._end_ide(ide_end, str(exc))
            raise
        except Exception as exc:
            why = "cannot reach the broker at %s: %s" % (self.url, describe_error(exc))
            self.say(why)
            self._end_ide(ide_end, why)
            return False
        pump = None
        self._ended = None
        try:
            early = self._wait_for_pairing(broker, ide_end, early, stop)
            self.sessions += 1
            pump = relay.Pump(ide_end, broker)
            self._relay(pump, broker, ide_end, early)
        except BridgeError as exc:
            self._end_ide(ide_end, str(exc), pump=pump)
            raise
        except SessionOver as over:
            self.say(over.why if pump is None else "session ended: " + over.why)
            if not over.ide_left:
                self._end_ide(ide_end, over.why, over.exit_code, pump=pump)
        except (OSError, ValueError) as exc:  # includes timeouts, resets, frame and protocol errors
            why = "the session ended: %s" % describe_error(exc)
            self.say(why)
            self._end_ide(ide_end, why, pump=pump)
        finally:
            # A frame left half-sent must not be followed by a close frame.
            broker.close(
                protocol.CloseCode.NORMAL, "debugger disconnected", send_frame=pump is None or not pump.queued(broker)
            )
        return pump is not None

    # The phases of one IDE connection --------------------------------------

    def _first_message(self, ide: IdeEndpoint, where: str, stop) -> Optional[bytes]:
        """Read until the IDE has sent a whole DAP message; return what it
        sent, or None for a connection that is not an IDE (it closed first,
        stayed silent or does not speak DAP). Nothing reaches the broker."""
        early = bytearray()
        deadline = time.monotonic() + self.first_message_s
        while not ide.dap.messages_from_ide:
            left = deadline - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                self.say("closed a connection%s that sent no DAP message within %d s" % (where, self.first_message_s))
                return None
            if not select.select([ide], [], [], min(left, 0.5))[0]:
                continue
            try:
                data = ide.read()
            except OSError:
                data = None
            if data is None:
                self.say(
                    "a connection%s closed before sending a DAP message (a port check?); nothing was asked"
                    " of the broker" % where
                )
                return None
            early += data
            if ide.dap.from_ide.broken or len(early) > MAX_EARLY_BYTES:
                self.say("closed a connection%s that does not speak DAP" % where)
                return None
        return bytes(early)

    def _connect(self) -> WebSocketEndpoint:
        import websocket  # websocket-client

        try:
            # The same dial as the proxy's: the DNS lookup is bounded too.
            ws = open_websocket(
                self.url + ("?" + urllib.parse.urlencode({"when": self.when}) if self.when is not None else ""),
                timeout=self.connect_timeout_s,
                header=protocol.bearer(self.token),
                ca_file=(self.sslopt or {}).get("ca_certs"),
            )
        except websocket.WebSocketBadStatusException as exc:
            raise BridgeError("the broker refused the connection: HTTP %s" % exc.status_code) from None
        return WebSocketEndpoint(ws, "broker", on_control=self._on_notice)

    def _wait_for_pairing(self, broker: WebSocketEndpoint, ide: IdeEndpoint, early: bytes, stop) -> bytes:
        """Wait for ``Paired``, keeping what the IDE sends meanwhile.

        Returns everything the IDE sent so far.

        Raises:
            SessionOver: the wait ended unpaired.
            BridgeError: the broker refused the debugger for good.
        """
        received = bytearray(early)
        self._left_while_waiting(ide)
        started = time.monotonic()
        expires_ms = 0
        armed_said = False
        last_report = 0.0
        while stop is None or not stop.is_set():
            waited, message = pairing.wait_step(broker, time.monotonic() + pairing.TICK_S, watch=[ide])
            if waited is Waited.WATCHED:
                data = ide.read()
                if data is None:
                    raise SessionOver("the IDE disconnected before an invocation came", ide_left=True)
                received += data
                if len(received) > MAX_EARLY_BYTES:
                    raise SessionOver("the IDE sent more than %d bytes before an invocation came" % MAX_EARLY_BYTES)
                self._left_while_waiting(ide)
            elif waited is Waited.CLOSED:
                why = describe_close(broker.close_code, broker.close_reason)
                if broker.close_code in FATAL_CLOSES:
                    raise BridgeError("the broker refused the debugger: " + why)
                raise SessionOver("the broker ended the wait: " + why)
            elif waited is Waited.SILENT:
                raise SessionOver("the broker stopped answering while the bridge waited for an invocation")
            elif isinstance(message, (protocol.Armed, protocol.Paired)) and message.when != self.when:
                # A broker older than filters would pair with any invocation.
                broker.close(protocol.CloseCode.NORMAL, "the broker does not support --when")
                raise BridgeError(
                    "the broker does not support --when (it is older than this package); upgrade the broker"
                    " or attach without --when"
                )
            elif isinstance(message, protocol.Armed):
                expires_ms = message.expires_ms
                if self.when is not None and not armed_said:
                    armed_said = True
                    self.say("armed for invocations of %s whose event matches %s" % (self.function_id, self.when))
            elif isinstance(message, protocol.Paired):
                left = (message.deadline_ms - time.time() * 1000) / 1000.0
                self.say(
                    "attached to %s: request %s, function %s (%s), %.1f s left"
                    % (
                        message.function_id,
                        message.request_id,
                        message.function_name or "?",
                        message.runtime or "?",
                        left,
                    )
                )
                if message.attachment > 1:
                    self.say(
                        "a debugger left this invocation earlier: its handler is running"
                        " and stops at your next breakpoint"
                    )
                self.paired = message
                return bytes(received)
            now = time.monotonic()
            if self._tty or now - last_report >= REPORT_EVERY_S:
                last_report = now
                text = "waiting for an invocation of %s%s: %d s elapsed" % (
                    self.function_id,
                    " matching --when" if self.when is not None else "",
                    now - started,
                )
                if expires_ms:
                    text += ", %d s before the broker gives up" % max(0, expires_ms / 1000.0 - time.time())
                self.say(text, transient=True)
        raise SessionOver("the bridge stopped before an invocation came")

    def _left_while_waiting(self, ide: IdeEndpoint) -> None:
        """An IDE that says ``disconnect`` before pairing is answered here:
        its requests must not reach an invocation that it no longer wants.

        Raises:
            SessionOver: it did.
        """
        for seq, command in list(ide.dap.pending.items()):
            if command == "disconnect":
                for other, name in sorted(ide.dap.pending.items()):
                    if other != seq:
                        ide.sock.sendall(ide.dap.answer(other, name, error="the IDE disconnected"))
                ide.sock.sendall(ide.dap.answer(seq, command))
                raise SessionOver("the IDE stopped waiting for an invocation", ide_left=True)

    def _relay(self, pump: relay.Pump, broker: WebSocketEndpoint, ide: IdeEndpoint, early: bytes) -> None:
        """Relay until the session ends.

        Raises:
            SessionOver: always, saying why.
        """
        assert self.paired is not None  # set when the wait returned
        deadline_ms = self.paired.deadline_ms
        last_report = time.monotonic()
        # Warnings already due at pairing would only be noise.
        warnings = [t for t in self.warn_at if deadline_ms / 1000.0 - time.time() > t]
        ide.live.deadline_ms = deadline_ms
        # Before anything of the IDE's: the Lambda side reads it first.
        pump.enqueue(broker, ide.live.options(self.prefetch))
        if early:
            pump.enqueue(broker, early)
        while True:
            left = deadline_ms / 1000.0 - time.time()
            if warnings and left <= warnings[0]:
                while warnings and left <= warnings[0]:
                    due = warnings.pop(0)
                self._warn(ide, due)
            result = pump.run(deadline=time.monotonic() + 1.0)
            if result.reason == relay.CONTROL and result.endpoint is ide:
                for data in ide.take_for_adapter():
                    for start in range(0, len(data), FRAME_BYTES):  # within the broker's frame limit
                        pump.enqueue(broker, data[start : start + FRAME_BYTES])
                continue
            if result.reason == relay.CONTROL:
                message = broker.receive_control()
                if isinstance(message, protocol.Ended):
                    self._ended = message  # the close that follows ends the session
                elif message is not None:
                    self.say("broker: unexpected %s message; ignored" % message.type)
                continue
            if result.reason != relay.DEADLINE:
                break
            now = time.monotonic()
            if not broker.keepalive(now):
                raise SessionOver("the broker stopped answering")
            if self._tty or now - last_report >= REPORT_EVERY_S:
                last_report = now
                left = max(0.0, deadline_ms / 1000.0 - time.time())
                self.say(
                    "attached to %s: %d s left before the Lambda timeout" % (self.function_id, left), transient=True
                )
        if result.endpoint is not broker:
            raise SessionOver(
                "the IDE disconnected; the handler runs on, and attaching again debugs it further", ide_left=True
            )
        if self._ended is not None:
            raise SessionOver(self._ended.message, exit_code=self._ended.exit_code)
        raise SessionOver(self._why_closed(broker, deadline_ms))

    def _why_closed(self, broker: WebSocketEndpoint, deadline_ms: int) -> str:
        """Why the broker closed a paired session it gave no reason for."""
        code, reason = broker.close_code, broker.close_reason
        timed_out = time.time() * 1000 >= deadline_ms - 1000
        if code == protocol.CloseCode.INVOCATION_DONE and not timed_out:
            return "the invocation finished (%s)" % describe_close(code, reason)
        if code in (protocol.CloseCode.INVOCATION_DONE, protocol.CloseCode.PEER_GONE) and timed_out:
            return "the invocation reached its Lambda timeout: Lambda stopped the function"
        if code == protocol.CloseCode.PEER_GONE:
            return (
                "the function's side of the session disconnected (its process ended or lost the network): "
                + describe_close(code, reason)
            )
        if code is None:
            return "the connection to the broker was lost"
        return "the broker ended the session: " + describe_close(code, reason)

    def _end_ide(
        self, ide: IdeEndpoint, why: str, exit_code: Optional[int] = None, *, pump: Optional[relay.Pump] = None
    ) -> None:
        """Tell the IDE, as debugpy's adapter would, that its session is over
        and why; then answer its ``disconnect`` and let it go. Never raises."""
        try:
            if pump is not None and not pump.flush(ide, timeout=1.0):
                return  # the IDE is not reading: nothing more can reach it
            if not ide.dap.may_insert:
                return  # the adapter's stream broke off inside a message
            ide.sock.settimeout(LINGER_S)
            ide.sock.sendall(ide.dap.ending(why, exit_code))
            deadline = time.monotonic() + LINGER_S
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([ide], [], [], left)[0]:
                    return
                data = ide.sock.recv(65536)
                if not data:
                    return  # the IDE closed
                for request in ide.dap.ide_sent(data):
                    command = str(request.get("command", ""))
                    if command == "disconnect":
                        ide.sock.sendall(ide.dap.answer(request["seq"], command))
                        return
                    ide.sock.sendall(ide.dap.answer(request["seq"], command, error="the session has ended"))
        except (OSError, ValueError):
            pass

    def _warn(self, ide: IdeEndpoint, seconds: int) -> None:
        """Tell the developer, in the debug console too, that the Lambda
        timeout is near."""
        text = (
            "lambda-debugger: %d s left before the Lambda timeout of request %s. Lambda ends the invocation"
            " then, stopped at a breakpoint or not; raise the function's timeout to debug longer.\n"
            % (seconds, self.paired.request_id if self.paired else "?")
        )
        ide.inject(ide.dap.output(text, "important" if seconds <= 10 else "console"))
        self.say("%d s left before the Lambda timeout of %s" % (seconds, self.function_id))

    def _on_notice(self, message) -> None:
        if isinstance(message, protocol.Notice):
            self.say("broker: " + message.message[:200])
