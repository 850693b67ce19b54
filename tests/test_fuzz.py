"""Hostile input at both ports while real sessions relay: the broker stays up
and the real sessions' byte streams arrive intact (checksummed)."""

import hashlib
import os
import socket
import threading
import urllib.request

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lambda_debugger.wire import protocol, wsframes
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


class RelayedSession:
    """A real Lambda/debugger pair through the broker, streaming random bytes
    both ways and hashing what each side sent and received."""

    def __init__(self, broker, number):
        function_id = "fuzz-%d" % number
        self.lam = websocket.create_connection(
            "ws://127.0.0.1:%d/lambda/%s" % (broker.lambda_port, function_id),
            timeout=10,
            header=protocol.bearer(LAMBDA_TOKEN),
        )
        self.lam.send(protocol.encode(protocol.Invocation("req-%d" % number, 2**41, wait_ms=60000)))
        self.dbg = websocket.create_connection(
            "ws://127.0.0.1:%d/debug/%s" % (broker.debugger_port, function_id),
            timeout=10,
            header=protocol.bearer(DEBUGGER_TOKEN),
        )
        for ws in (self.lam, self.dbg):
            assert isinstance(protocol.decode(ws.recv()), protocol.Paired)
        self.sent = {"lam": hashlib.sha256(), "dbg": hashlib.sha256()}
        self.received = {"lam": hashlib.sha256(), "dbg": hashlib.sha256()}
        self.counts = {"lam": 0, "dbg": 0}
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._send, args=("lam", self.lam), daemon=True),
            threading.Thread(target=self._send, args=("dbg", self.dbg), daemon=True),
            threading.Thread(target=self._receive, args=("lam", self.lam), daemon=True),
            threading.Thread(target=self._receive, args=("dbg", self.dbg), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _send(self, side, ws):
        while not self.stop.is_set():
            chunk = os.urandom(int.from_bytes(os.urandom(2), "big") % 4096 + 1)
            ws.send_binary(chunk)
            self.sent[side].update(chunk)
            self.stop.wait(0.01)
        ws.send(protocol.encode(protocol.Notice("end")))  # marks the end of this side's stream

    def _receive(self, side, ws):
        while True:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_TEXT:
                return
            self.received[side].update(data)
            self.counts[side] += len(data)

    def finish(self):
        self.stop.set()
        for thread in self.threads:
            thread.join(30)
        assert not any(t.is_alive() for t in self.threads)
        for ws in (self.lam, self.dbg):
            ws.close()
        return (
            self.sent["lam"].digest() == self.received["dbg"].digest()
            and self.sent["dbg"].digest() == self.received["lam"].digest()
            and min(self.counts.values()) > 0
        )


def healthy(broker):
    with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % broker.debugger_port, timeout=5) as r:
        return r.status == 200


paths = st.one_of(
    st.sampled_from(
        [
            "/lambda/",
            "/debug/",
            "/lambda/a/b",
            "/debug/..",
            "/lambda/%00",
            "/",
            "/api/sessions",
            "/lambda/" + "x" * 200,
            "/debug/fn?x=1",
            "//lambda/fn",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=60).map(lambda t: "/" + t),
)
tokens = st.one_of(st.none(), st.just(LAMBDA_TOKEN), st.just(DEBUGGER_TOKEN), st.text(max_size=40))
control_texts = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            '{"type":"invocation"}',
            '{"type":"invocation","request_id":1,"deadline_ms":"x"}',
            '{"type":"paired","function_id":"f","request_id":"r","deadline_ms":1}',
            "[]",
            "null",
            '{"type":"invocation","request_id":"r","deadline_ms":1,"protocol":99}',
        ]
    ),
)
frames = st.lists(
    st.one_of(st.binary(max_size=2048).map(lambda b: ("binary", b)), control_texts.map(lambda t: ("text", t))),
    max_size=4,
)


def attempt(port, path, token, messages, garbage, oversized):
    """One hostile client; returns without raising whatever the broker does."""
    headers = {"Authorization": "Bearer " + token} if token else {}
    try:
        ws = websocket.create_connection("ws://127.0.0.1:%d%s" % (port, path), timeout=5, header=headers)
    except Exception:
        return  # refused at HTTP level (404, 400): fine
    try:
        for kind, data in messages:
            if kind == "binary":
                ws.send_binary(data)
            else:
                ws.send(data)
        if garbage:
            ws.sock.sendall(garbage)  # not WebSocket framing at all
        if oversized:
            ws.sock.sendall(wsframes.encode(wsframes.OP_BINARY, b"\0" * (2 * 1024 * 1024)))
        ws.settimeout(2)
        while True:  # read until the broker closes us
            ws.recv()
    except Exception:
        pass
    finally:
        ws.sock and ws.sock.close()


def raw_tcp(port, data):
    """Bytes that are not HTTP, then gone (the broker drops such connections
    itself after its handshake timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass


@pytest.fixture(scope="module")
def relayed(broker):
    sessions = [RelayedSession(broker, number) for number in range(3)]
    yield sessions
    for session in sessions:
        session.stop.set()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(
    lambda_side=st.booleans(),
    path=paths,
    token=tokens,
    messages=frames,
    garbage=st.one_of(st.just(b""), st.binary(min_size=1, max_size=64)),
    oversized=st.booleans(),
    raw=st.binary(max_size=300),
)
def test_hostile_clients_never_disturb_the_broker_or_real_sessions(
    broker, relayed, lambda_side, path, token, messages, garbage, oversized, raw
):
    port = broker.lambda_port if lambda_side else broker.debugger_port
    attempt(port, path, token, messages, garbage, oversized)
    raw_tcp(port, raw)
    assert healthy(broker)
    assert broker.process.poll() is None


def test_the_real_sessions_streams_arrived_intact(broker, relayed):
    # Runs after the hostile examples above, on the same broker and sessions.
    assert all(session.finish() for session in relayed)
    assert healthy(broker)
