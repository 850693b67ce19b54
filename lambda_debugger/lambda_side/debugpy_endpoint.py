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

import itertools
import logging
import time
from typing import List, Optional, Sequence, Tuple

from lambda_debugger.wire import dap, prefetch, push
from lambda_debugger.wire.endpoints import SocketEndpoint

log = logging.getLogger("lambda_debugger.relay")

#: Requests pydevd runs on the stopped thread (``post_method_as_internal_command``).
ON_STOPPED_THREAD = frozenset({"variables", "evaluate", "setVariable", "setExpression", "completions", "exceptionInfo"})

#: Sequence numbers of the replayed configuration after a restart; the
#: collector's range, so that no answer to them reaches the bridge.
REPLAY_SEQ = prefetch.COLLECTOR_SEQ + 500_000_000

#: A push or restart request larger than this is refused unread
#: (base64 of the largest push, and the IDE's configuration).
MAX_OWN_REQUEST_BYTES = push.MAX_BYTES * 2 + 1024 * 1024

#: What one read hands the broker at most (one WebSocket frame), unless a
#: single message is larger.
READ_BYTES = 256 * 1024

#: Before the IDE's configuration: what goes to debugpy while a push is awaited.
BEFORE_CONFIGURATION = frozenset({"initialize", "attach"})

_reply_seq = itertools.count(dap.OWN_SEQ + 500_000_000)


def _is_own_request(head: dict) -> bool:
    return head.get("type") == "request" and head.get("command") in (push.PUSH_COMMAND, push.RESTART_COMMAND)


def _before_configuration(chunk: dap.Chunk) -> bool:
    return chunk.whole and chunk.head.get("type") == "request" and chunk.head.get("command") in BEFORE_CONFIGURATION


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
    """The child's debugpy as the pump's endpoint (see :mod:`lambda_debugger.wire.relay`).

    It also takes the bridge's own requests out of the stream (options,
    push, restart) and hands them to the session as :attr:`actions`. With
    ``gated``, the IDE's requests from the first one past ``initialize`` and
    ``attach`` are held until :meth:`open_gate`: a push must be applied
    before debugpy reads the breakpoints. ``replay`` (the IDE's
    configuration, after a restart) goes to debugpy first when the gate
    opens; debugpy's answers to it are kept from the bridge.

    Attributes:
        actions: ``(command, request)`` pairs for the session, in order:
            ``options`` (``request`` None when the bridge sent none), ``push``
            and ``restart`` (``request`` only ``seq``, ``command`` and
            ``too_large`` when it was too large or not JSON).
    """

    def __init__(
        self, sock, *, gated: bool = False, replay: Sequence[dict] = (), options: Optional[dict] = None
    ) -> None:
        super().__init__(sock, "debugpy", quick_ack=True)
        self.collector = prefetch.StopCollector()
        self.one_at_a_time = OneAtATime()
        self._to_debugpy = dap.MessageSplitter()
        self._from_debugpy = dap.MessageSplitter()
        self._ready: List[bytes] = []  # for the broker, to hand out on the next read
        self._held: List[bytes] = []  # behind a stop whose context is being collected
        self._replies: List[bytes] = []  # the session's own, for the next boundary
        self._dropping = False  # the message being read answers the collector or a replay
        self._draining = False
        self._eof = False
        self.actions: List[Tuple[str, Optional[dict]]] = []
        self.options = options  # the bridge's options, once known (a restarted child's: the first's)
        self._own: Optional[bytearray] = None  # a push or restart request being read
        self._own_too_large = False
        self._restarting = False  # after a restart request: the rest is the next child's
        self.after_restart: List[dap.Chunk] = []
        self._gated = gated
        self._gate_held: List[dap.Chunk] = []
        self._released: List[bytes] = []  # let through between two pump reads, to send first
        self._replay = [dict(r, seq=REPLAY_SEQ + i, type="request") for i, r in enumerate(replay)]
        self._replaying = bool(self._replay)
        self.collector.enabled = bool(options and options.get("prefetch") is True)

    # Towards the broker ---------------------------------------------------

    def has_buffered(self) -> bool:
        return (
            bool(self._ready)
            or (bool(self._replies) and not self._from_debugpy.inside_message)
            or self._eof
            or self.collector.done(time.monotonic())
            or super().has_buffered()
        )

    def control_waiting(self) -> bool:
        return bool(self.actions)

    def reply(self, message: dict) -> None:
        """Send the session's own ``message`` to the bridge, between two of
        debugpy's messages."""
        self._replies.append(dap.encode(dict(message, seq=next(_reply_seq))))

    def due(self) -> Optional[float]:
        times = [t for t in (self.collector.due, self.one_at_a_time.due) if t is not None]
        return min(times) if times else None

    def read(self) -> Optional[bytes]:
        if self._replies and not self._from_debugpy.inside_message:
            self._ready += self._replies
            self._replies.clear()
        if not self._ready and not self._eof and not self.collector.done(time.monotonic()):
            data = super().read()
            if data is None:
                self._eof = True
            else:
                self._take(data)
        if self.collector.holding and (self._eof or self.collector.done(time.monotonic())):
            self._release()
        if self._ready:
            # At most about READ_BYTES per WebSocket frame (the broker bounds a frame's size).
            size, count = 0, 0
            while count < len(self._ready) and (not count or size + len(self._ready[count]) <= READ_BYTES):
                size += len(self._ready[count])
                count += 1
            out = b"".join(self._ready[:count])
            del self._ready[:count]
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
                replayed = self._answers_replay(chunk.head)  # first: it notes the end of the replay
                self._dropping = replayed or self.collector.owns(chunk.head)
            if not self._dropping:
                (self._held if self.collector.holding else self._ready).append(chunk.data)

    def _answers_replay(self, message: dict) -> bool:
        """Whether ``message`` is debugpy's to the replayed configuration
        (the IDE configured the session once already)."""
        if not self._replaying:
            return False
        request_seq = message.get("request_seq")
        if message.get("type") == "response" and isinstance(request_seq, int):
            if request_seq == REPLAY_SEQ + len(self._replay) - 1:
                self._replaying = False  # configurationDone, the last one, is answered
            return REPLAY_SEQ <= request_seq < REPLAY_SEQ + len(self._replay)
        return message.get("event") == "initialized"

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
            if self._own is not None or (chunk.first and _is_own_request(head)):
                self._read_own(chunk)
                continue
            if self._restarting:
                self.after_restart.append(chunk)
                continue
            if chunk.whole and head.get("type") == "request" and head.get("command") == prefetch.OPTIONS_COMMAND:
                arguments = head.get("arguments")
                arguments = arguments if isinstance(arguments, dict) else {}
                self.collector.enabled = arguments.get("prefetch") is True
                if self.options is None:
                    self.options = arguments
                    self.actions.append(("options", head))
                continue  # the bridge's, not debugpy's
            if self.options is None and chunk.first:
                self.options = {}  # a bridge that sends no options: no push
                self.actions.append(("options", None))
            if self._gated and (self._gate_held or not (_before_configuration(chunk) or chunk.unparsed)):
                self._gate_held.append(chunk)
                continue
            out += self._to_one_at_a_time(chunk, now)
        if self._to_debugpy.broken:
            self._give_up_prefetch("the debugger's stream is not DAP as expected")
        return out

    def _to_one_at_a_time(self, chunk: dap.Chunk, now: float) -> List[bytes]:
        head = chunk.head
        if chunk.whole and head.get("type") == "request":
            self.collector.on_request(head)
            if _resumes_one_thread(head):
                chunk = dap.Chunk(_resuming_all(head), head)
        elif chunk.first and not chunk.unparsed:
            self.collector.on_request({})  # too large to read now: it may change anything
        return self.one_at_a_time.add(chunk, now)

    def _read_own(self, chunk: dap.Chunk) -> None:
        """Collect a push or restart request, which may span many chunks."""
        if chunk.first:
            self._own, self._own_too_large = bytearray(), False
        assert self._own is not None
        if not self._own_too_large:
            self._own += chunk.data
            self._own_too_large = len(self._own) > MAX_OWN_REQUEST_BYTES
            if self._own_too_large:
                self._own = bytearray()
        if not chunk.last:
            return
        command = str(chunk.head.get("command"))
        request = None if self._own_too_large else dap.parse_framed(bytes(self._own))
        if request is None:
            request = {"seq": chunk.head.get("seq"), "command": command, "too_large": self._own_too_large}
        self._own = None
        if command == push.RESTART_COMMAND:
            self._restarting = True
        self.actions.append((command, request))

    def take_actions(self) -> List[Tuple[str, Optional[dict]]]:
        actions, self.actions = self.actions, []
        return actions

    def open_gate(self) -> None:
        """Let the held requests go to debugpy, after the replay if any."""
        if not self._gated:
            return
        self._gated = False
        now = time.monotonic()
        for request in self._replay:
            self._released += self.one_at_a_time.add(dap.Chunk(dap.encode(request), request), now)
        for chunk in self._gate_held:
            self._released += self._to_one_at_a_time(chunk, now)
        self._gate_held.clear()

    def after_restart_bytes(self) -> bytes:
        """What the bridge sent after its restart request, as it came (the
        start of a message included): the next debugpy's."""
        return b"".join(c.data for c in self.after_restart) + self._to_debugpy.unemitted()

    def unsent(self) -> bytes:
        """What debugpy sent that the broker did not get yet (a stop held
        for its context included), when the stream ends at a message."""
        if self.collector.holding:
            self._release()
        out = b"".join(self._ready + self._replies)
        self._ready.clear()
        self._replies.clear()
        return out

    def cancel_restart(self) -> None:
        """A refused restart: what came after it goes to this debugpy after all."""
        self._restarting = False
        now = time.monotonic()
        for chunk in self.after_restart:
            if self._gated:
                self._gate_held.append(chunk)
            else:
                self._released += self._to_one_at_a_time(chunk, now)
        self.after_restart = []

    @property
    def inside_message(self) -> bool:
        """Whether what went to the bridge so far ends inside one of debugpy's messages."""
        return self._from_debugpy.inside_message

    def take_outgoing(self) -> bytes:
        out, self._released = self._released, []
        out += self.one_at_a_time.release(time.monotonic(), everything=self._draining)
        # A question must not land inside a message, nor in a stream that is not DAP.
        if not self.one_at_a_time.sent_inside_message and not self._to_debugpy.broken:
            out += self.collector.take_requests()
        return b"".join(out)

    def drain(self) -> None:
        """From now on, send debugpy everything at once: the debugger is
        leaving, and its last requests must not wait behind a slow one."""
        self._draining = True
