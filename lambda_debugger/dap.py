"""The one place the relay looks at DAP itself.

The debug stream is opaque bytes everywhere else. Two things need DAP:

* when the debugger side vanishes, the proxy speaks to debugpy on its own:
  pydevd keeps a thread stopped at a breakpoint until a client says
  ``disconnect``, so a vanished IDE would leave the handler suspended until
  the Lambda timeout;
* the attach bridge adds ``output`` events to the IDE's stream (time left
  before the Lambda timeout), which must fall between two messages.
"""

import json
import socket
import time
from typing import List, Optional

#: DAP sequence numbers of our own requests, far from any IDE's.
OWN_SEQ = 1_000_000_000


def encode(message: dict) -> bytes:
    """One DAP message with its Content-Length header."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


class MessageBoundaries:
    """Follows DAP framing (``Content-Length`` header, blank line, body)
    over a byte stream fed in arbitrary pieces, without keeping the bodies.

    ``at_boundary`` says whether the bytes fed so far end with a whole
    message: only then may another message be put into the stream.
    """

    MAX_HEADER_BYTES = 8 * 1024

    def __init__(self) -> None:
        self._header = bytearray()
        self._body_left = 0
        #: Set when the stream is not DAP as expected; nothing is injected then.
        self.broken = False

    @property
    def at_boundary(self) -> bool:
        return not self.broken and not self._header and not self._body_left

    def feed(self, data) -> None:
        view = memoryview(data)
        while view and not self.broken:
            if self._body_left:
                step = min(self._body_left, len(view))
                self._body_left -= step
                view = view[step:]
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

    def _content_length(self, header: bytes) -> int:
        for line in header.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length" and value.strip().isdigit():
                return int(value)
        self.broken = True
        return 0


def output_event(text: str, category: str = "console", seq: int = OWN_SEQ) -> bytes:
    """A DAP ``output`` event, framed."""
    return encode({"seq": seq, "type": "event", "event": "output",
                   "body": {"category": category, "output": text}})


def release_debuggee(port: int, timeout: float = 2.0) -> bool:
    """Tell the debugpy listening on 127.0.0.1:``port`` that the debugger has
    gone, so that the handler runs on. A new connection replaces the old
    one in pydevd, and its ``disconnect`` resumes every thread.

    Returns whether debugpy answered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(encode({
                "seq": OWN_SEQ, "type": "request", "command": "disconnect",
                "arguments": {"restart": False, "terminateDebuggee": False},
            }))
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
