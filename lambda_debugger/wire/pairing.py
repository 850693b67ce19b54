"""The wait for a pairing message on a broker connection, shared by both
ends: the proxy waits for a debugger, the attach bridge for an invocation.

One step of the wait answers pings, pings a broker that stays quiet (and
gives it up after two keepalive intervals of silence), hands notices to the
endpoint's ``on_control`` and returns at the first other control message,
at a closed connection, at ``until``, or when something the caller watches
becomes readable.
"""

import enum
import select
import socket
import time
from typing import Any, Optional, Sequence, Tuple

from lambda_debugger.wire import protocol
from lambda_debugger.wire.endpoints import WebSocketEndpoint

#: Longest a step sleeps before it checks the broker's keepalive.
TICK_S = 1.0


class Waited(enum.Enum):
    """Why :func:`wait_step` returned."""

    MESSAGE = "message"  # a control message other than a notice came
    CLOSED = "closed"  # the broker closed the connection (see its close_code)
    TIMEOUT = "timeout"  # ``until`` passed
    WATCHED = "watched"  # something the caller watches became readable
    SILENT = "silent"  # the broker answered no ping for two keepalive intervals


def wait_step(
    broker: WebSocketEndpoint, until: float, *, watch: Sequence[Any] = ()
) -> Tuple[Waited, Optional[protocol.Message]]:
    """Wait on ``broker`` until ``until`` (a ``time.monotonic()`` value) for
    the next control message; see the module docstring.

    Raises:
        protocol.ProtocolError: debug bytes or a malformed message came.
        OSError: as raised by the socket.
    """
    while True:
        now = time.monotonic()
        if now >= until:
            return Waited.TIMEOUT, None
        # A message already read (two can come in one read) is taken at once.
        if not broker.has_buffered():
            readable = select.select([broker, *watch], [], [], min(TICK_S, until - now))[0]
            if any(item in readable for item in watch):
                return Waited.WATCHED, None
            if broker not in readable:
                if not broker.keepalive_unpumped(time.monotonic()):
                    return Waited.SILENT, None
                continue
        try:
            # A ping alone makes the socket readable: wait a moment for a
            # message, not a whole socket timeout.
            message = broker.receive_control(deadline=min(until, time.monotonic() + TICK_S))
        except (socket.timeout, TimeoutError):
            continue
        if message is None:
            return Waited.CLOSED, None
        if isinstance(message, protocol.Notice):
            if broker.on_control is not None:
                broker.on_control(message)
            continue
        return Waited.MESSAGE, message
