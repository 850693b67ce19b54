"""Faults on the chain: the broker dies, the Lambda side freezes."""

import json
import os
import signal
import time

import pytest

from tests.support.chain import BridgeProcess, BrokerProcess, break_line, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def own_broker(tmp_path):
    """A broker of the test's own, which it may kill or starve."""
    brokers = []

    def start(*args):
        broker = BrokerProcess(str(tmp_path / ("broker-%d.log" % len(brokers))), *args)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()


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
