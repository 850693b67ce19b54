import hashlib
import os
import socket
import threading
import time

import pytest

from lambda_debugger.wire import protocol, relay, wsframes
from lambda_debugger.wire.endpoints import SocketEndpoint, WebSocketEndpoint, describe_close, parse_close

pytestmark = pytest.mark.timeout(20)


@pytest.fixture
def pair():
    """Two endpoints for the pump, and the far ends of their sockets."""
    a_far, a_near = socket.socketpair()
    b_near, b_far = socket.socketpair()
    yield SocketEndpoint(a_near, "a"), SocketEndpoint(b_near, "b"), a_far, b_far
    for s in (a_far, a_near, b_near, b_far):
        s.close()


def _recv_exactly(sock, n):
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        assert chunk, "closed early"
        data += chunk
    return bytes(data)


def test_bytes_cross_both_ways_intact(pair):
    a, b, a_far, b_far = pair
    payload_ab = os.urandom(3 * 1024 * 1024 + 7)
    payload_ba = os.urandom(1024 * 1024 + 3)
    results = {}
    pumper = relay.Pump(a, b)
    pump = threading.Thread(target=lambda: results.setdefault("r", pumper.run()))
    pump.start()
    writers = [
        threading.Thread(target=a_far.sendall, args=(payload_ab,)),
        threading.Thread(target=b_far.sendall, args=(payload_ba,)),
    ]
    for w in writers:
        w.start()
    got_ab = _recv_exactly(b_far, len(payload_ab))
    got_ba = _recv_exactly(a_far, len(payload_ba))
    for w in writers:
        w.join()
    a_far.shutdown(socket.SHUT_WR)
    pump.join(5)
    assert hashlib.sha256(got_ab).digest() == hashlib.sha256(payload_ab).digest()
    assert got_ba == payload_ba
    result = results["r"]
    assert result.reason == relay.CLOSED and result.endpoint is a
    assert (pumper.bytes_a_to_b, pumper.bytes_b_to_a) == (len(payload_ab), len(payload_ba))


def test_eof_on_either_side_ends_the_pump(pair):
    a, b, a_far, b_far = pair
    b_far.close()
    result = relay.Pump(a, b).run(deadline=time.monotonic() + 5)
    assert result.reason == relay.CLOSED and result.endpoint is b


def test_deadline_ends_an_idle_pump(pair):
    a, b, _, _ = pair
    start = time.monotonic()
    result = relay.Pump(a, b).run(deadline=start + 0.2)
    assert result.reason == relay.DEADLINE
    assert 0.15 < time.monotonic() - start < 2


def test_watched_descriptor_stops_the_pump_without_losing_bytes(pair):
    a, b, a_far, b_far = pair
    watch_r, watch_w = os.pipe()
    try:
        pump = relay.Pump(a, b)
        a_far.sendall(b"first")
        assert pump.run(deadline=time.monotonic() + 0.3).reason == relay.DEADLINE
        assert _recv_exactly(b_far, 5) == b"first"
        os.write(watch_w, b"x")
        a_far.sendall(b"second")
        result = pump.run(watch=[watch_r], deadline=time.monotonic() + 5)
        assert result.reason == relay.WATCH
        # the pump can be resumed; "second" was not read or was passed on whole
        os.read(watch_r, 1)
        pump.run(deadline=time.monotonic() + 0.3)
        assert _recv_exactly(b_far, 6) == b"second"
    finally:
        os.close(watch_r)
        os.close(watch_w)


def test_write_failure_is_reported_not_raised(pair):
    a, b, a_far, b_far = pair
    b.sock.shutdown(socket.SHUT_WR)
    a_far.sendall(b"data")
    result = relay.Pump(a, b).run(deadline=time.monotonic() + 5)
    assert result.reason == relay.CLOSED and result.endpoint is b
    assert isinstance(result.error, OSError)


def test_a_stream_the_target_cannot_take_ends_the_relay_with_the_error(pair):
    a, b, a_far, b_far = pair

    def refuse(data):
        raise RecursionError("too deep")

    b.frame = refuse
    a_far.sendall(b"data")
    result = relay.Pump(a, b).run(deadline=time.monotonic() + 5)
    assert result.reason == relay.CLOSED and result.endpoint is b
    assert isinstance(result.error, RecursionError)


def test_close_frames_are_described():
    assert parse_close(b"\x0f\xa1no token") == (4001, "no token")
    assert parse_close(b"") == (None, "")
    assert describe_close(4001, "bad token") == "unauthorized (4001): bad token"
    assert describe_close(4999, "") == "code 4999 (4999)"


class _SocketAsWebSocket:
    """What WebSocketEndpoint needs of a websocket-client connection."""

    def __init__(self, sock):
        self.sock = sock

    def gettimeout(self):
        return self.sock.gettimeout()

    def settimeout(self, seconds):
        self.sock.settimeout(seconds)


def test_the_pump_stops_at_a_session_change_and_never_mixes_streams(pair):
    # The broker's frames as one burst: the old debugger's last bytes, a
    # notice, its departure, a new pairing and the new debugger's first bytes.
    # Bytes after a session change must not reach the old debugpy connection.
    a, _, a_far, b_far = pair
    server_far, client_near = socket.socketpair()
    broker = WebSocketEndpoint(_SocketAsWebSocket(client_near), "broker")
    notices = []
    broker.on_control = notices.append
    frames = [
        (wsframes.OP_BINARY, b"old stream"),
        (wsframes.OP_TEXT, protocol.encode(protocol.Notice("hello")).encode()),
        (wsframes.OP_TEXT, protocol.encode(protocol.Detached("debugger disconnected")).encode()),
        (wsframes.OP_TEXT, protocol.encode(protocol.Paired("fn", "req", 1, attachment=2)).encode()),
        (wsframes.OP_BINARY, b"new stream"),
    ]
    server_far.sendall(b"".join(wsframes.encode(op, data, masked=False) for op, data in frames))
    old = relay.Pump(broker, a)
    result = old.run(deadline=time.monotonic() + 5)
    assert (result.reason, result.endpoint) == (relay.CONTROL, broker)
    assert old.run(deadline=time.monotonic() + 0.1).reason == relay.CONTROL  # held until taken
    old.flush(a)
    a_far.settimeout(1)
    assert a_far.recv(100) == b"old stream"
    assert broker.receive_control(deadline=time.monotonic() + 1) == protocol.Detached("debugger disconnected")
    assert broker.receive_control(deadline=time.monotonic() + 1) == protocol.Paired("fn", "req", 1, attachment=2)
    assert notices == [protocol.Notice("hello")]
    new_far, new_near = socket.socketpair()
    new = relay.Pump(broker, SocketEndpoint(new_near, "new debugpy"))
    assert new.run(deadline=time.monotonic() + 0.5).reason == relay.DEADLINE
    new_far.settimeout(1)
    assert new_far.recv(100) == b"new stream"
    a_far.setblocking(False)
    with pytest.raises(BlockingIOError):
        a_far.recv(100)  # nothing more reached the old connection
    for s in (server_far, client_near, new_far, new_near):
        s.close()


def test_dropping_the_rest_of_an_ended_stream_while_waiting_for_control():
    server_far, client_near = socket.socketpair()
    broker = WebSocketEndpoint(_SocketAsWebSocket(client_near), "broker")
    paired = protocol.Paired("fn", "req", 1)
    server_far.sendall(
        wsframes.encode(wsframes.OP_BINARY, b"late bytes", masked=False)
        + wsframes.encode(wsframes.OP_TEXT, protocol.encode(paired).encode(), masked=False)
    )
    assert broker.receive_control(deadline=time.monotonic() + 1, drop_binary=True) == paired
    server_far.sendall(wsframes.encode(wsframes.OP_BINARY, b"x", masked=False))
    with pytest.raises(protocol.ProtocolError, match="before pairing"):
        broker.receive_control(deadline=time.monotonic() + 1)
    server_far.close()
    client_near.close()
