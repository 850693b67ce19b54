"""``--when`` filters and a container's control connection, against a
broker in a thread (and a socket pair where the broker's side is scripted)."""

import json
import logging
import socket
import time
import urllib.parse

import pytest
import websocket

from lambda_debugger.lambda_side import control
from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.wire import filters, protocol, wsframes
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, broker_in_thread, wait_until

pytestmark = pytest.mark.timeout(30)

ALICE = "user == 'alice'"


# Filters ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [(None, False), (False, False), ("", False), ([], False), ({}, False), (0, True), ("x", True), ([0], True)],
)
def test_truthiness_is_jmespaths(value, expected):
    assert filters.truthy(value) is expected


def test_filters_match_events_as_the_aws_cli_query_would():
    event = {"user": "alice", "headers": {"x-debug": "me"}, "items": [{"price": 3}, {"price": 9}]}
    assert filters.matches(ALICE, event)
    assert not filters.matches("user == 'bob'", event)
    assert filters.matches("headers.\"x-debug\" == 'me'", event)
    assert filters.matches("items[?price > `5`]", event)
    assert not filters.matches("items[?price > `50`]", event)
    assert filters.matches("user", event)  # present and not empty
    assert not filters.matches("missing", event)
    assert filters.evaluate([ALICE, "missing"], event) == {ALICE: True, "missing": False}


def test_a_filter_that_fails_on_an_event_is_no_match_and_logged_once(caplog, monkeypatch):
    monkeypatch.setattr(filters, "_reported", set())
    with caplog.at_level(logging.WARNING, logger="lambda_debugger"):
        for _ in range(3):
            assert filters.matches("length(price) > `1`", {"price": 3}) is False
        assert filters.matches("length(price) > `1`", {"price": "abc"}) is True  # a string has a length
    assert caplog.text.count("failed on an event") == 1
    assert "counted as no match" in caplog.text


@pytest.mark.parametrize(
    "when, needle",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("user ==", "not a valid JMESPath expression"),
        ("user = 'a'", "not a valid JMESPath expression"),
        ("a" * (protocol.MAX_WHEN_CHARS + 1), "longer than"),
    ],
)
def test_bad_filters_are_refused_with_the_parsers_words(when, needle):
    assert needle in filters.problem(when)


def test_deeply_nested_or_control_character_filters_are_refused_not_raised():
    assert filters.problem("!" * 511 + "a").startswith("not a valid JMESPath expression")
    assert filters.problem("user == 'a\x01'") == "the expression holds control characters"
    assert filters.problem("user ==\n 'a'") is None  # whitespace is fine


def test_good_filters_pass():
    assert filters.problem(ALICE) is None
    assert filters.problem("headers.\"x-debug\" == 'me'") is None


# The control connection ----------------------------------------------------------


@pytest.fixture
def broker():
    server = broker_in_thread()
    yield server
    server.stop()


def config_for(port, token=LAMBDA_TOKEN):
    return LambdaConfig(
        broker_url="ws://127.0.0.1:%d/lambda/orders" % port, function_id="orders", auth_token=token, wait_max_ms=0
    )


def arm(broker, when=None):
    url = "ws://127.0.0.1:%d/debug/orders" % broker.debugger_port
    if when is not None:
        url += "?when=" + urllib.parse.quote(when)
    debugger = websocket.create_connection(url, header=protocol.bearer(DEBUGGER_TOKEN), timeout=5)
    armed = protocol.decode(debugger.recv())
    assert isinstance(armed, protocol.Armed) and armed.when == when
    return debugger


def settle(link, config, event, armed_count):
    """Check until the link has heard of ``armed_count`` debuggers."""

    def heard():
        decision = link.check(config, event, 1.0, "test")
        return decision if len(link.armed) == armed_count else None

    return wait_until(heard, 5, "the broker's update")


def test_one_connection_carries_every_change(broker):
    link, config = control.ControlLink(), config_for(broker.lambda_port)
    try:
        assert link.check(config, {"user": "bob"}, 1.0, "test") == (control.Decision.RUN, {})
        filtered = arm(broker, ALICE)
        assert settle(link, config, {"user": "bob"}, 1) == (control.Decision.RUN, {ALICE: False})
        assert link.check(config, {"user": "alice"}, 1.0, "test") == (control.Decision.ASK, {ALICE: True})
        anyone = arm(broker)
        assert settle(link, config, {"user": "bob"}, 2) == (control.Decision.ASK, {ALICE: False})
        anyone.close()
        filtered.close()
        assert settle(link, config, {"user": "alice"}, 0) == (control.Decision.RUN, {})
        assert link.opened == 1
        assert broker.registry.watcher_count() == 1
    finally:
        link.close()
    wait_until(lambda: broker.registry.watcher_count() == 0, 5, "the broker to forget the connection")


def test_a_silent_connection_is_replaced(broker):
    link, config = control.ControlLink(), config_for(broker.lambda_port)
    try:
        link.check(config, {}, 1.0, "test")
        link.heard -= control.STALE_HEARTBEATS * link.heartbeat_s + 1  # heard nothing for three heartbeats
        assert link.check(config, {}, 1.0, "test")[0] is control.Decision.RUN
        assert link.opened == 2
        wait_until(lambda: broker.registry.watcher_count() == 1, 5, "the old connection to go")
    finally:
        link.close()


def test_a_connection_the_broker_closed_is_replaced(broker):
    link, config = control.ControlLink(), config_for(broker.lambda_port)
    try:
        link.check(config, {}, 1.0, "test")
        broker._loop.add_callback(broker.registry.close_all, protocol.CloseCode.GOING_AWAY, "restart")
        wait_until(lambda: broker.registry.watcher_count() == 0, 5, "the broker to close it")
        # The close may take a moment to arrive; until then the old connection serves.
        wait_until(lambda: link.check(config, {}, 1.0, "test") and link.opened == 2, 5, "a new connection")
        assert broker.registry.watcher_count() == 1
    finally:
        link.close()


def test_a_refused_token_and_an_unreachable_broker_raise(broker):
    link = control.ControlLink()
    with pytest.raises(ConnectionError, match="unauthorized"):
        link.check(config_for(broker.lambda_port, token="wrong"), {}, 1.0, "test")
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ConnectionError, match="broker unreachable"):
        link.check(config_for(port), {}, 0.5, "test")
    assert link.sock is None


def test_a_broker_that_closes_a_new_connection_is_asked_per_invocation_for_a_while(broker, monkeypatch, caplog):
    from broker_server.handlers import LambdaSocket

    monkeypatch.setattr(LambdaSocket, "_watch", lambda self: self.close(protocol.CloseCode.GOING_AWAY, "stopping"))
    link, config = control.ControlLink(), config_for(broker.lambda_port)
    with caplog.at_level(logging.WARNING, logger="lambda_debugger"):
        for _ in range(3):
            assert link.check(config, {}, 1.0, "test") == (control.Decision.ASK, {})
    assert link.opened == 1  # not tried again at every invocation
    assert "refused a control connection (going away (1001): stopping)" in caplog.text
    link.unsupported_until = time.time() - 1  # the minute passed
    assert link.check(config, {}, 1.0, "test")[0] is control.Decision.ASK and link.opened == 2


def test_a_broker_older_than_control_connections_is_asked_per_invocation(broker, monkeypatch, caplog):
    # What a broker that does not know the watch message does with it.
    monkeypatch.delitem(protocol._MESSAGE_TYPES, "watch")
    link, config = control.ControlLink(), config_for(broker.lambda_port)
    with caplog.at_level(logging.INFO, logger="lambda_debugger"):
        assert link.check(config, {}, 1.0, "test") == (control.Decision.ASK, {})
        assert link.check(config, {}, 1.0, "test") == (control.Decision.ASK, {})
    assert link.opened == 1  # not tried again
    assert caplog.text.count("does not offer control connections") == 1


class Scripted:
    """A link whose broker side is a socket pair end the test writes to."""

    def __init__(self):
        self.link = control.ControlLink()
        self.link.sock, self.broker = socket.socketpair()
        self.link.heard = time.time()

    def send(self, message=None, *, opcode=wsframes.OP_TEXT, raw=None):
        payload = protocol.encode(message).encode() if message is not None else b""
        self.broker.sendall(raw if raw is not None else wsframes.encode(opcode, payload, masked=False))

    def close(self):
        self.link.close()
        self.broker.close()


@pytest.mark.parametrize("garbage", [b"\xf1\x00", b"\x81\x7f" + b"\xff" * 8])  # reserved bits; 2**64-1 bytes
def test_broken_framing_drops_the_connection(garbage):
    scripted = Scripted()
    try:
        scripted.send(raw=garbage)
        scripted.link._drain()
        assert scripted.link.sock is None  # the next check opens a new one
    finally:
        scripted.close()


def test_messages_it_does_not_know_are_ignored_and_the_connection_kept():
    scripted = Scripted()
    try:
        scripted.send(protocol.Debuggers(armed=[{"id": 1, "when": ALICE}]))
        for text in (b"not json", b'{"type": "from-the-future"}', b'{"type": "debuggers", "armed": 7}'):
            scripted.send(raw=wsframes.encode(wsframes.OP_TEXT, text, masked=False))
        scripted.link._drain()
        assert scripted.link.sock is not None and scripted.link.armed == [{"id": 1, "when": ALICE}]
    finally:
        scripted.close()


def test_half_a_frame_waits_for_the_rest_and_fragments_are_joined():
    scripted = Scripted()
    try:
        update = protocol.encode(protocol.Debuggers(armed=[{"id": 2}])).encode()
        frame = wsframes.encode(wsframes.OP_TEXT, update, masked=False)
        scripted.send(raw=frame[:5])
        scripted.link._drain()
        assert scripted.link.sock is not None and scripted.link.armed == []
        scripted.send(raw=frame[5:])
        scripted.link._drain()
        assert scripted.link.armed == [{"id": 2}]
        # A message in two fragments: text (not final), then continuation.
        text = protocol.encode(protocol.Debuggers(armed=[{"id": 3, "when": "a"}])).encode()
        first = bytes([0x01, len(text[:10])]) + text[:10]
        rest = bytes([0x80, len(text[10:])]) + text[10:]
        scripted.send(raw=first + rest)
        scripted.link._drain()
        assert scripted.link.armed == [{"id": 3, "when": "a"}]
    finally:
        scripted.close()


def test_debuggers_sharing_a_filter_or_missing_one_are_decided_right():
    link = control.ControlLink()
    link.armed = [{"id": 1, "when": ALICE}, {"id": 2, "when": ALICE}]
    assert link._decide({"user": "bob"}, "test") == (control.Decision.RUN, {ALICE: False})
    assert link._decide({"user": "alice"}, "test") == (control.Decision.ASK, {ALICE: True})
    link.armed = [{"id": 3}]  # a broker that leaves "when" out: a debugger for every invocation
    assert link._decide({}, "test") == (control.Decision.ASK, {})
    assert control.describe_armed(link.armed) == "1 debugger armed"


def test_pings_are_answered_and_updates_read_without_blocking():
    scripted = Scripted()
    try:
        started = time.monotonic()
        scripted.link._drain()  # nothing sent: returns at once
        assert time.monotonic() - started < 0.1
        scripted.send(opcode=wsframes.OP_PING, raw=wsframes.encode(wsframes.OP_PING, b"hi", masked=False))
        scripted.send(protocol.Debuggers(armed=[{"id": 3, "when": None}], heartbeat_s=7))
        scripted.link._drain()
        assert scripted.link.armed == [{"id": 3, "when": None}] and scripted.link.heartbeat_s == 7
        scripted.broker.settimeout(2)
        pong = wsframes.FrameDecoder().feed(scripted.broker.recv(100))
        assert [(opcode, payload) for _, opcode, payload in pong] == [(wsframes.OP_PONG, b"hi")]
    finally:
        scripted.close()


def test_the_first_control_message_is_a_watch_the_broker_answers(broker):
    ws = websocket.create_connection(
        "ws://127.0.0.1:%d/lambda/orders" % broker.lambda_port, header=protocol.bearer(LAMBDA_TOKEN), timeout=5
    )
    try:
        ws.send(protocol.encode(protocol.Watch("fn", "python3.11")))
        assert json.loads(ws.recv()) == {"type": "debuggers", "armed": [], "heartbeat_s": 20}
        ws.send(protocol.encode(protocol.Notice("anything more")))
        assert close_of(ws) == (protocol.CloseCode.BAD_REQUEST, "a control connection takes no message after watch")
    finally:
        ws.close()


def test_the_broker_keeps_a_filter_exactly_as_sent(broker):
    when = "  user == 'alice'\n"
    debugger = arm(broker, when)  # echoed exactly, or the bridge would refuse the broker
    try:
        assert broker.registry.snapshot()[0]["when"] == when
    finally:
        debugger.close()


def test_the_broker_refuses_a_bad_filter_with_the_parsers_words(broker):
    debugger = websocket.create_connection(
        "ws://127.0.0.1:%d/debug/orders?when=user%%20%%3D%%3D" % broker.debugger_port,
        header=protocol.bearer(DEBUGGER_TOKEN),
        timeout=5,
    )
    try:
        code, reason = close_of(debugger)
    finally:
        debugger.close()
    assert code == protocol.CloseCode.BAD_REQUEST
    assert reason.startswith("the when filter: not a valid JMESPath expression")
    assert broker.registry.snapshot() == []


def close_of(ws):
    """The code and reason of the close frame that ``ws`` receives next."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == wsframes.OP_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


# The bridge's side of --when ---------------------------------------------------


def test_attach_refuses_a_bad_filter_before_it_listens(capsys):
    from lambda_debugger.developer.cli import main

    assert main(["attach", "orders", "--broker", "127.0.0.1:9", "--listen", "127.0.0.1:0", "--when", "a[?"]) == 2
    err = capsys.readouterr().err
    assert "lambda-debugger attach: --when: not a valid JMESPath expression" in err
    assert "listening" not in err


def test_a_bridge_with_a_filter_refuses_a_broker_that_would_ignore_it(broker, monkeypatch):
    import io
    import threading

    from broker_server import registry as registry_module
    from lambda_debugger.developer.bridge import AttachBridge, BridgeError
    from tests.support.dap_client import DapClient

    def old_armed(**fields):  # what a broker older than filters sends
        fields.pop("when", None)
        return protocol.Armed(**fields)

    monkeypatch.setattr(registry_module, "Armed", old_armed)
    out = io.StringIO()
    bridge = AttachBridge(
        "orders",
        "127.0.0.1:%d" % broker.debugger_port,
        token=DEBUGGER_TOKEN,
        listen=("127.0.0.1", 0),
        out=out,
        when=ALICE,
    )
    failure = []

    def serve():
        try:
            bridge.serve(once=True, check=False)
        except BridgeError as exc:
            failure.append(str(exc))

    serving = threading.Thread(target=serve, daemon=True)
    serving.start()
    with DapClient.connect(*bridge.address) as client:
        client.send_request("initialize", {"adapterID": "debugpy"})
        client.wait_event("terminated", timeout=10)
        told = client.output()
    serving.join(10)
    assert failure and "the broker does not support --when" in failure[0]
    assert "the broker does not support --when" in told
    wait_until(lambda: broker.registry.snapshot() == [], 5, "the armed debugger to go")
