"""WebSocket frames (RFC 6455) without I/O, for the relay's hot path.

websocket-client performs the opening handshake; after it, the relay reads
and writes frames itself: large reads decoded here in one pass, instead of a
16 KiB read per call, and outgoing frames built in one buffer.
"""

import functools
import os
import struct
import sys
from typing import List, Optional, Tuple

#: A decoded frame: (final fragment, opcode, unmasked payload).
Frame = Tuple[bool, int, bytes]

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

_BYTEORDER = sys.byteorder


class FrameError(ValueError):
    """The peer sent bytes that are not a valid WebSocket frame."""


def mask(key: bytes, data) -> bytes:
    """XOR ``data`` with the 4-byte ``key`` repeated (RFC 6455 5.3).

    Pure Python, done in C loops: large payloads as four interleaved
    ``bytes.translate`` passes (one per key byte), small ones as one
    big-integer XOR. Returns ``bytes`` or a ``bytearray``.
    """
    size = len(data)
    if size < _TRANSLATE_FROM:
        if not size:
            return b""
        words = (size + 3) // 4
        stream = int.from_bytes(key, _BYTEORDER) * _word_ones(words)
        masked = (int.from_bytes(data, _BYTEORDER) ^ stream).to_bytes(words * 4, _BYTEORDER)
        return masked if size == words * 4 else masked[:size]
    if not isinstance(data, bytes):
        data = bytes(data)
    out = bytearray(size)
    for offset in range(4):
        out[offset::4] = data[offset::4].translate(_xor_table(key[offset]))
    return bytes(out)


#: Payloads from this size up are masked with ``bytes.translate``.
_TRANSLATE_FROM = 2048


@functools.lru_cache(maxsize=256)
def _xor_table(byte: int) -> bytes:
    return bytes(value ^ byte for value in range(256))


@functools.lru_cache(maxsize=16)
def _word_ones(words: int) -> int:
    one = b"\x01\x00\x00\x00" if _BYTEORDER == "little" else b"\x00\x00\x00\x01"
    return int.from_bytes(one * words, _BYTEORDER)


def encode(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    """One final frame. Clients must mask (``masked``), with a fresh random key."""
    return b"".join(encode_parts(opcode, payload, masked=masked))


def encode_parts(opcode: int, payload: bytes, *, masked: bool = True) -> Tuple[bytes, bytes]:
    """:func:`encode` as (header, payload) buffers, sparing a copy of a large payload."""
    size = len(payload)
    first = 0x80 | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", first, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header, payload
    key = os.urandom(4)
    return header + key, mask(key, payload)


class FrameDecoder:
    """Turns received bytes into ``(fin, opcode, payload)`` frames.

    Args:
        max_payload: larger frames raise :class:`FrameError`.
    """

    def __init__(self, max_payload: int = 64 * 1024 * 1024):
        self.max_payload = max_payload
        self._buffer = bytearray()

    def feed(self, data: bytes) -> List["Frame"]:
        """Add received bytes; return every frame now complete, in order."""
        self._buffer += data
        frames: List[Frame] = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Optional["Frame"]:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first, second = buffer[0], buffer[1]
        if first & 0x70:
            raise FrameError("reserved bits set (no extension was negotiated)")
        size, offset = second & 0x7F, 2
        if size == 126:
            if len(buffer) < 4:
                return None
            (size,) = struct.unpack_from("!H", buffer, 2)
            offset = 4
        elif size == 127:
            if len(buffer) < 10:
                return None
            (size,) = struct.unpack_from("!Q", buffer, 2)
            offset = 10
        if size > self.max_payload:
            raise FrameError("frame of %d bytes is larger than %d" % (size, self.max_payload))
        key = None
        if second & 0x80:
            key = bytes(buffer[offset : offset + 4])
            offset += 4
        if len(buffer) < offset + size:
            return None
        view = memoryview(buffer)[offset : offset + size]
        payload = mask(key, view) if key is not None else bytes(view)
        view.release()
        del buffer[: offset + size]
        return bool(first & 0x80), first & 0x0F, payload
