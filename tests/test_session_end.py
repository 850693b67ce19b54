"""What the IDE is told when its session ends or cannot start: as debugpy's
own adapter tells it, an ``output`` event that says why, an error response
to every request still pending, ``exited`` with the exit code where there is
one, and ``terminated``; then the bridge answers ``disconnect``."""

import io
import json
import os
import signal
import socket
import time

import pytest
import trustme

from lambda_debugger.developer.bridge import AttachBridge
from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, BridgeProcess, break_line, free_port, wait_until
from tests.support.dap_client import DapClient, DapError

pytestmark = [pytest.mark.timeout(90), pytest.mark.chain]


def stop_at_breakpoint(bridge, function, event=None):
    """Invoke, attach and wait at the ``# BREAK`` line; returns (client,
    frame id, the invocation's future)."""
    future = function.invoke_async(event)
    client = bridge.connect()
    client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
    stopped = client.wait_stopped(timeout=30)
    return client, client.stack_trace(stopped["threadId"])[0]["id"], future


def assert_told(client, why, *, exit_code=None, pending=()):
    """The end of the conversation: output(why) first, an error response
    with ``why`` to each ``pending`` request, then ``exited`` (only with an
    exit code) and ``terminated`` last. Then ``disconnect`` is answered."""
    client.wait_event("terminated", timeout=20)
    messages = list(client.messages)
    start = next(
        i
        for i, m in enumerate(messages)
        if m.get("event") == "output" and m["body"]["output"].startswith("lambda-debugger: ")
    )
    told = messages[start:]
    assert told[0]["body"]["category"] == "console"
    assert why in told[0]["body"]["output"], told[0]["body"]["output"]
    responses = [m for m in told if m["type"] == "response"]
    assert sorted(r["request_seq"] for r in responses) == sorted(pending)
    assert all(not r["success"] and why in r["message"] for r in responses)
    kinds = [m.get("event") or m["type"] for m in told]
    expected_tail = (["exited"] if exit_code is not None else []) + ["terminated"]
    assert kinds == ["output"] + ["response"] * len(pending) + expected_tail, kinds
    if exit_code is not None:
        assert told[-2]["body"]["exitCode"] == exit_code
    assert "exited" not in [m.get("event") for m in messages[:start]]
    # Like VS Code after `terminated`: disconnect, answered before the close.
    client.request("disconnect", {"restart": False}, timeout=5)
    wait_until(lambda: client.closed_reason, 5, "the bridge to close the IDE's connection")
    return told


def test_the_handler_returns(broker, start_bridge, make_function):
    function = make_function(broker=broker)
    client, _, future = stop_at_breakpoint(start_bridge(), function)
    thread_id = client.threads()[0]["id"]
    client.continue_(thread_id)
    assert future.result(timeout=30).ok
    assert_told(client, "the handler returned", exit_code=0)


def test_the_handler_raises(broker, start_bridge, make_function):
    bridge = start_bridge()
    function = make_function("app.fail", broker=broker)
    future = function.invoke_async({"order": "A-17"})
    client = bridge.connect()
    client.attach_and_configure({}, timeout=30)
    assert not future.result(timeout=30).ok
    assert_told(client, "the handler raised OrderError: order A-17 is invalid", exit_code=0)


@pytest.mark.parametrize(
    "expression, exit_code, why",
    [
        ("__import__('os')._exit(3)", 3, "the handler's process ended (exit status 3)"),
        ("__import__('os').kill(__import__('os').getpid(), 9)", -9, "the handler's process ended (signal: killed)"),
    ],
)
def test_the_handlers_process_dies_under_a_pending_request(
    broker, start_bridge, make_function, expression, exit_code, why
):
    function = make_function(broker=broker)
    client, frame_id, future = stop_at_breakpoint(start_bridge(), function)
    dying = client.send_request("evaluate", {"expression": expression, "frameId": frame_id, "context": "repl"})
    result = future.result(timeout=30)
    assert json.loads(result.payload)["errorType"] == "Runtime.ExitError"
    assert_told(client, why, exit_code=exit_code, pending=[dying])


def test_the_lambda_side_disappears(broker, start_bridge, make_function):
    function = make_function(broker=broker)
    client, frame_id, future = stop_at_breakpoint(start_bridge(), function)
    waiting = client.send_request(
        "evaluate", {"expression": "__import__('time').sleep(30)", "frameId": frame_id, "context": "repl"}
    )
    time.sleep(0.3)  # the request reached the handler
    os.killpg(function.local.pid, signal.SIGKILL)  # the whole sandbox, as when Lambda resets it
    assert not future.result(timeout=30).ok
    assert_told(client, "the function's side of the session disconnected", pending=[waiting])


def test_the_broker_disappears(own_broker, make_function, tmp_path):
    broker = own_broker()
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        function = make_function(broker=broker)
        client, frame_id, future = stop_at_breakpoint(bridge, function)
        waiting = client.send_request(
            "evaluate", {"expression": "__import__('time').sleep(3)", "frameId": frame_id, "context": "repl"}
        )
        time.sleep(0.3)
        broker.process.kill()
        assert_told(client, "the connection to the broker was lost", pending=[waiting])
        assert future.result(timeout=30).ok  # the handler ran on without the debugger
    finally:
        bridge.stop()


def test_the_invocation_reaches_its_lambda_timeout(broker, start_bridge, make_function):
    function = make_function(broker=broker, timeout_s=6)
    client, _, future = stop_at_breakpoint(start_bridge(), function)
    result = future.result(timeout=30)  # stopped at the breakpoint until Lambda gives up
    assert "Task timed out" in json.loads(result.payload)["errorMessage"]
    assert_told(client, "the invocation reached its Lambda timeout")


def test_the_debugger_attached_too_slowly(broker, start_bridge, make_function):
    function = make_function(broker=broker, timeout_s=5, env={"DEBUGGER_WAIT_MAX": "1000"})
    client = start_bridge().connect()
    client.send_request("initialize", {"adapterID": "debugpy"})  # and never configurationDone
    broker.wait_for_state("armed")
    assert function.invoke().ok
    assert_told(client, "the debugger did not finish attaching in time; the invocation runs without the debugger")


# The session cannot start: the IDE's initialize gets the reason -----------


def test_an_unreachable_broker_is_the_answer_to_initialize(tmp_path):
    class Nowhere:
        scheme, debugger_port = "http", free_port()

    bridge = BridgeProcess(Nowhere, str(tmp_path / "bridge.log"), once=False)
    try:
        wait_until(lambda: "broker check failed: cannot reach the broker" in bridge.output(), 15, "the check")
        client = bridge.connect()
        seq = client.send_request("initialize", {"adapterID": "debugpy"})
        with pytest.raises(DapError, match="cannot reach the broker at ws://127.0.0.1:%d" % Nowhere.debugger_port):
            client.wait_response(seq, timeout=20)
        assert_told(client, "cannot reach the broker", pending=[seq])
        assert bridge.process.poll() is None  # still serving: the broker may come back
    finally:
        bridge.stop()


def test_a_refused_token_is_the_answer_to_initialize(broker, start_bridge):
    bridge = start_bridge(token="not-the-token")
    wait_until(lambda: "broker check failed: the broker refused the debugger token" in bridge.output(), 15, "the check")
    client = bridge.connect()
    seq = client.send_request("initialize", {"adapterID": "debugpy"})
    with pytest.raises(DapError, match=r"unauthorized \(4001\)") as refused:
        client.wait_response(seq, timeout=20)
    assert refused.value.response["body"]["error"]["showUser"] is True
    client.wait_event("terminated", timeout=10)
    assert bridge.process.wait(15) == 1
    assert "not-the-token" not in bridge.output()


def test_the_broker_giving_up_the_wait_is_the_answer_to_initialize(own_broker, tmp_path):
    broker = own_broker("--pairing-timeout", "1")
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        client = bridge.connect()
        seq = client.send_request("initialize", {"adapterID": "debugpy"})
        with pytest.raises(DapError, match=r"pairing timeout \(4004\)"):
            client.wait_response(seq, timeout=20)
    finally:
        bridge.stop()


def test_an_ide_that_says_disconnect_while_waiting_leaves_no_armed_debugger(broker, start_bridge):
    bridge = start_bridge(once=False)
    client = bridge.connect()
    initialize = client.send_request("initialize", {"adapterID": "debugpy"})
    broker.wait_for_state("armed")
    client.request("disconnect", {"restart": False}, timeout=10)
    with pytest.raises(DapError):
        client.wait_response(initialize, timeout=5)
    wait_until(lambda: broker.sessions() == [], 10, "the armed debugger to leave")


# The bridge checks the broker before any IDE comes ------------------------


def test_attach_checks_the_broker_and_keeps_checking_while_it_is_down(own_broker, tmp_path):
    ports = (free_port(), free_port())

    class Later:
        scheme, debugger_port = "http", ports[1]

    bridge = BridgeProcess(Later, str(tmp_path / "bridge.log"), once=False)
    try:
        wait_until(lambda: "broker check failed: cannot reach the broker" in bridge.output(), 15, "the check")
        own_broker(ports=ports)
        wait_until(
            lambda: (
                "broker ok: ws://127.0.0.1:%d answers (no TLS); debugger token accepted" % ports[1] in bridge.output()
            ),
            20,
            "the broker to be found",
        )
    finally:
        bridge.stop()


def test_attach_says_when_tls_does_not_verify(tmp_path, own_broker):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path, ca_path = (str(tmp_path / name) for name in ("cert.pem", "key.pem", "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(cert_path)
    cert.private_key_pem.write_to_path(key_path)
    ca.cert_pem.write_to_path(ca_path)
    broker = own_broker("--certfile", cert_path, "--keyfile", key_path, ca_file=ca_path)
    unverified = BridgeProcess(broker, str(tmp_path / "bridge.log"))  # no --ca-file
    verified = BridgeProcess(broker, str(tmp_path / "bridge-ca.log"), extra_args=["--ca-file", ca_path])
    try:
        wait_until(
            lambda: "broker check failed: the broker's TLS certificate does not verify" in unverified.output(),
            15,
            "the check",
        )
        wait_until(lambda: "answers, TLS verified; debugger token accepted" in verified.output(), 15, "the check")
    finally:
        unverified.stop()
        verified.stop()


def test_a_silent_connection_is_closed_and_the_next_ide_is_served(broker, tmp_path):
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"), once=False)
    try:
        silent = bridge.raw_connect()  # holds the bridge, says nothing
        ide = DapClient.connect("127.0.0.1", bridge.port)
        ide.send_request("initialize", {"adapterID": "debugpy"})
        broker.wait_for_state("armed", timeout=20)  # after the silent one was given up
        assert "sent no DAP message within 10 s" in bridge.output()
        silent.close()
        ide.close()
    finally:
        bridge.stop()


def test_attach_without_a_token_says_that_none_was_given(broker):
    bridge = AttachBridge(
        "orders", "127.0.0.1:%d" % broker.debugger_port, token=None, listen=("127.0.0.1", 0), out=io.StringIO()
    )
    try:
        assert bridge.check_broker() == (
            "the broker asks for a debugger token and none was given (BROKER_DEBUGGER_TOKEN, --token or --token-file)"
        )
        assert "fix the token and start attach again" in bridge.out.getvalue()
        bridge.token = DEBUGGER_TOKEN
        assert bridge.check_broker() is None
        assert "debugger token accepted" in bridge.out.getvalue()
    finally:
        bridge._listener.close()


def test_armed_and_paired_in_one_read_pair_at_once():
    """The broker's ``armed`` and ``paired`` can reach the bridge in one
    read while the IDE waits silently for its ``initialize`` answer: the
    buffered ``paired`` must not wait for the socket to become readable."""
    from lambda_debugger.developer.bridge import IdeEndpoint
    from lambda_debugger.wire import wsframes
    from lambda_debugger.wire.endpoints import WebSocketEndpoint
    from tests.test_relay import _SocketAsWebSocket

    bridge = AttachBridge("orders", "127.0.0.1:1", listen=("127.0.0.1", 0), out=io.StringIO())
    broker_near, broker_far = socket.socketpair()
    ide_near, ide_far = socket.socketpair()
    try:
        paired = protocol.Paired("orders", "req-1", int(time.time() * 1000) + 60000)
        broker_far.sendall(
            b"".join(
                wsframes.encode(wsframes.OP_TEXT, protocol.encode(m).encode(), masked=False)
                for m in (protocol.Armed("orders"), paired)
            )
        )
        started = time.monotonic()
        early = bridge._wait_for_pairing(
            WebSocketEndpoint(_SocketAsWebSocket(broker_near), "broker"),
            IdeEndpoint(ide_near),
            b"initialize bytes",
            None,
        )
        assert time.monotonic() - started < 0.5
        assert early == b"initialize bytes" and bridge.paired == paired
    finally:
        for sock in (broker_near, broker_far, ide_near, ide_far):
            sock.close()
        bridge._listener.close()


def test_each_outcome_is_told_in_plain_words_with_its_exit_status():
    from lambda_debugger.lambda_side.child import RemoteError
    from lambda_debugger.lambda_side.proxy import Outcome, OutcomeKind

    assert (Outcome(OutcomeKind.VALUE).describe(), Outcome(OutcomeKind.VALUE).exit_status()) == (
        "the handler returned",
        0,
    )
    raised = Outcome(OutcomeKind.ERROR, error=RemoteError("OrderError", "app", "bad order", []))
    assert (raised.describe(), raised.exit_status()) == ("the handler raised OrderError: bad order", 0)
    killed = Outcome(OutcomeKind.EXIT, exitcode=-9)
    assert killed.describe() == "the handler's process ended (signal: killed) before the handler returned"
    assert killed.exit_status() == -9
    assert OutcomeKind.JSON == "json"  # bootstrap compares the plain strings


def test_a_hanging_dns_lookup_of_the_broker_is_bounded_and_told(broker, tmp_path):
    from tests.test_end_to_end import SLOW_DNS_PATH

    bridge = BridgeProcess(
        broker, str(tmp_path / "bridge.log"), host="broker.slow-dns.test", once=False, env={"PYTHONPATH": SLOW_DNS_PATH}
    )
    try:
        wait_until(lambda: "(the DNS lookup or the connection hangs)" in bridge.output(), 15, "the check")
        client = bridge.connect()
        seq = client.send_request("initialize", {"adapterID": "debugpy"})
        with pytest.raises(DapError, match="DNS lookup of broker.slow-dns.test took longer than 5.0 s"):
            client.wait_response(seq, timeout=15)
    finally:
        bridge.stop()
