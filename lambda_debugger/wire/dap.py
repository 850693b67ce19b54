"""The one place the relay looks at DAP itself.

The debug stream is opaque bytes everywhere else. Three things need DAP:

* when the debugger side vanishes, the proxy speaks to debugpy on its own:
  pydevd keeps a thread stopped at a breakpoint until a client says
  ``disconnect``, so a vanished IDE would leave the handler suspended until
  the Lambda timeout;
* the attach bridge pairs an IDE connection with an invocation only once the
  IDE has sent a whole DAP message, so that a port probe costs nothing;
* the attach bridge speaks to the IDE for the adapter it stands in for:
  ``output`` events (time left before the Lambda timeout), which must fall
  between two messages, and, when the session ends under the IDE, what
  debugpy's own adapter would send (:meth:`Conversation.ending`).

:class:`MessageReader` owns the framing, :class:`Conversation` the requests
still unanswered and the sequence numbers of the bridge's own messages.
"""

import itertools
import json
import re
import socket
import time
from typing import Dict, List, Optional, Set

#: DAP sequence numbers of our own messages, far from any IDE's or adapter's.
OWN_SEQ = 1_000_000_000

#: Bodies up to this size are parsed whole. Of a larger one (a big evaluate
#: result) only the head is kept, where debugpy writes type and request_seq.
PARSE_WHOLE_BYTES = 256 * 1024
HEAD_BYTES = 1024

#: Requests whose failure means the debug session did not start.
START_REQUESTS = ("initialize", "attach", "launch")

_HEAD_FIELD = re.compile(rb'"(type|event|command)"\s*:\s*"([A-Za-z_]+)"|"(seq|request_seq)"\s*:\s*(\d+)')


def encode(message: dict) -> bytes:
    """One DAP message with its Content-Length header."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class MessageReader:
    """Follows DAP framing (``Content-Length`` header, blank line, body)
    over a byte stream fed in arbitrary pieces, and returns each whole
    message as a dict (of a large one, just its head fields).

    ``at_boundary`` says whether the bytes fed so far end with a whole
    message: only then may another message be put into the stream.
    """

    MAX_HEADER_BYTES = 8 * 1024

    def __init__(self) -> None:
        self._header = bytearray()
        self._body = bytearray()
        self._body_left = 0
        self._keep = 0  # bytes of the current body kept for parsing
        self._whole = False  # whether the kept bytes are the whole body
        #: Set when the stream is not DAP as expected; nothing is injected then.
        self.broken = False

    @property
    def at_boundary(self) -> bool:
        return not self.broken and not self._header and not self._body_left

    def feed(self, data) -> List[dict]:
        """Take the next bytes of the stream; return the messages they complete."""
        messages = []
        view = memoryview(data)
        while view and not self.broken:
            if self._body_left:
                step = min(self._body_left, len(view))
                room = self._keep - len(self._body)
                if room > 0:
                    self._body += view[: min(room, step)]
                self._body_left -= step
                view = view[step:]
                if not self._body_left:
                    messages.append(self._message())
                continue
            end = bytes(self._header[-3:] + view[:4096]).find(b"\r\n\r\n")
            if end < 0:
                take = min(len(view), 4096)
                self._header += view[:take]
                view = view[take:]
                if len(self._header) > self.MAX_HEADER_BYTES:
                    self.broken = True
                continue
            used = end + 4 - min(3, len(self._header))
            self._header += view[:used]
            view = view[used:]
            self._body_left = self._content_length(bytes(self._header))
            self._header.clear()
            self._whole = self._body_left <= PARSE_WHOLE_BYTES
            self._keep = self._body_left if self._whole else HEAD_BYTES
            if not self._body_left and not self.broken:
                messages.append(self._message())
        return messages

    def _content_length(self, header: bytes) -> int:
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                return int(value)
        self.broken = True
        return 0

    def _message(self) -> dict:
        body, self._body = bytes(self._body), bytearray()
        if self._whole:
            try:
                message = json.loads(body)
            except ValueError:
                return {}
            return message if isinstance(message, dict) else {}
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
        self.from_ide = MessageReader()
        self.from_adapter = MessageReader()
        self.pending: Dict[int, str] = {}
        self.messages_from_ide = 0
        self._adapter_events: Set[str] = set()  # session-end events the adapter sent itself
        self._seq = itertools.count(OWN_SEQ)

    def ide_sent(self, data) -> List[dict]:
        """Bytes from the IDE; returns the requests they complete."""
        messages = self.from_ide.feed(data)
        self.messages_from_ide += len(messages)
        requests = [m for m in messages if m.get("type") == "request"]
        for request in requests:
            if isinstance(request.get("seq"), int):
                self.pending[request["seq"]] = str(request.get("command", ""))
        return requests

    def adapter_sent(self, data) -> None:
        """Bytes from the debug adapter, on their way to the IDE."""
        for message in self.from_adapter.feed(data):
            kind = message.get("type")
            if kind == "response" and isinstance(message.get("request_seq"), int):
                self.pending.pop(message["request_seq"], None)
            elif kind == "event" and message.get("event") in ("exited", "terminated"):
                self._adapter_events.add(message["event"])

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
