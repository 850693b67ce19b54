"""The pairing wait both ends share, on a socket pair standing in for the
broker connection."""

import socket
import time

import pytest

from lambda_debugger.wire import protocol, wsframes
from lambda_debugger.wire.endpoints import WebSocketEndpoint
from lambda_debugger.wire.pairing import Waited, wait_step
from tests.test_relay import _SocketAsWebSocket

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def link():
    near, far = socket.socketpair()
    notices = []
    broker = WebSocketEndpoint(_SocketAsWebSocket(near), "broker", on_control=notices.append)
    yield broker, far, notices
    near.close()
    far.close()


def send(far, *messages):
    far.sendall(
        b"".join(wsframes.encode(wsframes.OP_TEXT, protocol.encode(m).encode(), masked=False) for m in messages)
    )


def test_notices_go_to_the_endpoint_and_the_next_message_returns(link):
    broker, far, notices = link
    paired = protocol.Paired("fn", "req", 1)
    send(far, protocol.Notice("hello"), protocol.Armed("fn"), paired)
    assert wait_step(broker, time.monotonic() + 5) == (Waited.MESSAGE, protocol.Armed("fn"))
    started = time.monotonic()
    assert wait_step(broker, time.monotonic() + 5) == (Waited.MESSAGE, paired)  # already read: no wait
    assert time.monotonic() - started < 0.5
    assert notices == [protocol.Notice("hello")]


def test_a_ping_is_answered_and_does_not_end_the_wait(link):
    broker, far, _ = link
    far.sendall(wsframes.encode(wsframes.OP_PING, b"p", masked=False))
    started = time.monotonic()
    assert wait_step(broker, started + 0.5) == (Waited.TIMEOUT, None)
    assert 0.4 < time.monotonic() - started < 1.5
    fin, opcode, payload = wsframes.FrameDecoder().feed(far.recv(100))[0]
    assert (opcode, payload) == (wsframes.OP_PONG, b"p")


def test_watched_closed_and_silent(link):
    broker, far, _ = link
    other_near, other_far = socket.socketpair()
    try:
        other_far.sendall(b"x")
        assert wait_step(broker, time.monotonic() + 5, watch=[other_near]) == (Waited.WATCHED, None)
    finally:
        other_near.close()
        other_far.close()
    broker.last_received -= 60  # nothing from the broker for a minute, pings included
    assert wait_step(broker, time.monotonic() + 5) == (Waited.SILENT, None)
    broker.last_received = time.monotonic()
    far.sendall(wsframes.encode(wsframes.OP_CLOSE, b"\x0f\xa4gone", masked=False))
    assert wait_step(broker, time.monotonic() + 5) == (Waited.CLOSED, None)
    assert (broker.close_code, broker.close_reason) == (4004, "gone")
