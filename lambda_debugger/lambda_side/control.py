"""A warm container's control connection to the broker ("always on").

With ``DEBUGGER_WAIT_MAX=0`` an invocation pairs only with a debugger that
is armed already. Rather than ask the broker at every invocation, a
container keeps one connection on which the broker says which debuggers are
armed (and with which ``--when`` filters): at once, on every change, and
again every ``heartbeat_s``. An invocation that no armed debugger wants then
runs without a network round trip.

No thread serves the connection: Lambda freezes the container between
invocations, and whatever the broker sent meanwhile waits in the socket.
Each invocation reads it without blocking. A connection that closed (the
broker restarted, or closed it by age) or that stayed silent for three
heartbeats (its messages may be stuck, or its peer gone) is replaced by a
new one, opened in the invocation as today's per-invocation connection
would be: one connection and one round trip.

The connection is opened at the first invocation that uses it, never while
the function initialises.
"""

import enum
import logging
import os
import socket
import ssl
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.wire import filters, protocol, wsframes
from lambda_debugger.wire.endpoints import describe_close, describe_error, open_websocket, parse_close

log = logging.getLogger("lambda_debugger")

#: A connection that heard nothing for this many heartbeats is replaced.
STALE_HEARTBEATS = 3

#: After a broker refused control connections for a while (a limit), ask
#: per invocation for this long before trying again.
RETRY_AFTER_S = 60.0

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Decision(enum.Enum):
    """What an invocation does after looking at the control connection."""

    RUN = "run"  # no armed debugger wants it: run the handler at once
    ASK = "ask"  # announce it to the broker (a debugger wants it, or no control connection)


class ControlLink:
    """The container's control connection and what it last said.

    Attributes:
        armed: the armed debuggers, ``{"id": n, "when": expr or None}``.
        heard: ``time.time()`` of the last bytes read from the broker.
        unsupported_until: ``time.time()`` until which invocations ask the
            broker instead (the broker is older than control connections,
            or refused one).
    """

    def __init__(self) -> None:
        self.sock: Optional[socket.socket] = None
        self.armed: List[dict] = []
        self.heard = 0.0
        self.heartbeat_s = 20.0
        self.unsupported_until = 0.0
        self.opened = 0  # connections opened in this process
        self._decoder = wsframes.FrameDecoder(max_payload=protocol.MAX_CONTROL_MESSAGE_BYTES)
        self._fragments: List[bytes] = []
        self._answered = False  # the broker's first answer to watch came
        self._close: Optional[Tuple[Optional[int], str]] = None  # what the broker closed with

    def check(self, config: LambdaConfig, event: Any, connect_timeout: float, name: str) -> Tuple[Decision, Dict]:
        """Decide whether this invocation asks the broker for a debugger.

        Returns the decision and the results of the armed debuggers' filters
        on ``event`` (sent with the invocation, so that the broker pairs it
        only with a debugger that wants it). Opens or re-opens the
        connection within ``connect_timeout`` when needed.

        Raises:
            ConnectionError: the broker cannot be reached or refused the
                token (the caller trips its breaker and runs normally).
        """
        if time.time() < self.unsupported_until:
            return Decision.ASK, {}
        if self.sock is not None:
            self._drain()
        now = time.time()
        if self.sock is None or not 0 <= now - self.heard < STALE_HEARTBEATS * self.heartbeat_s:
            if self.sock is not None:
                log.debug(
                    "%s: the control connection has been silent for %.0f s; opening a new one", name, now - self.heard
                )
                self.close()
            if not self._open(config, connect_timeout, name):
                return Decision.ASK, {}
        return self._decide(event, name)

    def close(self) -> None:
        """Drop the connection without a closing handshake (the broker
        takes a vanished control connection in its stride)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._decoder = wsframes.FrameDecoder(max_payload=protocol.MAX_CONTROL_MESSAGE_BYTES)
        self._fragments = []

    # Internals ----------------------------------------------------------

    def _decide(self, event: Any, name: str) -> Tuple[Decision, Dict]:
        if not self.armed:
            return Decision.RUN, {}
        when = [entry.get("when") for entry in self.armed]
        anyone = None in when  # a debugger without a filter wants every invocation
        distinct = sorted({w for w in when if isinstance(w, str)})
        results = filters.evaluate(distinct, event) if distinct else {}
        if anyone or any(results.values()):
            return Decision.ASK, results
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: no armed debugger's filter matches this event; running normally", name)
        return Decision.RUN, results

    def _open(self, config: LambdaConfig, timeout: float, name: str) -> bool:
        """Open the connection and read the broker's first answer. Returns
        False when the broker offers none (the caller asks per invocation).

        Raises:
            ConnectionError: unreachable broker or refused token.
        """
        deadline = time.monotonic() + timeout
        try:
            ws = open_websocket(
                config.broker_url, timeout=timeout, header=protocol.bearer(config.auth_token), ca_file=config.ca_file
            )
            sock = ws.sock
            watch = protocol.Watch(function_name=_function_name(), runtime="python%d.%d" % sys.version_info[:2])
            sock.sendall(wsframes.encode(wsframes.OP_TEXT, protocol.encode(watch).encode("utf-8")))
        except Exception as exc:
            raise ConnectionError("broker unreachable (%s)" % describe_error(exc)) from None
        self.sock = sock
        self.opened += 1
        self._answered = False
        self._close = None
        try:
            while not self._answered and self.sock is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise socket.timeout("no answer within %.1f s" % timeout)
                sock.settimeout(left)
                self._read_once(sock.recv(4096))
        except Exception as exc:
            self.close()
            raise ConnectionError("broker did not answer (%s)" % describe_error(exc)) from None
        if self.sock is None:
            self._refused()
            return False
        # Once per container; re-opened connections only at debug level.
        level = logging.INFO if self.opened == 1 else logging.DEBUG
        log.log(level, "%s: control connection to the broker open; %s", name, describe_armed(self.armed))
        return True

    def _refused(self) -> None:
        """The broker closed a new control connection instead of answering:
        say why, and ask per invocation for a while (for good if it is
        older than control connections).

        Raises:
            ConnectionError: it refused the token; retrying cannot help.
        """
        code, reason = self._close or (None, "")
        why = describe_close(code, reason)
        if code == protocol.CloseCode.UNAUTHORIZED:
            raise ConnectionError("broker closed the connection: %s" % why)
        if code == protocol.CloseCode.BAD_REQUEST and "unknown control message type 'watch'" in reason:
            self.unsupported_until = float("inf")
            log.info(
                "lambda_debugger: the broker does not offer control connections (it is older than this "
                "package); each invocation asks it for a debugger"
            )
            return
        self.unsupported_until = time.time() + RETRY_AFTER_S
        log.warning(
            "lambda_debugger: the broker refused a control connection (%s); invocations ask it for a debugger for %d s",
            why,
            RETRY_AFTER_S,
        )

    def _drain(self) -> None:
        """Read, without blocking, what the broker sent since the last look."""
        sock = self.sock
        assert sock is not None
        try:
            sock.settimeout(0)
            while self.sock is not None:
                try:
                    data = sock.recv(65536)
                except _WOULD_BLOCK:
                    return
                self._read_once(data)
        except Exception as exc:
            log.debug("control connection failed (%s); opening a new one", describe_error(exc))
            self.close()

    def _read_once(self, data: bytes) -> None:
        """Handle bytes read from the broker; at its close (or EOF) the
        connection is dropped and ``_close`` says why.

        Raises:
            wsframes.FrameError: bytes that are not WebSocket frames.
            OSError: a pong could not be sent.
        """
        if not data:
            self.close()
            return
        self.heard = time.time()
        for fin, opcode, payload in self._decoder.feed(data):
            if opcode in (wsframes.OP_TEXT, wsframes.OP_CONT):
                self._fragments.append(payload)
                if not fin:
                    continue
                text, self._fragments = b"".join(self._fragments), []
                self._message(text)
            elif opcode == wsframes.OP_PING and self.sock is not None:
                timeout = self.sock.gettimeout()
                self.sock.settimeout(1.0)
                self.sock.sendall(wsframes.encode(wsframes.OP_PONG, payload))
                self.sock.settimeout(timeout)
            elif opcode == wsframes.OP_CLOSE:
                self._close = parse_close(payload)
                self.close()
                self.armed = []
                return

    def _message(self, text: bytes) -> None:
        try:
            message = protocol.decode(text)
        except protocol.ProtocolError as exc:
            # A newer broker's message, or a malformed one: not ours to act on.
            log.debug("ignored a control message: %s", exc)
            return
        if isinstance(message, protocol.Debuggers):
            self.armed = list(message.armed)
            self.heartbeat_s = max(1.0, float(message.heartbeat_s))
            self._answered = True


def describe_armed(armed: List[dict]) -> str:
    """The armed debuggers in words, for the function's log."""
    if not armed:
        return "no debugger armed"
    filtered = [entry["when"] for entry in armed if entry.get("when") is not None]
    text = "%d debugger%s armed" % (len(armed), "" if len(armed) == 1 else "s")
    if filtered:
        text += " (filters: %s)" % ", ".join(repr(w[:80]) for w in filtered[:3])
    return text


def _function_name() -> str:
    return os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")


#: The control connection of this process.
link = ControlLink()
