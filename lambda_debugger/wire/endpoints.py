"""Endpoint adapters for the relay pump: a TCP socket and a WebSocket.

websocket-client makes the WebSocket handshake and is imported only when a
connection is opened; after the handshake this module reads and writes the
socket itself. Importing it stays cheap.
"""

import collections
import ipaddress
import logging
import os
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from typing import Callable, Deque, List, Optional

from lambda_debugger.wire import protocol, wsframes

log = logging.getLogger("lambda_debugger.relay")

CHUNK_BYTES = 512 * 1024

#: Longest a single read or write may block; also makes ``send`` return
#: partial counts (Python sockets with a timeout are non-blocking inside).
IO_TIMEOUT_S = 30.0

#: A quiet WebSocket peer is pinged after this long and given up after twice it.
KEEPALIVE_S = 5.0

TLS_RECORD_BYTES = 16 * 1024


#: Variables that make websocket-client dial through an HTTP proxy.
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY")


def open_websocket(url: str, *, timeout: float, header: dict, ca_file: Optional[str] = None):
    """Open a websocket-client connection to ``url`` within ``timeout``
    seconds, the DNS lookup included: ``getaddrinfo`` has no timeout of its
    own, and a resolver that hangs must not hold up an invocation.

    With an HTTP proxy configured in the environment, websocket-client dials
    on its own (through the proxy) and only connect and I/O are bounded.

    Raises:
        socket.timeout: a step did not finish in time.
        OSError, ssl.SSLError, websocket.WebSocketException: as the steps raise them.
    """
    import websocket  # websocket-client, loaded only when a session starts

    if any(os.environ.get(name) for name in PROXY_VARIABLES):
        return websocket.create_connection(
            url,
            timeout=timeout,
            header=header,
            enable_multithread=False,
            sslopt={"ca_certs": ca_file} if ca_file else None,
        )
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    host, port = parts.hostname or "", parts.port or (443 if secure else 80)
    sock: Optional[socket.socket] = None
    error: Optional[BaseException] = None
    for family, kind, proto, _, address in _resolve(host, port, timeout):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        candidate = socket.socket(family, kind, proto)
        try:
            candidate.settimeout(left)
            candidate.connect(address)
        except OSError as exc:
            candidate.close()
            error = exc
            continue
        sock = candidate
        break
    if sock is None:
        raise error or socket.timeout("no time left to connect to %s" % host)
    try:
        if secure:
            context = ssl.create_default_context(cafile=ca_file)
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock = context.wrap_socket(sock, server_hostname=host)
        return websocket.create_connection(
            url, timeout=max(0.01, deadline - time.monotonic()), header=header, socket=sock, enable_multithread=False
        )
    except BaseException:
        sock.close()
        raise


def _resolve(host: str, port: int, timeout: float) -> list:
    """``getaddrinfo`` for a TCP connection, given up after ``timeout`` s
    (the lookup itself finishes in a daemon thread)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:  # a literal address needs no lookup
        return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    addresses: list = []
    errors: List[BaseException] = []

    def lookup():
        try:
            addresses.extend(socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM))
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=lookup, name="lambda-debugger-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise socket.timeout("DNS lookup of %s took longer than %.1f s" % (host, timeout))
    if errors:
        raise errors[0]
    return addresses


def send_limit(sock: socket.socket) -> Optional[int]:
    """Most bytes one ``send`` may take without blocking the pump: a TLS
    socket writes all it is given (or times out), so one record at a time."""
    return TLS_RECORD_BYTES if isinstance(sock, ssl.SSLSocket) else None


def tune_socket(sock: socket.socket) -> None:
    """Disable Nagle: DAP is request/response, and Nagle with delayed ACKs
    adds tens of milliseconds to every round trip."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class SocketEndpoint:
    """A connected TCP socket carrying the raw DAP byte stream.

    ``quick_ack`` acknowledges every read at once (Linux): debugpy writes a
    DAP header and its body in two sends without TCP_NODELAY, so the body
    otherwise waits ~40 ms for our delayed ACK of the header.
    """

    def __init__(self, sock: socket.socket, name: str, *, quick_ack: bool = False):
        self.sock = sock
        self.name = name
        self.quick_ack = quick_ack and hasattr(socket, "TCP_QUICKACK")
        self._send_limit = send_limit(sock)
        tune_socket(sock)
        if sock.gettimeout() is None:
            sock.settimeout(IO_TIMEOUT_S)

    def fileno(self) -> int:
        return self.sock.fileno()

    def has_buffered(self) -> bool:
        pending = getattr(self.sock, "pending", None)
        return bool(pending and pending())

    def read(self) -> Optional[bytes]:
        data = self.sock.recv(CHUNK_BYTES)
        if self.quick_ack and data:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data or None

    def frame(self, data: bytes):
        return (data,)

    def control_waiting(self) -> bool:
        return False

    def due(self) -> Optional[float]:
        return None

    def take_outgoing(self) -> bytes:
        return b""

    def send(self, buffer) -> int:
        return self.sock.send(buffer[: self._send_limit])

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __repr__(self) -> str:
        return self.name


class WebSocketEndpoint:
    """A WebSocket opened by websocket-client: binary frames carry debug
    bytes, text frames carry control messages. A ``Notice`` is handed to
    ``on_control``; any other message changes the session, so reading stops
    at it (:meth:`control_waiting`) until :meth:`receive_control` takes it:
    debug bytes after it belong to a different debugger.

    After the handshake the frames are read and written here
    (:mod:`lambda_debugger.wire.wsframes`), so that a pong is never written into
    the middle of a frame the pump is sending and large reads stay cheap.

    Attributes:
        close_code / close_reason: what the peer said when it closed, if it did.
    """

    def __init__(self, ws, name: str, on_control: Optional[Callable] = None):
        self.ws = ws
        self.sock = ws.sock
        self.name = name
        self.on_control = on_control
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self.peer_closed = False
        self._decoder = wsframes.FrameDecoder()
        self._frames: Deque[wsframes.Frame] = collections.deque()  # decoded, not yet handled
        self._held: Optional[protocol.Message] = None  # stops reading until taken
        self._fragments: List[bytes] = []
        self._fragment_opcode = wsframes.OP_BINARY
        self._outgoing = b""
        self.last_received = self._last_ping = time.monotonic()
        self._send_limit = send_limit(self.sock)
        tune_socket(self.sock)
        if ws.gettimeout() is None:
            ws.settimeout(IO_TIMEOUT_S)

    def fileno(self) -> int:
        return self.sock.fileno()

    def has_buffered(self) -> bool:
        if self._held is not None:
            return False
        if self._frames or self.peer_closed:  # a close read with the last data: report it at once
            return True
        pending = getattr(self.sock, "pending", None)
        return bool(pending and pending())

    def control_waiting(self) -> bool:
        """Whether reading stopped at a control message for the caller."""
        return self._held is not None

    def settimeout(self, seconds: Optional[float]) -> None:
        self.sock.settimeout(seconds)

    def read(self) -> Optional[bytes]:
        """Read what is there; return the binary payloads, handle the rest.

        Returns None once the peer closed (after any data before its close),
        and nothing while a control message waits for :meth:`receive_control`.
        Pings are answered through :meth:`take_outgoing`.
        """
        if self._held is not None:
            return b""
        if self.peer_closed:
            return None
        if not self._frames and not self._fill():
            return None
        payloads = []
        while self._frames and self._held is None:
            message = self._next_message()
            if message is None:
                continue
            opcode, payload = message
            if opcode == wsframes.OP_BINARY:
                payloads.append(payload)
            elif opcode == wsframes.OP_TEXT:
                self._control(payload)
            elif opcode == wsframes.OP_PING:
                self._outgoing += wsframes.encode(wsframes.OP_PONG, payload)
            elif opcode == wsframes.OP_CLOSE:
                break
        if self.peer_closed and not payloads:
            return None
        return payloads[0] if len(payloads) == 1 else b"".join(payloads)

    def receive_control(
        self, deadline: Optional[float] = None, *, drop_binary: bool = False
    ) -> Optional[protocol.Message]:
        """Block for the next control message, until ``deadline`` (a
        ``time.monotonic()`` value; pings do not extend it) or, without one,
        up to the socket timeout per read.

        Returns None when the peer closed. Binary frames are not expected
        before pairing and count as a protocol error, unless ``drop_binary``
        (the rest of a debug stream that has ended).

        Raises:
            socket.timeout: the deadline passed.
            protocol.ProtocolError: debug bytes or a malformed message came.
            wsframes.FrameError: the peer broke the WebSocket framing.
            OSError: as raised by the socket.
        """
        if self._held is not None:
            message, self._held = self._held, None
            return message
        while True:
            if self.peer_closed:
                return None
            if not self._frames:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise socket.timeout("no control message in time")
                    self.sock.settimeout(left)
                if not self._fill():
                    return None
            message = self._next_message()
            if message is None:
                continue
            opcode, payload = message
            if opcode == wsframes.OP_TEXT:
                return protocol.decode(payload)
            if opcode == wsframes.OP_BINARY and not drop_binary:
                raise protocol.ProtocolError("debug bytes arrived before pairing")
            if opcode == wsframes.OP_PING:
                self.sock.sendall(wsframes.encode(wsframes.OP_PONG, payload))

    def frame(self, data: bytes):
        return wsframes.encode_parts(wsframes.OP_BINARY, data)

    def due(self) -> Optional[float]:
        return None

    def take_outgoing(self) -> bytes:
        data, self._outgoing = self._outgoing, b""
        return data

    def send(self, buffer) -> int:
        return self.sock.send(buffer[: self._send_limit])

    def send_control(self, message: protocol.Message) -> None:
        self.sock.sendall(wsframes.encode(wsframes.OP_TEXT, protocol.encode(message).encode("utf-8")))

    def close(
        self, code: int = protocol.CloseCode.NORMAL, reason: str = "", *, timeout: float = 1.0, send_frame: bool = True
    ) -> None:
        """Send a close frame with ``code`` and ``reason``, wait for the peer
        to close, and release the socket; all within ``timeout`` seconds.

        ``send_frame=False`` skips the frame, for a connection left in the
        middle of a frame. Never raises; a second call does nothing.
        """
        if self.sock.fileno() < 0:
            return
        deadline = time.monotonic() + timeout
        try:
            self.sock.settimeout(timeout)
            if send_frame and not self.peer_closed:
                payload = struct.pack("!H", int(code)) + protocol.clip_reason(reason).encode("utf-8")
                self.sock.sendall(self.take_outgoing() + wsframes.encode(wsframes.OP_CLOSE, payload))
            self.sock.shutdown(socket.SHUT_WR)
            # Read until the peer closes: closing with unread bytes would
            # reset the connection and could lose our close frame.
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.sock.settimeout(left)
                if not self.sock.recv(CHUNK_BYTES):
                    break
        except Exception:
            pass
        try:
            self.sock.close()
        except Exception:
            pass

    def _fill(self) -> bool:
        """Read once from the socket; False at EOF."""
        data = self.sock.recv(CHUNK_BYTES)
        if not data:
            self.peer_closed = True
            return False
        self.last_received = time.monotonic()
        self._frames.extend(self._decoder.feed(data))
        return True

    def keepalive(self, now: float, *, interval: float = KEEPALIVE_S) -> bool:
        """Ping a quiet peer; return False when it stayed silent for two
        intervals (it vanished without closing, e.g. a frozen host)."""
        quiet = now - self.last_received
        if quiet >= 2 * interval:
            return False
        if quiet >= interval and now - self._last_ping >= interval:
            self._last_ping = now
            self._outgoing += wsframes.encode(wsframes.OP_PING, b"")
        return True

    def keepalive_unpumped(self, now: float) -> bool:
        """:meth:`keepalive` for a connection no pump is sending on: the
        ping (and any pong due) goes out at once. Returns False for a peer
        silent for two intervals.

        Raises:
            OSError: the ping could not be sent.
        """
        if not self.keepalive(now):
            return False
        outgoing = self.take_outgoing()
        if outgoing:
            self.sock.sendall(outgoing)
        return True

    def _next_message(self):
        """Pop one frame; return ``(opcode, payload)`` of a whole message or
        control frame, or None while a fragmented message is incomplete."""
        fin, opcode, payload = self._frames.popleft()
        if opcode == wsframes.OP_CLOSE:
            self.peer_closed = True
            self.close_code, self.close_reason = parse_close(payload)
            return opcode, payload
        if opcode >= wsframes.OP_CLOSE:
            return opcode, payload
        if opcode == wsframes.OP_CONT:
            opcode = self._fragment_opcode
        else:
            self._fragment_opcode = opcode
        if not fin:
            self._fragments.append(payload)
            return None
        if self._fragments:
            payload = b"".join(self._fragments) + payload
            self._fragments = []
        return opcode, payload

    def _control(self, data) -> None:
        try:
            message = protocol.decode(data)
        except protocol.ProtocolError as exc:
            log.warning("ignored a malformed control message: %s", exc)
            return
        if not isinstance(message, protocol.Notice):
            self._held = message
        elif self.on_control is not None:
            self.on_control(message)

    def __repr__(self) -> str:
        return self.name


def parse_close(data: bytes):
    """Return ``(code, reason)`` of a close frame payload."""
    if len(data) < 2:
        return None, ""  # no status code given (1005)
    (code,) = struct.unpack("!H", data[:2])
    return code, data[2:].decode("utf-8", "replace")


def describe_close(code: Optional[int], reason: str) -> str:
    """A human line for a close code and reason, e.g. ``unauthorized: ...``."""
    try:
        name = protocol.CloseCode(code).name.lower().replace("_", " ")  # type: ignore[arg-type]
    except (ValueError, TypeError):
        name = "closed" if code is None else "code %s" % code
    return "%s (%s)%s" % (name, code, ": " + reason if reason else "")


def describe_error(exc: BaseException) -> str:
    """A one-line description of a connection error (never holds a token:
    headers are not part of the exceptions websocket-client raises)."""
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return type(exc).__name__ + (": " + text if text else "")
