"""The proxy's connection to the child's debugpy, with prefetch on stop.

Both directions are cut at message boundaries (a message passes once whole;
a large one streams through). Once the bridge has asked for prefetch (its
first message), when debugpy reports a stop, what it sends is held back while :class:`StopCollector` asks it, at
local latency, what the IDE is about to ask; the answers go to the bridge
first, then the held messages, in their order. The collector's questions and
their answers never reach the IDE.
"""

import logging
import time
from typing import List, Optional

from lambda_debugger.wire import dap, prefetch
from lambda_debugger.wire.endpoints import SocketEndpoint

log = logging.getLogger("lambda_debugger.relay")


class DebugpyEndpoint(SocketEndpoint):
    """The child's debugpy as the pump's endpoint (see :mod:`lambda_debugger.wire.relay`)."""

    def __init__(self, sock) -> None:
        super().__init__(sock, "debugpy", quick_ack=True)
        self.collector = prefetch.StopCollector()
        self._to_debugpy = dap.MessageSplitter()
        self._from_debugpy = dap.MessageSplitter()
        self._ready: List[bytes] = []  # for the broker, to hand out on the next read
        self._held: List[bytes] = []  # behind a stop whose context is being collected
        self._dropping = False  # the message being read answers the collector
        self._eof = False
        self.stops_collected = 0

    # Towards the broker ---------------------------------------------------

    def has_buffered(self) -> bool:
        return bool(self._ready) or self._eof or self.collector.done(time.monotonic()) or super().has_buffered()

    def due(self) -> Optional[float]:
        return self.collector.due

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
                self.collector.on_debugpy_message(chunk.head, now, whole=chunk.last)
                self._dropping = self.collector.owns(chunk.head)
            if not self._dropping:
                (self._held if self.collector.holding else self._ready).append(chunk.data)

    def _release(self) -> None:
        context = self.collector.finish()
        if context:
            self.stops_collected += 1
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
        chunks = self._to_debugpy.feed(data)
        out: List[bytes] = []
        for chunk in chunks:
            head = chunk.head
            if chunk.first and head.get("type") == "request":
                if head.get("command") == prefetch.OPTIONS_COMMAND and chunk.last:
                    self.collector.enabled = bool((head.get("arguments") or {}).get("prefetch"))
                    continue  # the bridge's, not debugpy's
                self.collector.on_request(head)
            out.append(chunk.data)
        if self._to_debugpy.broken:
            self._give_up_prefetch("the debugger's stream is not DAP as expected")
        return out

    def take_outgoing(self) -> bytes:
        if self._to_debugpy.inside_message:
            return b""  # a question must not land inside the debugger's message
        return b"".join(self.collector.take_requests())
