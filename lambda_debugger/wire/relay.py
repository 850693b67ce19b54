"""The one relay pump: moves bytes both ways between two endpoints.

The Lambda proxy (broker WebSocket <-> child's debugpy socket) and the attach
bridge (IDE socket <-> broker WebSocket) both use :class:`Pump`. Endpoints
are thin adapters (see :mod:`lambda_debugger.wire.endpoints`) with this interface:

* ``fileno()`` for ``select``;
* ``has_buffered()``: bytes already read into user space (TLS records);
* ``read()``: payload ``bytes`` (maybe empty, e.g. after a ping) or ``None``
  at EOF; called only when readable;
* ``frame(data)``: the buffers of wire bytes that carry ``data`` (a
  WebSocket frame's header and payload, or ``data`` itself on plain TCP);
* ``take_outgoing()``: wire bytes the endpoint itself must send (pongs);
* ``control_waiting()``: it holds something for the caller (a control
  message read, or a request taken out of the stream it was given);
* ``due()``: when (``time.monotonic()``) it will have something to do
  (bytes to hand out or to send) without its socket becoming ready, or None;
* ``send(buffer)``: one non-blocking-ish write; returns bytes written.

Writes never block the loop: each direction has a bounded queue of wire
bytes, and a source is not read while its target's queue is full, so a peer
that stops reading slows its sender down instead of growing memory.
"""

import collections
import logging
import select
import time
from dataclasses import dataclass
from typing import Deque, Optional, Sequence

log = logging.getLogger("lambda_debugger.relay")

#: Why :meth:`Pump.run` returned.
CLOSED = "closed"  # an endpoint reached EOF or failed
DEADLINE = "deadline"  # the deadline passed
CONTROL = "control"  # an endpoint stopped at a control message for the caller
WATCH = "watch"  # a watched descriptor became readable

#: Wire bytes queued for one target before its source is no longer read.
HIGH_WATER_BYTES = 1024 * 1024

#: After one side closes, how long the other may take to receive what is queued.
FLUSH_S = 2.0


@dataclass
class PumpResult:
    """How a :meth:`Pump.run` call ended.

    Attributes:
        reason: ``closed``, ``deadline``, ``watch`` or ``control``.
        endpoint: the endpoint that closed or holds the control message.
        error: the exception that closed it, if any.
    """

    reason: str
    endpoint: object = None
    error: Optional[BaseException] = None


class Outbox:
    """Wire bytes waiting for one target, as a queue of buffers: sending
    part of a buffer never moves the rest in memory."""

    def __init__(self):
        self._buffers: Deque[bytes] = collections.deque()
        self._offset = 0  # bytes of the first buffer already sent
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        if data:
            self._buffers.append(data)
            self._size += len(data)

    def extend(self, buffers) -> None:
        for data in buffers:
            self.append(data)

    def send_to(self, target) -> None:
        """One ``target.send`` of the oldest bytes."""
        head = self._buffers[0]
        sent = target.send(memoryview(head)[self._offset :])
        self._size -= sent
        self._offset += sent
        if self._offset == len(head):
            self._buffers.popleft()
            self._offset = 0


class Pump:
    """Relays between endpoints ``a`` and ``b``; can be run, stopped at a
    watched descriptor or deadline, and run again without losing a byte.

    Attributes:
        bytes_a_to_b / bytes_b_to_a: payload bytes moved so far.
    """

    def __init__(self, a, b, *, high_water: int = HIGH_WATER_BYTES):
        self.a, self.b = a, b
        self.high_water = high_water
        self.bytes_a_to_b = 0
        self.bytes_b_to_a = 0
        self._queues = {a: Outbox(), b: Outbox()}  # wire bytes to send to the key
        self._peer = {a: b, b: a}

    def run(self, *, deadline: Optional[float] = None, watch: Sequence = ()) -> PumpResult:
        """Relay until an endpoint closes, ``deadline`` (a ``time.monotonic()``
        value) passes, or one of ``watch`` (objects with ``fileno()``)
        becomes readable. Endpoint failures are reported, never raised."""
        debug = log.isEnabledFor(logging.DEBUG)
        for endpoint in (self.a, self.b):
            if endpoint.control_waiting():
                return PumpResult(CONTROL, endpoint)
        while True:
            for endpoint in (self.a, self.b):
                self._queues[endpoint].append(endpoint.take_outgoing())
            sources = [e for e in (self.a, self.b) if len(self._queues[self._peer[e]]) < self.high_water]
            buffered = [e for e in sources if e.has_buffered()]
            targets = [e for e in (self.a, self.b) if len(self._queues[e])]
            timeout: Optional[float] = 0 if buffered else None
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0 and not buffered:
                    return PumpResult(DEADLINE)
                timeout = max(0, left) if timeout is None else 0
            for endpoint in (self.a, self.b):
                due = endpoint.due()
                wait = None if due is None else due - time.monotonic()
                # What has come due for a source is read at once; for an
                # endpoint not read now (its target is full), it waits.
                if wait is not None and (wait > 0 or endpoint in sources):
                    timeout = max(0.0, wait) if timeout is None else min(timeout, max(0.0, wait))
            readable, writable, _ = select.select([*sources, *watch], targets, [], timeout)
            if not (readable or writable or buffered):
                if deadline is not None and time.monotonic() >= deadline:
                    return PumpResult(DEADLINE)
                buffered = [e for e in sources if e.has_buffered()]  # an endpoint came due
            if any(w in readable for w in watch):
                return PumpResult(WATCH)
            for target in writable:
                try:
                    self._queues[target].send_to(target)
                except (BlockingIOError, InterruptedError):
                    continue
                except Exception as exc:
                    return PumpResult(CLOSED, target, exc)
            for source in set(readable) | set(buffered):
                target = self._peer[source]
                try:
                    data = source.read()
                except Exception as exc:  # a dead peer ends the relay, not the process
                    self.flush(target)
                    return PumpResult(CLOSED, source, exc)
                if data is None:
                    self.flush(target)
                    return PumpResult(CLOSED, source)
                if data:
                    if source is self.a:
                        self.bytes_a_to_b += len(data)
                    else:
                        self.bytes_b_to_a += len(data)
                    try:
                        self._queues[target].extend(target.frame(data))
                    except Exception as exc:  # a stream the endpoint cannot take ends the relay
                        return PumpResult(CLOSED, target, exc)
                    if debug:
                        log.debug("relayed %d bytes %s -> %s", len(data), source, target)
                    if target.control_waiting():  # e.g. a request for the caller, taken out of the stream
                        return PumpResult(CONTROL, target)
                if source.control_waiting():
                    return PumpResult(CONTROL, source)

    def flush(self, target, timeout: float = FLUSH_S) -> bool:
        """Send what is queued for ``target``, for at most ``timeout`` s.
        Returns whether everything went out."""
        queue = self._queues[target]
        queue.append(target.take_outgoing())
        until = time.monotonic() + timeout
        while len(queue):
            left = until - time.monotonic()
            if left <= 0 or not select.select([], [target], [], left)[1]:
                return False
            try:
                queue.send_to(target)
            except (BlockingIOError, InterruptedError):
                continue
            except Exception:
                return False
        return True

    def enqueue(self, target, data: bytes) -> None:
        """Queue payload ``data`` for ``target``, e.g. bytes read before the
        pump existed."""
        self._queues[target].extend(target.frame(data))

    def queued(self, target) -> int:
        """Wire bytes waiting to be sent to ``target``."""
        return len(self._queues[target])
