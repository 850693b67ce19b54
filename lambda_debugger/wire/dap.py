"""The one place the relay reads DAP framing and numbers messages.

Four things need DAP:

* when the debugger side vanishes, the proxy speaks to debugpy on its own:
  pydevd keeps a thread stopped at a breakpoint until a client says
  ``disconnect``, so a vanished IDE would leave the handler suspended until
  the Lambda timeout;
* the attach bridge pairs an IDE connection with an invocation only once the
  IDE has sent a whole DAP message, so that a port probe costs nothing;
* the attach bridge speaks to the IDE for the adapter it stands in for:
  ``output`` events (time left before the Lambda timeout), which must fall
  between two messages, and, when the session ends under the IDE, what
  debugpy's own adapter would send (:meth:`Conversation.ending`);
* prefetch on stop (:mod:`lambda_debugger.wire.prefetch`), which holds,
  drops and answers whole messages on both ends.

:class:`MessageSplitter` owns the framing, :class:`Conversation` the
requests still unanswered and the sequence numbers of the bridge's own
messages.
"""

import itertools
import json
import re
import socket
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Set

#: DAP sequence numbers of our own messages, far from any IDE's or adapter's.
OWN_SEQ = 1_000_000_000

#: Bodies up to this size are parsed whole. Of a larger one (a big evaluate
#: result) only the head is kept, where debugpy writes type and request_seq.
PARSE_WHOLE_BYTES = 256 * 1024
HEAD_BYTES = 1024
TAIL_BYTES = 256

#: Requests whose failure means the debug session did not start.
START_REQUESTS = ("initialize", "attach", "launch")

_HEAD_FIELD = re.compile(rb'"(type|event|command)"\s*:\s*"([A-Za-z_/]+)"|"(seq|request_seq)"\s*:\s*(\d+)')


def encode(message: dict, *, ensure_ascii: bool = True) -> bytes:
    """One DAP message with its Content-Length header (``ensure_ascii``
    False: UTF-8 as it is, the compact form for source text)."""
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=ensure_ascii).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


def parse_framed(data: bytes) -> Optional[dict]:
    """The body of one framed DAP message as a dict, or None."""
    _, _, body = data.partition(b"\r\n\r\n")
    message = _parse(body)
    return message or None


@dataclass
class Chunk:
    """A piece of a DAP stream cut at message boundaries.

    Attributes:
        data: the wire bytes (the first chunk of a message starts with its
            header).
        head: the message as a dict when it is small enough to be parsed
            whole, else the fields found at the start of its body (and, once
            its last chunk is out, at its end: some clients write ``type``
            and ``seq`` last); ``{}`` when unknown. The same object for
            every chunk of one message.
        first / last: whether the chunk starts / ends its message. A small
            message is one chunk.
        unparsed: bytes of a stream that is not DAP as expected.
    """

    data: bytes
    head: dict
    first: bool = True
    last: bool = True
    unparsed: bool = False

    @property
    def whole(self) -> bool:
        """Whether this chunk is a whole message, parsed whole."""
        return self.first and self.last and not self.unparsed


class MessageSplitter:
    """Cuts a DAP byte stream, fed in arbitrary pieces, into chunks at
    message boundaries, so that a relay can forward, hold, drop or answer
    whole messages. A message up to :data:`PARSE_WHOLE_BYTES` comes out as
    one chunk once whole; a larger one (a big evaluate result) streams
    through: one chunk once its head is in, then one per piece fed.

    A stream that is not DAP as expected sets ``broken``; from then on its
    bytes come out unparsed, and nothing may be put into it.
    """

    MAX_HEADER_BYTES = 8 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()  # the current message's bytes not yet emitted
        self._header_bytes = 0  # of the buffer, the header's; 0 while reading it
        self._body_left = 0  # body bytes not yet taken in
        self._whole = True  # whether the current message is parsed whole
        self._head: Optional[dict] = None  # set once the first chunk of a large one is out
        self._tail = b""  # the last bytes of a large one's body so far
        self.broken = False

    @property
    def at_boundary(self) -> bool:
        """Whether the bytes fed so far end with a whole message."""
        return not self.broken and not self._buffer and self._head is None

    @property
    def inside_message(self) -> bool:
        """Whether the chunks emitted so far end inside a message (or the
        stream broke): nothing may be put between them and the next one."""
        return self.broken or self._head is not None

    def unemitted(self) -> bytes:
        """The bytes fed that no chunk carried yet (the start of a message)."""
        return bytes(self._buffer)

    def feed(self, data) -> List[Chunk]:
        """Take the next bytes of the stream; return the chunks they complete."""
        chunks: List[Chunk] = []
        view = memoryview(data)
        whole = data if isinstance(data, bytes) else None  # passed on uncopied where it can be
        while view:
            if self.broken:
                chunks.append(Chunk(bytes(view), {}, unparsed=True))
                break
            if not self._header_bytes:
                view = self._take_header(view, chunks)
            elif self._head is not None:  # the rest of a large message streams through
                step = min(self._body_left, len(view))
                self._body_left -= step
                piece = whole if whole is not None and step == len(whole) else bytes(view[:step])
                self._tail = (self._tail + piece[-TAIL_BYTES:])[-TAIL_BYTES:]
                if not self._body_left:
                    for name, value in _parse_head(self._tail).items():
                        self._head.setdefault(name, value)
                chunks.append(Chunk(piece, self._head, first=False, last=not self._body_left))
                view = view[step:]
                if not self._body_left:
                    self._head = None
                    self._header_bytes = 0
                    self._tail = b""
            else:
                kept = len(self._buffer) - self._header_bytes
                want = self._body_left if self._whole else HEAD_BYTES - kept
                step = min(want, len(view))
                self._buffer += view[:step]
                self._body_left -= step
                view = view[step:]
                if step == want:
                    self._emit_first(chunks)
        return chunks

    def _take_header(self, view: memoryview, chunks: List[Chunk]) -> memoryview:
        tail = len(self._buffer[-3:])
        end = bytes(self._buffer[-3:] + view[:4096]).find(b"\r\n\r\n")
        if end < 0:
            take = min(len(view), 4096)
            self._buffer += view[:take]
            if len(self._buffer) > self.MAX_HEADER_BYTES or not _header_start(self._buffer):
                self._break(chunks)
            return view[take:]
        used = end + 4 - tail
        self._buffer += view[:used]
        length = self._content_length(bytes(self._buffer))
        if length is None:
            self._break(chunks)
            return view[used:]
        self._header_bytes = len(self._buffer)
        self._body_left = length
        self._whole = length <= PARSE_WHOLE_BYTES
        if not length:
            self._emit_first(chunks)
        return view[used:]

    def _emit_first(self, chunks: List[Chunk]) -> None:
        body = bytes(self._buffer[self._header_bytes :])
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._whole:
            chunks.append(Chunk(data, _parse(body)))
            self._header_bytes = 0
        else:
            self._head = _parse_head(body)
            chunks.append(Chunk(data, self._head, last=False))

    def _break(self, chunks: List[Chunk]) -> None:
        self.broken = True
        chunks.append(Chunk(bytes(self._buffer), {}, unparsed=True))
        self._buffer.clear()

    @staticmethod
    def _content_length(header: bytes) -> Optional[int]:
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                return int(value)
        return None


def _header_start(header: bytearray) -> bool:
    """Whether ``header`` can begin a DAP header: its first field is
    ``Content-Length`` (or ``Content-Type``), so that bytes that are not DAP
    are found out at once rather than held while waiting for a blank line."""
    first = bytes(header[:16]).split(b"\r", 1)[0].lower()
    return any(name.startswith(first[: len(name)]) for name in (b"content-length:", b"content-type:"))


def _parse(body: bytes) -> dict:
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        return {}
    return message if isinstance(message, dict) else {}


def _parse_head(body: bytes) -> dict:
    head: dict = {}
    for match in _HEAD_FIELD.finditer(body):
        if match.group(1):
            head.setdefault(match.group(1).decode(), match.group(2).decode())
        else:
            head.setdefault(match.group(3).decode(), int(match.group(4)))
    return head


class Conversation:
    """One IDE's DAP conversation with the debug adapter the bridge stands
    in for: feed it what each side sends; it knows which requests wait for
    an answer and makes the bridge's own messages.

    Attributes:
        from_ide / from_adapter: the framing of each direction.
        pending: seq -> command of the IDE's requests not answered yet.
        messages_from_ide: whole messages the IDE has sent so far.
    """

    def __init__(self) -> None:
        self.from_ide = MessageSplitter()
        self.from_adapter = MessageSplitter()
        self.pending: Dict[int, str] = {}
        self.messages_from_ide = 0
        self._adapter_events: Set[str] = set()  # session-end events the adapter sent itself
        self._seq = itertools.count(OWN_SEQ)

    def next_seq(self) -> int:
        """A sequence number for a message of the bridge's own."""
        return next(self._seq)

    def ide_chunks(self, data) -> List[Chunk]:
        """Bytes from the IDE, cut into chunks at message boundaries."""
        chunks = self.from_ide.feed(data)
        for chunk in chunks:
            if chunk.last and not chunk.unparsed:
                self.messages_from_ide += 1
                if chunk.head.get("type") == "request" and isinstance(chunk.head.get("seq"), int):
                    self.pending[chunk.head["seq"]] = str(chunk.head.get("command", ""))
        return chunks

    def ide_sent(self, data) -> List[dict]:
        """Bytes from the IDE; returns the requests they complete."""
        return [c.head for c in self.ide_chunks(data) if c.last and c.head.get("type") == "request"]

    def adapter_chunks(self, data) -> List[Chunk]:
        """Bytes from the debug adapter, on their way to the IDE, cut into
        chunks at message boundaries."""
        chunks = self.from_adapter.feed(data)
        for chunk in chunks:
            if not chunk.first:
                continue
            head = chunk.head
            kind = head.get("type")
            if kind == "response" and isinstance(head.get("request_seq"), int):
                self.pending.pop(head["request_seq"], None)
            elif kind == "event" and head.get("event") in ("exited", "terminated"):
                self._adapter_events.add(head["event"])
        return chunks

    @property
    def may_insert(self) -> bool:
        """Whether a message of the bridge's own may go to the IDE now:
        what went to it so far ends with a whole message."""
        return not self.from_adapter.inside_message

    def respond(self, response: dict) -> bytes:
        """``response`` (to one of the IDE's requests, made by the bridge)
        framed, with a sequence number of the bridge's own."""
        self.pending.pop(response["request_seq"], None)
        return encode(dict(response, seq=next(self._seq)))

    def output(self, text: str, category: str = "console") -> bytes:
        """An ``output`` event of the bridge's own, framed."""
        return encode(
            {"seq": next(self._seq), "type": "event", "event": "output", "body": {"category": category, "output": text}}
        )

    def answer(self, seq: int, command: str, error: Optional[str] = None) -> bytes:
        """The response to the IDE's request ``seq``: success, or the
        ``error`` message (VS Code shows it in a dialog)."""
        self.pending.pop(seq, None)
        response = {
            "seq": next(self._seq),
            "type": "response",
            "request_seq": seq,
            "command": command,
            "success": error is None,
        }
        if error is not None:
            response["message"] = error
            if command in START_REQUESTS:  # the reason the session never started: shown in a dialog
                response["body"] = {"error": {"id": 1, "format": error, "showUser": True}}
        return encode(response)

    def ending(self, why: str, exit_code: Optional[int] = None) -> bytes:
        """What debugpy's adapter tells an IDE whose session ends: an
        ``output`` event that says ``why``, an error response to every
        request still pending, ``exited`` (with ``exit_code``, when there is
        one) and ``terminated``; the last two only where the adapter did not
        send them itself.

        The responses come before ``terminated``, after which an IDE expects
        nothing but the answer to its ``disconnect``.
        """
        parts = [self.output("lambda-debugger: %s\n" % why)]
        for seq, command in sorted(self.pending.items()):
            parts.append(self.answer(seq, command, error=why))
        if exit_code is not None and "exited" not in self._adapter_events:
            parts.append(
                encode({"seq": next(self._seq), "type": "event", "event": "exited", "body": {"exitCode": exit_code}})
            )
        if "terminated" not in self._adapter_events:
            parts.append(encode({"seq": next(self._seq), "type": "event", "event": "terminated", "body": {}}))
        return b"".join(parts)


def release_debuggee(port: int, timeout: float = 2.0) -> bool:
    """Tell the debugpy listening on 127.0.0.1:``port`` that the debugger has
    gone, so that the handler runs on. A new connection replaces the old
    one in pydevd, and its ``disconnect`` resumes every thread.

    Returns whether debugpy answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(
                encode(
                    {
                        "seq": OWN_SEQ,
                        "type": "request",
                        "command": "disconnect",
                        "arguments": {"restart": False, "terminateDebuggee": False},
                    }
                )
            )
            received = b""
            while b'"command":"disconnect"' not in received.replace(b" ", b""):
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            return b'"disconnect"' in received
    except OSError:
        return False
