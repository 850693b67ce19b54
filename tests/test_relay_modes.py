"""The proxy's relay modes (relaying, detached, alone) with stand-ins: the
test plays the broker on a socket pair, a small TCP server plays the child's
debugpy, and a scripted child reports on the real pipe."""

import json
import os
import socket
import threading
import time

import pytest

from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.lambda_side.pipe import PipeMessage
from lambda_debugger.lambda_side.proxy import DebugSession, OutcomeKind
from lambda_debugger.wire import dap, protocol, push, wsframes
from lambda_debugger.wire.endpoints import WebSocketEndpoint
from tests.support.chain import wait_until
from tests.test_relay import _SocketAsWebSocket

pytestmark = [pytest.mark.timeout(30), pytest.mark.slow]


def scripted_child(conn, handler, event, context, *, debug_logs=False, close_fds=()):
    """Reports as the real child does, without debugpy: ready, pushed, configured
    (after ``configure_after_s``), then the result ``run_s`` after go."""
    for resource in close_fds:
        resource.close()
    conn.send((PipeMessage.READY, event["port"]))
    if conn.recv()[0] != PipeMessage.PUSH:  # sent once the debugger's first bytes came
        os._exit(9)
    conn.send((PipeMessage.PUSHED, []))
    time.sleep(event.get("configure_after_s", 0))
    conn.send((PipeMessage.CONFIGURED,))
    if conn.recv() != PipeMessage.GO:
        os._exit(9)
    time.sleep(event.get("run_s", 0))
    conn.send((PipeMessage.RESULT, {"ok": True}))
    os._exit(0)


class FakeDebugpy:
    """Accepts connections on 127.0.0.1, records what each one received,
    and answers a DAP ``disconnect`` as pydevd does."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = []  # (socket, bytearray received)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            received = bytearray()
            self.connections.append((conn, received))
            threading.Thread(target=self._serve, args=(conn, received), daemon=True).start()

    def _serve(self, conn, received):
        while True:
            try:
                data = conn.recv(65536)
            except OSError:
                return
            if not data:
                return
            received += data
            if b'"command":"disconnect"' in data:
                conn.sendall(
                    dap.encode(
                        {
                            "seq": 1,
                            "type": "response",
                            "request_seq": dap.OWN_SEQ,
                            "command": "disconnect",
                            "success": True,
                        }
                    )
                )

    def close(self):
        self.listener.close()
        for conn, _ in self.connections:
            conn.close()


class FakeBroker:
    """The broker's side of the proxy's WebSocket."""

    def __init__(self):
        near, self.sock = socket.socketpair()
        self.endpoint = WebSocketEndpoint(_SocketAsWebSocket(near), "broker")
        self.decoder = wsframes.FrameDecoder()
        self.frames = []  # (opcode, payload) the proxy sent

    def send(self, opcode, payload):
        self.sock.sendall(wsframes.encode(opcode, payload, masked=False))

    def send_control(self, message):
        self.send(wsframes.OP_TEXT, protocol.encode(message).encode())

    def read_until(self, predicate, timeout=10):
        deadline = time.monotonic() + timeout
        while not predicate(self.frames):
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError("the proxy sent no such frame; got %r" % self.frames[-5:]) from None
            assert data, "the proxy closed the connection"
            self.frames += [(opcode, payload) for _, opcode, payload in self.decoder.feed(data)]

    def controls(self):
        return [protocol.decode(p) for op, p in self.frames if op == wsframes.OP_TEXT]

    def binary(self):
        return b"".join(p for op, p in self.frames if op == wsframes.OP_BINARY)

    def close(self):
        self.sock.close()


class Context:
    aws_request_id = "req-1"
    function_name = "fn"

    def get_remaining_time_in_millis(self):
        return 60000


@pytest.fixture
def parts():
    debugpy, broker = FakeDebugpy(), FakeBroker()
    sessions = []

    def start(**event):
        config = LambdaConfig(broker_url="ws://unused/lambda/fn", function_id="fn")
        session = DebugSession(config, None, dict(event, port=debugpy.port), Context())
        session.child_target = scripted_child
        session.broker = broker.endpoint
        sessions.append(session)
        attach_by = time.monotonic() + 10
        assert session._start_child(attach_by)
        # The debugger's first message: the proxy then tells the child there is no code push.
        broker.send(wsframes.OP_BINARY, dap.encode({"seq": 1, "type": "request", "command": "initialize"}))
        result = {}
        runner = threading.Thread(
            target=lambda: result.setdefault("outcome", session._relay_until_done(attach_by)), daemon=True
        )
        runner.start()
        return session, runner, result

    yield debugpy, broker, start
    for session in sessions:
        session._cleanup(time.monotonic())
    debugpy.close()
    broker.close()


def test_relaying_moves_bytes_both_ways_and_says_how_the_handler_ended(parts):
    debugpy, broker, start = parts
    session, runner, result = start(run_s=0.5)
    broker.send(wsframes.OP_BINARY, b"to-debugpy")
    wait_until(lambda: debugpy.connections and b"to-debugpy" in debugpy.connections[0][1], 10, "the bytes")
    debugpy.connections[0][0].sendall(b"from-debugpy")
    broker.read_until(lambda frames: b"from-debugpy" in broker.binary())
    runner.join(10)
    assert result["outcome"].kind is OutcomeKind.VALUE and result["outcome"].value == {"ok": True}
    broker.read_until(lambda frames: any(isinstance(m, protocol.Ended) for m in broker.controls()))
    assert [m for m in broker.controls() if isinstance(m, protocol.Ended)] == [
        protocol.Ended("the handler returned", exit_code=0)
    ]
    assert session.started


def test_a_debugger_that_leaves_detaches_and_the_next_one_gets_a_fresh_stream(parts):
    debugpy, broker, start = parts
    session, runner, result = start(run_s=2.0)
    wait_until(lambda: session.started, 10, "the handler to start")
    broker.send_control(protocol.Detached(reason="debugger disconnected"))
    # The proxy resumes the handler with a disconnect of its own, then answers.
    broker.read_until(lambda frames: any(isinstance(m, protocol.Detached) for m in broker.controls()))
    assert any(b'"command":"disconnect"' in received for _, received in debugpy.connections[1:])
    broker.send_control(protocol.Paired("fn", "req-1", int(time.time() * 1000) + 60000, attachment=2))
    broker.send(wsframes.OP_BINARY, b"second debugger")
    wait_until(
        lambda: len(debugpy.connections) == 3 and b"second debugger" in debugpy.connections[2][1],
        10,
        "a new connection to debugpy",
    )
    assert b"second debugger" not in debugpy.connections[0][1]  # never the old stream
    runner.join(10)
    assert result["outcome"].kind is OutcomeKind.VALUE


def test_a_debugger_that_leaves_before_the_handler_starts_means_running_here(parts, caplog):
    debugpy, broker, start = parts
    session, runner, result = start(configure_after_s=3)
    broker.send(wsframes.OP_CLOSE, b"\x0f\xa2lambda side disconnected")  # 4002 from the broker
    runner.join(10)
    assert result["outcome"] is None and not session.started
    assert "the debugger left before the handler started; running normally" in caplog.text


def test_the_broker_going_away_while_the_handler_runs_leaves_it_running_alone(parts):
    debugpy, broker, start = parts
    session, runner, result = start(run_s=1.0)
    wait_until(lambda: session.started, 10, "the handler to start")
    broker.sock.shutdown(socket.SHUT_RDWR)
    runner.join(10)
    assert result["outcome"].kind is OutcomeKind.VALUE  # the outcome still comes from the child
    assert json.dumps(result["outcome"].value) == '{"ok": true}'


def test_a_restart_that_cannot_start_a_child_lets_the_handler_run_here(parts, monkeypatch):
    debugpy, broker, start = parts
    session, runner, result = start(run_s=5.0)
    wait_until(lambda: session.started, 10, "the handler to start")

    def no_fork(*args, **kwargs):
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(session, "_fork_child", no_fork)
    configuration = [{"command": "configurationDone", "arguments": {}}]
    restart = {
        "seq": 9,
        "type": "request",
        "command": push.RESTART_COMMAND,
        "arguments": {"files": [], "configuration": configuration},
    }
    broker.send(wsframes.OP_BINARY, dap.encode(restart))
    runner.join(10)
    assert not runner.is_alive() and result["outcome"] is None and not session.started  # the handler runs here
    broker.read_until(lambda frames: any(isinstance(m, protocol.Ended) for m in broker.controls()))
    (ended,) = [m for m in broker.controls() if isinstance(m, protocol.Ended)]
    assert ended.message.startswith("the restart failed (OSError: [Errno 12] Cannot allocate memory)")
