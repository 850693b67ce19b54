"""The proxy's connection to the child's debugpy, with prefetch on stop.

Both directions are cut at message boundaries (a message passes once whole;
a large one streams through). Once the bridge has asked for prefetch (its
first message), when debugpy reports a stop, what it sends is held back while :class:`StopCollector` asks it, at
local latency, what the IDE is about to ask; the answers go to the bridge
first, then the held messages, in their order. The collector's questions and
their answers never reach the IDE.

The requests that pydevd runs on the stopped thread go to it one at a time
(:class:`OneAtATime`): pydevd takes them from a queue that the thread polls,
and a second one queued with the first waits 0.2 s for the next poll. VS
Code sends its watch expressions together, so each stop would pay that wait.
"""

import logging
import time
from typing import List, Optional, Tuple

from lambda_debugger.wire import dap, prefetch
from lambda_debugger.wire.endpoints import SocketEndpoint

log = logging.getLogger("lambda_debugger.relay")

#: Requests pydevd runs on the stopped thread (``post_method_as_internal_command``).
ON_STOPPED_THREAD = frozenset({"variables", "evaluate", "setVariable", "setExpression", "completions", "exceptionInfo"})

#: How long requests wait behind one that debugpy has not answered; after
#: that they go anyway (pydevd queues them as before).
ONE_AT_A_TIME_S = 0.5


def _resumes_one_thread(request: dict) -> bool:
    """Whether ``request`` is a ``continue`` that pydevd before debugpy
    1.8.21 would apply to the named thread alone, leaving the others that
    the stop suspended suspended for good (debugpy's separate adapter, which
    the chain does without, used to send ``*``). DAP resumes every thread
    unless ``singleThread`` says otherwise; 1.8.21 and later do so too."""
    arguments = request.get("arguments")
    return (
        request.get("command") == "continue"
        and isinstance(arguments, dict)
        and not arguments.get("singleThread")
        and arguments.get("threadId") != "*"
    )


def _resuming_all(request: dict) -> bytes:
    return dap.encode(dict(request, arguments=dict(request["arguments"], threadId="*")))


class OneAtATime:
    """Holds what goes to debugpy behind a request it runs on the stopped
    thread, until debugpy answers that request (or :data:`ONE_AT_A_TIME_S`
    passes). The order of the stream never changes."""

    def __init__(self) -> None:
        self._running: Optional[int] = None  # seq of the request debugpy runs
        self._until = 0.0
        self._held: List[Tuple[bytes, Optional[int], bool]] = []  # data, seq if one at a time, ends a message
        #: Whether what went to debugpy so far ends inside a message.
        self.sent_inside_message = False

    def add(self, chunk: dap.Chunk, now: float) -> List[bytes]:
        """A chunk on its way to debugpy; returns what may go now."""
        head = chunk.head
        seq = head.get("seq") if chunk.whole and head.get("type") == "request" else None
        command = head.get("command")
        if not isinstance(seq, int) or not isinstance(command, str) or command not in ON_STOPPED_THREAD:
            seq = None
        self._held.append((chunk.data, seq, chunk.last))
        return self.release(now)

    def answered(self, response: dict) -> None:
        """A response from debugpy."""
        if self._running is not None and response.get("request_seq") == self._running:
            self._running = None

    def release(self, now: float, everything: bool = False) -> List[bytes]:
        """What may go to debugpy now (with ``everything``: all that is held,
        e.g. the last requests of a debugger that leaves)."""
        if self._running is not None and (everything or now >= self._until):
            self._running = None  # not answered in time: stop holding for it
        out = []
        while self._held and (self._running is None or everything):
            data, seq, last = self._held.pop(0)
            out.append(data)
            self.sent_inside_message = not last
            if seq is not None:
                self._running, self._until = seq, now + ONE_AT_A_TIME_S
        return out

    @property
    def due(self) -> Optional[float]:
        return self._until if self._running is not None and self._held else None


class DebugpyEndpoint(SocketEndpoint):
    """The child's debugpy as the pump's endpoint (see :mod:`lambda_debugger.wire.relay`)."""

    def __init__(self, sock) -> None:
        super().__init__(sock, "debugpy", quick_ack=True)
        self.collector = prefetch.StopCollector()
        self.one_at_a_time = OneAtATime()
        self._to_debugpy = dap.MessageSplitter()
        self._from_debugpy = dap.MessageSplitter()
        self._ready: List[bytes] = []  # for the broker, to hand out on the next read
        self._held: List[bytes] = []  # behind a stop whose context is being collected
        self._dropping = False  # the message being read answers the collector
        self._draining = False
        self._eof = False

    # Towards the broker ---------------------------------------------------

    def has_buffered(self) -> bool:
        return bool(self._ready) or self._eof or self.collector.done(time.monotonic()) or super().has_buffered()

    def due(self) -> Optional[float]:
        times = [t for t in (self.collector.due, self.one_at_a_time.due) if t is not None]
        return min(times) if times else None

    def read(self) -> Optional[bytes]:
        if not self._ready and not self._eof and not self.collector.done(time.monotonic()):
            data = super().read()
            if data is None:
                self._eof = True
            else:
                self._take(data)
        if self.collector.holding and (self._eof or self.collector.done(time.monotonic())):
            self._release()
        if self._ready:
            out = b"".join(self._ready)
            self._ready.clear()
            return out
        return None if self._eof else b""

    def _take(self, data: bytes) -> None:
        now = time.monotonic()
        for chunk in self._from_debugpy.feed(data):
            if self._from_debugpy.broken:
                self._give_up_prefetch("debugpy's stream is not DAP as expected")
            if chunk.first:
                self.one_at_a_time.answered(chunk.head)
                self.collector.on_debugpy_message(chunk.head, now, whole=chunk.last)
                self._dropping = self.collector.owns(chunk.head)
            if not self._dropping:
                (self._held if self.collector.holding else self._ready).append(chunk.data)

    def _release(self) -> None:
        context = self.collector.finish()
        if context:
            self._ready.append(context)
        self._ready += self._held
        self._held.clear()

    def _give_up_prefetch(self, why: str) -> None:
        if self.collector.enabled:
            log.warning("prefetch off for this session: %s", why)
            self.collector.enabled = False
            if self.collector.holding:
                self._release()

    # Towards debugpy ------------------------------------------------------

    def frame(self, data: bytes):
        now = time.monotonic()
        out: List[bytes] = []
        for chunk in self._to_debugpy.feed(data):
            head = chunk.head
            if chunk.whole and head.get("type") == "request":
                if head.get("command") == prefetch.OPTIONS_COMMAND:
                    arguments = head.get("arguments")
                    self.collector.enabled = isinstance(arguments, dict) and arguments.get("prefetch") is True
                    continue  # the bridge's, not debugpy's
                self.collector.on_request(head)
                if _resumes_one_thread(head):
                    chunk = dap.Chunk(_resuming_all(head), head)
            elif chunk.first and not chunk.unparsed:
                self.collector.on_request({})  # too large to read now: it may change anything
            out += self.one_at_a_time.add(chunk, now)
        if self._to_debugpy.broken:
            self._give_up_prefetch("the debugger's stream is not DAP as expected")
        return out

    def take_outgoing(self) -> bytes:
        out = self.one_at_a_time.release(time.monotonic(), everything=self._draining)
        # A question must not land inside a message, nor in a stream that is not DAP.
        if not self.one_at_a_time.sent_inside_message and not self._to_debugpy.broken:
            out += self.collector.take_requests()
        return b"".join(out)

    def drain(self) -> None:
        """From now on, send debugpy everything at once: the debugger is
        leaving, and its last requests must not wait behind a slow one."""
        self._draining = True
