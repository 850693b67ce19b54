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


def test_broker_killed_while_stopped_at_a_breakpoint(own_broker, make_function, tmp_path):
    broker = own_broker()
    function = make_function(broker=broker)
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        client.wait_stopped(timeout=30)
        broker.process.kill()
        killed = time.monotonic()
        result = future.result(timeout=30)
        assert time.monotonic() - killed < 5.0
        assert result.ok and json.loads(result.payload)["total"] == 6
        assert "the handler was resumed" in function.logs()
        wait_until(lambda: "session ended" in bridge.output(), 10, "the bridge to notice")
    finally:
        bridge.stop()


def test_a_frozen_lambda_is_reaped_and_the_debugger_told_in_seconds(own_broker, make_function, tmp_path):
    broker = own_broker("--ping-interval", "1")
    function = make_function(broker=broker)
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        client.wait_stopped(timeout=30)
        os.killpg(function.local.pid, signal.SIGSTOP)  # Lambda freezes the whole sandbox
        frozen = time.monotonic()
        output = wait_until(lambda: "session ended" in bridge.output() and bridge.output(), 15, "the bridge")
        assert time.monotonic() - frozen < 6.0
        assert "lambda side disconnected" in output
        os.killpg(function.local.pid, signal.SIGCONT)
        # Thawed, the invocation still completes: the proxy finds the broker
        # gone and resumes the handler.
        result = future.result(timeout=60)
        assert result.ok and json.loads(result.payload)["total"] == 6
    finally:
        try:
            os.killpg(function.local.pid, signal.SIGCONT)
        except (ProcessLookupError, TypeError):
            pass
        bridge.stop()


def test_a_silent_broker_is_given_up_and_the_handler_resumed(own_broker, make_function, tmp_path):
    broker = own_broker("--ping-interval", "0")  # only the proxy's keepalive can notice
    function = make_function(broker=broker)
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        client.wait_stopped(timeout=30)
        os.kill(broker.process.pid, signal.SIGSTOP)  # its host froze: no FIN, no RST, nothing
        silenced = time.monotonic()
        result = future.result(timeout=30)
        assert time.monotonic() - silenced < 13.0
        assert result.ok and json.loads(result.payload)["total"] == 6
        logs = function.logs()
        assert "the broker went silent; the handler runs on without the debugger" in logs
        assert "the handler was resumed" in logs
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)
        bridge.stop()
