"""The one place the relay looks at DAP itself.

The debug stream is opaque bytes everywhere else. Only when the debugger
side vanishes does the proxy speak to debugpy on its own: pydevd keeps a
thread stopped at a breakpoint until a client says ``disconnect``, so a
vanished IDE would leave the handler suspended until the Lambda timeout.
"""

import json
import socket
import time

#: DAP sequence numbers of our own requests, far from any IDE's.
OWN_SEQ = 1_000_000_000


def encode(message: dict) -> bytes:
    """One DAP message with its Content-Length header."""
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


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
