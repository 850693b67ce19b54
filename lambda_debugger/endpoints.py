"""Endpoint adapters for the relay pump: a TCP socket and a WebSocket.

websocket-client is imported by the caller that opens the connection; this
module only uses the objects it is given, so importing it stays cheap.
"""

import logging
import socket
import struct
from typing import Callable, Optional

from lambda_debugger import protocol

log = logging.getLogger("lambda_debugger.relay")

CHUNK_BYTES = 64 * 1024

#: Longest a single read or write may block; also makes ``send`` return
#: partial counts (Python sockets with a timeout are non-blocking inside).
IO_TIMEOUT_S = 30.0

# WebSocket opcodes (RFC 6455); kept here to avoid importing websocket-client.
OPCODE_CONT = 0x0
OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA


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

    def frame(self, data: bytes) -> bytes:
        return data

    def take_outgoing(self) -> bytes:
        return b""

    def send(self, buffer) -> int:
        return self.sock.send(buffer)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def __repr__(self) -> str:
        return self.name


class WebSocketEndpoint:
    """A websocket-client connection: binary frames carry debug bytes, text
    frames carry control messages, handed to ``on_control``.

    Attributes:
        close_code / close_reason: what the peer said when it closed, if it did.
    """

    def __init__(self, ws, name: str, on_control: Optional[Callable] = None):
        self.ws = ws
        self.name = name
        self.on_control = on_control
        self.close_code: Optional[int] = None
        self.close_reason = ""
        self._fragments = []
        self._fragment_opcode = OPCODE_BINARY
        self._outgoing = b""
        tune_socket(ws.sock)
        if ws.gettimeout() is None:
            ws.settimeout(IO_TIMEOUT_S)

    def fileno(self) -> int:
        return self.ws.sock.fileno()

    def has_buffered(self) -> bool:
        pending = getattr(self.ws.sock, "pending", None)
        return bool(pending and pending())

    def read(self) -> Optional[bytes]:
        """Read one frame; binary payloads are returned, the rest handled.

        Pings are answered through :meth:`take_outgoing`, so that a pong is
        never written into the middle of a frame the pump is sending.
        """
        try:
            frame = self.ws.recv_frame()
        except Exception as exc:
            if type(exc).__name__ == "WebSocketConnectionClosedException":
                return None
            raise
        opcode = frame.opcode
        if opcode == OPCODE_CONT:
            opcode = self._fragment_opcode
        elif opcode in (OPCODE_TEXT, OPCODE_BINARY):
            self._fragment_opcode = opcode
        if opcode in (OPCODE_TEXT, OPCODE_BINARY) and not frame.fin:
            self._fragments.append(frame.data)
            return b""
        if opcode in (OPCODE_TEXT, OPCODE_BINARY) and self._fragments:
            data = b"".join(self._fragments) + frame.data
            self._fragments = []
        else:
            data = frame.data
        if opcode == OPCODE_BINARY:
            return data
        if opcode == OPCODE_TEXT:
            self._control(data)
            return b""
        if opcode == OPCODE_CLOSE:
            self.close_code, self.close_reason = parse_close(data)
            return None
        if opcode == OPCODE_PING:
            self._outgoing += self._encode(data, OPCODE_PONG)
        return b""

    def frame(self, data: bytes) -> bytes:
        return self._encode(data, OPCODE_BINARY)

    def take_outgoing(self) -> bytes:
        data, self._outgoing = self._outgoing, b""
        return data

    def send(self, buffer) -> int:
        return self.ws.sock.send(buffer)

    def _encode(self, data: bytes, opcode: int) -> bytes:
        from websocket import ABNF

        return ABNF.create_frame(data, opcode).format()

    def receive_control(self) -> Optional[protocol.Message]:
        """Block (up to the socket timeout) for the next control message.

        Returns None when the peer closed. Binary frames are not expected
        before pairing and count as a protocol error.

        Raises:
            protocol.ProtocolError: debug bytes or a malformed message came.
            socket.timeout / websocket-client errors: as raised by the socket.
        """
        while True:
            opcode, frame = self.ws.recv_data_frame(control_frame=True)
            if opcode == OPCODE_TEXT:
                return protocol.decode(frame.data)
            if opcode == OPCODE_CLOSE:
                self.close_code, self.close_reason = parse_close(frame.data)
                return None
            if opcode == OPCODE_BINARY:
                raise protocol.ProtocolError("debug bytes arrived before pairing")

    def send_control(self, message: protocol.Message) -> None:
        self.ws.send(protocol.encode(message))

    def close(self, code: int = protocol.CloseCode.NORMAL, reason: str = "") -> None:
        """Close with ``code`` and ``reason``; never raises."""
        try:
            self.ws.close(status=int(code), reason=protocol.clip_reason(reason).encode("utf-8"), timeout=1)
        except Exception:
            pass
        try:
            self.ws.shutdown()
        except Exception:
            pass

    def _control(self, data) -> None:
        try:
            message = protocol.decode(data)
        except protocol.ProtocolError as exc:
            log.warning("ignored a malformed control message: %s", exc)
            return
        if self.on_control is not None:
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
        name = protocol.CloseCode(code).name.lower().replace("_", " ")
    except (ValueError, TypeError):
        name = "closed" if code is None else "code %s" % code
    return "%s (%s)%s" % (name, code, ": " + reason if reason else "")


def describe_error(exc: BaseException) -> str:
    """A one-line description of a connection error (never holds a token:
    headers are not part of the exceptions websocket-client raises)."""
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return type(exc).__name__ + (": " + text if text else "")
