"""Faults on the chain: the broker dies, the Lambda side freezes."""

import io
import json
import os
import signal
import threading
import time

import pytest

from lambda_debugger.developer.bridge import AttachBridge
from tests.support.chain import DEBUGGER_TOKEN, BridgeProcess, break_line, wait_until
from tests.support.dap_client import DapClient

pytestmark = [pytest.mark.timeout(90), pytest.mark.chain]


@pytest.fixture
def stopped_session(make_function, tmp_path):
    """start(broker) -> (function, bridge, future): an invocation stopped at
    the ``# BREAK`` line through a bridge of its own."""
    bridges = []

    def start(broker):
        function = make_function(broker=broker)
        bridge = BridgeProcess(broker, str(tmp_path / ("bridge-%d.log" % len(bridges))))
        bridges.append(bridge)
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        client.wait_stopped(timeout=30)
        return function, bridge, future

    yield start
    for bridge in bridges:
        bridge.stop()


def test_broker_killed_while_waiting(own_broker, make_function):
    broker = own_broker()
    function = make_function(broker=broker, env={"DEBUGGER_WAIT_MAX": "20000"})
    future = function.invoke_async()
    broker.wait_for_state("waiting")
    broker.process.kill()
    killed = time.monotonic()
    result = future.result(timeout=30)
    assert time.monotonic() - killed < 2.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert function.logs().count("running normally") == 1  # one line, no retry loop


def test_a_broker_that_freezes_while_an_invocation_waits_is_given_up(own_broker, make_function):
    # A frozen broker keeps the connection open but answers nothing, pings
    # included: the wait ends two keepalive intervals later, not at its budget.
    broker = own_broker()
    function = make_function(broker=broker, env={"DEBUGGER_WAIT_MAX": "25000"})
    future = function.invoke_async()
    broker.wait_for_state("waiting")
    os.kill(broker.process.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    result = future.result(timeout=30)
    assert 9.0 < time.monotonic() - frozen < 13.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert "the broker went silent while waiting; running normally" in function.logs()


def test_broker_killed_while_stopped_at_a_breakpoint(own_broker, stopped_session):
    broker = own_broker()
    function, bridge, future = stopped_session(broker)
    broker.process.kill()
    killed = time.monotonic()
    result = future.result(timeout=30)
    assert time.monotonic() - killed < 5.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert "the handler was resumed" in function.logs()
    wait_until(lambda: "session ended" in bridge.output(), 10, "the bridge to notice")


def test_a_frozen_lambda_is_reaped_and_the_debugger_told_in_seconds(own_broker, stopped_session):
    broker = own_broker("--ping-interval", "1")
    function, bridge, future = stopped_session(broker)
    try:
        os.killpg(function.local.pid, signal.SIGSTOP)  # Lambda freezes the whole sandbox
        frozen = time.monotonic()
        output = wait_until(lambda: "session ended" in bridge.output() and bridge.output(), 15, "the bridge")
        assert time.monotonic() - frozen < 6.0
        assert "lambda side disconnected" in output
    finally:
        os.killpg(function.local.pid, signal.SIGCONT)
    # Thawed, the invocation still completes: the proxy finds the broker
    # gone and resumes the handler.
    result = future.result(timeout=60)
    assert result.ok and json.loads(result.payload)["total"] == 6


def test_a_silent_broker_is_given_up_and_the_handler_resumed(own_broker, stopped_session):
    broker = own_broker("--ping-interval", "0")  # only the proxy's keepalive can notice
    function, bridge, future = stopped_session(broker)
    os.kill(broker.process.pid, signal.SIGSTOP)  # its host froze: no FIN, no RST, nothing
    silenced = time.monotonic()
    result = future.result(timeout=30)
    assert time.monotonic() - silenced < 13.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    logs = function.logs()
    assert "the broker went silent; the handler runs on without the debugger" in logs
    assert "the handler was resumed" in logs


def test_broker_killed_while_the_debugger_is_away(own_broker, stopped_session):
    broker = own_broker()
    function, bridge, future = stopped_session(broker)
    bridge.stop()  # the developer's bridge goes; the invocation waits for another
    wait_until(lambda: "another debugger may attach" in function.logs(), 10, "the proxy to detach")
    broker.process.kill()
    killed = time.monotonic()
    result = future.result(timeout=30)
    assert time.monotonic() - killed < 5.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert "the handler runs on" in function.logs().split("another debugger may attach")[1]


def test_an_armed_bridge_outlasts_the_brokers_pings(own_broker):
    broker = own_broker("--ping-interval", "1")
    out = io.StringIO()
    # A socket timeout shorter than the ping interval: a ping alone must not
    # leave the bridge in a read that then times out.
    bridge = AttachBridge(
        "orders",
        "127.0.0.1:%d" % broker.debugger_port,
        token=DEBUGGER_TOKEN,
        listen=("127.0.0.1", 0),
        out=out,
        connect_timeout_s=0.5,
    )
    stop = threading.Event()
    serving = threading.Thread(target=bridge.serve, kwargs={"stop": stop}, daemon=True)
    serving.start()
    try:
        with DapClient.connect(*bridge.address) as client:
            client.send_request("initialize", {"adapterID": "debugpy"})
            broker.wait_for_state("armed")
            time.sleep(3.5)  # three pings answered while armed
            assert [s["state"] for s in broker.sessions()] == ["armed"]
            assert "session ended" not in out.getvalue()
    finally:
        stop.set()
        serving.join(10)
    assert not serving.is_alive()
