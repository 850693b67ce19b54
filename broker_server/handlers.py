"""WebSocket handlers: translate between the network and the registry.

Nothing here decides who pairs with whom; the :class:`Registry` does. The
handlers authenticate, check what clients send, relay bytes and report
arrivals and departures.

Flow control: ``on_message`` is a coroutine that awaits the partner's
``write_message`` future. Tornado reads the next frame of a connection only
after that coroutine returns, so a debugger that stops reading stops the
broker from reading the Lambda (and the reverse): at most one frame per
direction is in the broker's memory.
"""

import hmac
import logging
import time
import urllib.parse
from typing import Any, Optional, Set, Tuple, Union

from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.web import HTTPError
from tornado.websocket import WebSocketClosedError, WebSocketHandler

from lambda_debugger.wire import filters
from lambda_debugger.wire.protocol import (
    FUNCTION_ID_PATTERN,
    CloseCode,
    Considered,
    Detached,
    Ended,
    Invocation,
    Message,
    Notice,
    Paired,
    ProtocolError,
    Watch,
    clip_reason,
    decode,
    encode,
    token_from_header,
    valid_function_id,
)

from .config import BrokerConfig
from .logfmt import format_event, log_event, logger
from .registry import Registry, Side


class BrokerState:
    """What all handlers of one broker share."""

    def __init__(self, config: BrokerConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        #: Open WebSocket connections, paired or not, closed on shutdown.
        self.connections: Set["BrokerSocket"] = set()
        #: How this broker names itself (``--name``); set when it starts.
        self.name = config.name or ""


def token_accepted(expected: Optional[str], presented: Optional[str], insecure: bool) -> bool:
    """Return whether ``presented`` opens a port guarded by ``expected``.

    A port without a configured token is open only in insecure mode. The
    comparison takes the same time wherever the strings differ.
    """
    if not expected:
        return insecure
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("utf-8"), expected.encode("utf-8"))


def _consume_error(future) -> None:
    # A control message to a peer that is already gone is not worth a
    # "exception was never retrieved" warning; its on_close does the rest.
    if not future.cancelled():
        future.exception()


class BrokerSocket(WebSocketHandler):
    """One side of a session; the registry's :class:`Peer`."""

    side: Side

    def initialize(self, state: BrokerState) -> None:
        self.state = state
        self.registry = state.registry
        self.config = state.config
        #: Remote address, for log lines.
        self.address = self.request.remote_ip or "?"
        #: The (valid) function ID once the connection is accepted.
        self.function_id: Optional[str] = None
        #: The invocation's request ID once known, for log lines.
        self.request_id: Optional[str] = None
        #: ``(code, reason)`` the broker closed with; ``None`` while open.
        #: (code, reason) once the broker decided to close this connection.
        self.closed_with: Optional[Tuple[Optional[int], Optional[str]]] = None
        self._stream: Optional[IOStream] = None

    def expected_token(self) -> Optional[str]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return "%s[%s/%s %s]" % (self.side.value, self.function_id, self.request_id or "-", self.address)

    def log_fields(self) -> dict:
        """The fields that name this connection in log lines."""
        return {"side": self.side, "function_id": self.function_id, "request_id": self.request_id, "peer": self.address}

    # Connection life ------------------------------------------------------

    def open(self, function_id: str) -> None:
        self._stream = self.ws_connection.stream
        # DAP is request/response: Nagle plus delayed ACKs would add ~40 ms
        # to every round trip through the broker.
        self.set_nodelay(True)
        self.state.connections.add(self)
        presented = token_from_header(self.request.headers.get("Authorization"))
        if not token_accepted(self.expected_token(), presented, self.config.insecure):
            self._refuse(CloseCode.UNAUTHORIZED, "%s token missing or wrong" % self.side.value)
        elif not valid_function_id(function_id):
            self._refuse(CloseCode.BAD_REQUEST, "function ID must match " + FUNCTION_ID_PATTERN)
        else:
            self.function_id = function_id
            log_event("connection_accepted", side=self.side, function_id=function_id, peer=self.address)
            self.accepted()

    def accepted(self) -> None:
        """Called once the connection passed authentication and path checks."""

    def on_close(self) -> None:
        self.state.connections.discard(self)
        self.closing()
        if self.function_id is None:
            return  # refused in open(); logged there
        if self.closed_with is not None:
            code, reason = self.closed_with
            by = "broker"
        else:
            code, reason = self.close_code, self.close_reason
            by = "client"
        log_event(
            "connection_closed",
            **self.log_fields(),
            by=by,
            code=int(code) if code is not None else None,
            reason=reason,
        )
        self.registry.peer_left(self, self.close_code)

    def closing(self) -> None:
        """Called first thing in ``on_close``; for subclasses to clean up."""

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Close with ``code`` and ``reason`` (clipped to fit a close frame)."""
        if self.closed_with is None and self.ws_connection is not None:
            self.closed_with = (code, reason)
        super().close(int(code) if code is not None else None, clip_reason(reason) if reason else reason)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake."""
        if self._stream is not None:
            self._stream.close()

    def _refuse(self, code: CloseCode, reason: str) -> None:
        log_event(
            "connection_refused", logging.WARNING, side=self.side, peer=self.address, code=int(code), reason=reason
        )
        self.close(code, reason)

    def _fail(self, code: CloseCode, reason: str) -> None:
        """Close a connection that broke the protocol and end its session now."""
        log_event(
            "protocol_error",
            logging.WARNING,
            **self.log_fields(),
            code=int(code),
            reason=reason,
        )
        self.close(code, reason)
        # Do not wait for the closing handshake: the partner learns at once.
        self.registry.peer_left(self, code)

    def end_if_unresponsive(self) -> None:
        """End the session of a connection the broker is closing but whose
        peer does not answer (a missed pong, a frozen Lambda): Tornado waits
        5 s more for the close handshake; the partner learns now."""
        ws = self.ws_connection
        if ws is not None and ws.server_terminated and not ws.client_terminated:
            self.registry.peer_left(self, None)

    # Peer interface used by the registry ------------------------------------

    def send_control(self, message: Message) -> None:
        if isinstance(message, Paired):
            self.request_id = message.request_id
        try:
            future = self.write_message(encode(message))
        except WebSocketClosedError:
            return
        future.add_done_callback(_consume_error)

    # Messages ---------------------------------------------------------------

    async def on_message(self, message: Union[str, bytes]) -> None:
        if self.function_id is None or self.closed_with is not None:
            return  # refused or closing: frames already in flight are dropped
        if isinstance(message, bytes):
            await self._relay(message, binary=True)
            return
        try:
            control = decode(message)
        except ProtocolError as error:
            self._fail(CloseCode.BAD_REQUEST, str(error))
            return
        if isinstance(control, Detached) and self.side is Side.LAMBDA:
            if not self.registry.lambda_detached(self, time.time()):
                self._fail(CloseCode.BAD_REQUEST, "detached message while a debugger is attached")
            return
        if isinstance(control, Considered) and self.side is Side.LAMBDA:
            self.registry.lambda_considered(self, control.when, control.matches, time.time())
            return
        if not (isinstance(control, Notice) or (isinstance(control, Ended) and self.side is Side.LAMBDA)):
            self._fail(
                CloseCode.BAD_REQUEST, "unexpected %s message from the %s side" % (control.type, self.side.value)
            )
            return
        if isinstance(control, Ended):
            log_event("handler_ended", exit_code=control.exit_code, message=control.message, **self.log_fields())
            self.registry.handler_ended(self, control.message, control.exit_code)
        # Relayed as received: decode() ignores unknown fields, the partner
        # may know them.
        await self._relay(message, binary=False)

    async def _relay(self, data: Union[str, bytes], binary: bool) -> None:
        session = self.registry.session_of(self)
        partner = session.partner(self) if session is not None else None
        if partner is None:
            if binary and self.registry.drops_stream_of(self):
                # Sent before the proxy learnt that its debugger left.
                session.bytes_dropped += len(data)
            elif binary:
                self._fail(CloseCode.BAD_REQUEST, "debug bytes before pairing")
            return  # a notice before pairing has nobody to go to
        try:
            await partner.write_message(data, binary=binary)  # type: ignore[attr-defined]  # a BrokerSocket
        except WebSocketClosedError:
            return  # the partner's on_close ends the session and closes us
        if binary:
            session.record_relayed(self, len(data), time.time())
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(format_event("relayed", side=self.side, bytes=len(data), **session.log_fields()))

    def log_exception(self, typ, value, tb) -> None:
        # Tornado aborts this connection (and only this one) after a callback
        # raised; log it in our format, without the request and its headers.
        if isinstance(value, HTTPError):
            super().log_exception(typ, value, tb)
            return
        logger.error(
            format_event("internal_error", **self.log_fields(), error=typ.__name__),
            exc_info=(typ, value, tb),
        )


class LambdaSocket(BrokerSocket):
    """``/lambda/<function_id>``: a Lambda invocation dials in, or a warm
    container opens its control connection.

    Its first message must be a text :class:`Invocation` or :class:`Watch`,
    within the handshake timeout; only then does the registry hear of it.
    A control connection is never pinged: the container is frozen between
    invocations and could not answer. It is closed by age instead.
    """

    side = Side.LAMBDA

    def initialize(self, state: BrokerState) -> None:
        super().initialize(state)
        #: What the Lambda announced; ``None`` until its first message.
        self.invocation: Optional[Invocation] = None
        #: Whether this is a container's control connection.
        self.watching = False
        self._handshake_timer: Optional[object] = None

    def expected_token(self) -> Optional[str]:
        return self.config.lambda_token

    def accepted(self) -> None:
        self._handshake_timer = IOLoop.current().call_later(self.config.handshake_timeout_s, self._handshake_expired)

    def closing(self) -> None:
        self._cancel_handshake_timer()
        if self.watching:
            self.registry.watcher_left(self)

    def on_close(self) -> None:
        if not self.watching:
            super().on_close()
            return
        self.state.connections.discard(self)
        self.closing()
        log_event(
            "control_closed",
            logging.DEBUG,
            function_id=self.function_id,
            peer=self.address,
            by="broker" if self.closed_with is not None else "client",
        )

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            IOLoop.current().remove_timeout(self._handshake_timer)
            self._handshake_timer = None

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        if self.invocation is None and self.closed_with is None:
            self._fail(CloseCode.BAD_REQUEST, "no invocation message within %g s" % self.config.handshake_timeout_s)

    async def on_message(self, message: Union[str, bytes]) -> None:
        if self.function_id is None or self.closed_with is not None:
            return
        if self.watching:
            self._fail(CloseCode.BAD_REQUEST, "a control connection takes no message after watch")
        elif self.invocation is None:
            self._announce(message)
        else:
            await super().on_message(message)

    def _announce(self, message: Union[str, bytes]) -> None:
        self._cancel_handshake_timer()
        if isinstance(message, bytes):
            self._fail(CloseCode.BAD_REQUEST, "debug bytes before pairing")
            return
        try:
            invocation = decode(message)
        except ProtocolError as error:
            self._fail(CloseCode.BAD_REQUEST, str(error))
            return
        if isinstance(invocation, Watch):
            self._watch()
            return
        if not isinstance(invocation, Invocation):
            self._fail(CloseCode.BAD_REQUEST, "first message must be an invocation, not %s" % invocation.type)
            return
        self.invocation = invocation
        self.request_id = invocation.request_id
        self.registry.lambda_arrived(self, self.function_id, invocation, time.time())

    def _watch(self) -> None:
        self.watching = True
        _stop_pinging(self)
        log_event("control_opened", logging.DEBUG, function_id=self.function_id, peer=self.address)
        self.registry.watcher_arrived(self, self.function_id, time.time())


def _stop_pinging(handler: WebSocketHandler) -> None:
    """Stop Tornado's keepalive pings of one connection (the application's
    setting applies to all): a frozen container cannot answer them."""
    connection: Any = handler.ws_connection
    task = getattr(connection, "_ping_coroutine", None)  # newer Tornado
    if task is not None:
        task.cancel()
        connection._ping_coroutine = None
    callback = getattr(connection, "ping_callback", None)  # older Tornado
    if callback is not None:
        callback.stop()


class DebugSocket(BrokerSocket):
    """``/debug/<function_id>``: a developer's attach bridge dials in.

    It is paired or armed as soon as it is accepted. It must not send debug
    bytes before ``Paired``; the bridge buffers the IDE's until then.
    """

    side = Side.DEBUGGER

    def expected_token(self) -> Optional[str]:
        return self.config.debugger_token

    def accepted(self) -> None:
        # Read exactly as sent: Tornado's own getter strips whitespace.
        values = urllib.parse.parse_qs(self.request.query, keep_blank_values=True).get("when")
        when = values[-1] if values else None
        if when is not None:
            problem = filters.problem(when)
            if problem:
                self._refuse(CloseCode.BAD_REQUEST, "the when filter: " + problem)
                return
        self.registry.debugger_arrived(self, self.function_id, time.time(), when=when)
