"""WebSocket framing without I/O, checked against websocket-client's own."""

import os

import pytest
from websocket import ABNF

from lambda_debugger.wire import wsframes
from lambda_debugger.wire.wsframes import FrameDecoder, FrameError

pytestmark = pytest.mark.timeout(10)


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 70001, 524291])
def test_mask_matches_websocket_client(size):
    key, data = os.urandom(4), os.urandom(size)
    assert wsframes.mask(key, data) == ABNF.mask(key, data)
    assert wsframes.mask(key, wsframes.mask(key, data)) == data


@pytest.mark.parametrize("size", [0, 10, 125, 126, 65535, 65536, 300000])
@pytest.mark.parametrize("masked", [True, False])
def test_frames_round_trip_and_parse_like_websocket_client(size, masked):
    payload = os.urandom(size)
    wire = wsframes.encode(wsframes.OP_BINARY, payload, masked=masked)
    assert FrameDecoder().feed(wire) == [(True, wsframes.OP_BINARY, payload)]
    # websocket-client reads the same bytes as the same frame
    frame = ABNF.create_frame(payload, ABNF.OPCODE_BINARY)
    frame.get_mask_key = lambda n: wire[len(wire) - size - 4 : len(wire) - size]
    if masked:
        assert frame.format() == wire


def test_decoder_handles_any_split_and_several_frames_per_read():
    frames = [
        (True, wsframes.OP_TEXT, b'{"type":"notice","message":"m"}'),
        (True, wsframes.OP_BINARY, os.urandom(70000)),
        (True, wsframes.OP_PING, b"p"),
    ]
    wire = b"".join(wsframes.encode(op, data, masked=False) for _, op, data in frames)
    for step in (1, 7, 4096, len(wire)):
        decoder, got = FrameDecoder(), []
        for start in range(0, len(wire), step):
            got += decoder.feed(wire[start : start + step])
        assert got == frames


def test_fragments_are_reported_with_their_fin_bit():
    first = bytes([0x02, 3]) + b"abc"  # binary, not final
    last = bytes([0x80, 2]) + b"de"  # continuation, final
    assert FrameDecoder().feed(first + last) == [(False, wsframes.OP_BINARY, b"abc"), (True, wsframes.OP_CONT, b"de")]


def test_oversized_and_malformed_frames_are_refused():
    with pytest.raises(FrameError, match="larger than"):
        FrameDecoder(max_payload=100).feed(wsframes.encode(wsframes.OP_BINARY, b"x" * 101, masked=False))
    with pytest.raises(FrameError, match="reserved bits"):
        FrameDecoder().feed(bytes([0xC2, 0]))
