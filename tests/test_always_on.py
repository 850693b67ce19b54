"""Always on (``DEBUGGER_WAIT_MAX=0``) and ``attach --when``, end to end:
the real runtime client, broker, bridge and debugpy.

An idle invocation asks nothing of the broker: each container keeps one
control connection, which survives freezing and broker restarts. A debugger
with a ``--when`` filter pairs only with the invocations whose event
matches, and every other invocation runs as without the package.
"""

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.chain import (
    DEBUGGER_TOKEN,
    LAMBDA_TOKEN,
    REPO,
    BridgeProcess,
    BrokerProcess,
    break_line,
    wait_until,
)

pytestmark = [pytest.mark.timeout(120), pytest.mark.chain]

ALWAYS_ON = {"DEBUGGER_WAIT_MAX": "0"}


def order(user, prices=(1, 2, 3)):
    return {"user": user, "items": [{"price": p} for p in prices]}


def plain_payload(make_function, event):
    """What the handler returns without the package's debugger."""
    plain = make_function(folder="plain-%s" % event["user"], env={"DEBUGGER_ACTIVE": "0"})
    result = plain.invoke(event)
    assert result.ok, result.payload
    return json.loads(result.payload)


class ArmedIde:
    """An IDE attached through a bridge, configured in the background: the
    bridge pairs (and ``attach`` is answered) only when an invocation comes."""

    def __init__(self, bridge: BridgeProcess, function_path: str):
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.client = bridge.connect(timeout=60)
        self.configured = self.pool.submit(
            self.client.attach_and_configure, {function_path: [break_line(function_path)]}, timeout=60
        )

    def stop_and_read(self, expression="event['user']"):
        """Wait for the breakpoint; return ``expression`` evaluated there, then go on."""
        self.configured.result(timeout=60)
        stopped = self.client.wait_stopped(timeout=30)
        frame = self.client.stack_trace(stopped["threadId"])[0]
        value = self.client.evaluate(expression, frame["id"])
        self.client.continue_(stopped["threadId"])
        return value

    def close(self):
        self.client.close()
        self.pool.shutdown(wait=False)


@pytest.fixture
def filtered_debugger(tmp_path):
    """start(broker, function_path, when) -> (bridge, ide): a bridge with
    ``--when`` and an IDE armed through it; both closed after the test."""
    started = []

    def start(broker, function_path, when):
        bridge = BridgeProcess(broker, str(tmp_path / ("bridge-%d.log" % len(started))), extra_args=("--when", when))
        started.append([bridge, None])
        started[-1][1] = ArmedIde(bridge, function_path)
        return started[-1]

    yield start
    for bridge, ide in started:
        if ide is not None:
            ide.close()
        bridge.stop()


def test_idle_invocations_cost_one_connection_per_container(own_broker, make_function):
    broker = own_broker()
    function = make_function(broker=broker, env=ALWAYS_ON)
    expected = plain_payload(make_function, order("bob"))
    for _ in range(30):
        result = function.invoke(order("bob"))
        assert result.ok and json.loads(result.payload) == expected
    assert broker.lambda_connections() == 1
    assert broker.status()["control_connections_by_function"] == {"orders": 1}
    # What a developer sees: the container is connected, nothing is waiting.
    listing = subprocess.run(
        [sys.executable, "-m", "lambda_debugger", "sessions", "--broker", "127.0.0.1:%d" % broker.debugger_port],
        env=dict(os.environ, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.splitlines() == ["no sessions", "always on, warm containers connected: orders 1"]
    logs = function.logs()
    assert logs.count("control connection to the broker open; no debugger armed") == 1
    assert "waiting" not in logs and "debugger attached" not in logs


def test_when_pairs_only_the_invocations_that_match(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    function = make_function(broker=broker, env=ALWAYS_ON)
    expected = {user: plain_payload(make_function, order(user)) for user in ("alice", "bob")}
    assert function.invoke(order("bob")).ok  # the control connection is open
    bridge, ide = filtered_debugger(broker, function.path, "user == 'alice'")
    armed = broker.wait_for_state("armed")
    assert armed[0]["when"] == "user == 'alice'"
    # Bob's invocations are neither paired nor delayed.
    for _ in range(3):
        result = function.invoke(order("bob"))
        assert result.ok and json.loads(result.payload) == expected["bob"]
        assert result.duration_ms < 500
    assert broker.wait_for_state("armed")
    future = function.invoke_async(order("alice"))
    assert ide.stop_and_read() == "'alice'"
    result = future.result(timeout=60)
    assert result.ok and json.loads(result.payload) == expected["alice"]
    output = bridge.output()
    assert "armed for invocations of orders whose event matches user == 'alice'" in output
    assert "attached to orders" in output
    assert "this event matches the debugger's filter \"user == 'alice'\"" in function.logs()
    # One control connection and one connection for the debugged invocation.
    assert broker.lambda_connections() == 2


def test_debuggers_with_different_filters_each_get_their_own(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    containers = [make_function(broker=broker, env=ALWAYS_ON, folder="container-%d" % i) for i in range(2)]
    for container in containers:
        assert container.invoke(order("carol")).ok
    # Bob's invocations go to the first container, Alice's to the second.
    _, alice_ide = filtered_debugger(broker, containers[1].path, "user == 'alice'")
    _, bob_ide = filtered_debugger(broker, containers[0].path, "user == 'bob'")
    broker.wait_for_state("armed", count=2)
    bob = containers[0].invoke_async(order("bob"))
    alice = containers[1].invoke_async(order("alice"))
    assert bob_ide.stop_and_read() == "'bob'"
    assert alice_ide.stop_and_read() == "'alice'"
    assert bob.result(timeout=60).ok and alice.result(timeout=60).ok
    # Carol's invocation matches no filter: it runs at once.
    result = containers[0].invoke(order("carol"))
    assert result.ok and result.duration_ms < 500


def test_a_filtered_debugger_asks_an_invocation_that_is_already_waiting(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    function = make_function(broker=broker, env={"DEBUGGER_WAIT_MAX": "30000"})
    future = function.invoke_async(order("alice"))
    broker.wait_for_state("waiting")
    bridge, ide = filtered_debugger(broker, function.path, "user == 'alice'")
    assert ide.stop_and_read() == "'alice'"
    assert future.result(timeout=60).ok


def test_an_invocation_that_does_not_match_waits_on_without_pairing(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    function = make_function(broker=broker, env={"DEBUGGER_WAIT_MAX": "3000"})
    expected = plain_payload(make_function, order("bob"))
    bridge, ide = filtered_debugger(broker, function.path, "user == 'alice'")
    broker.wait_for_state("armed")
    result = function.invoke(order("bob"))
    assert result.ok and json.loads(result.payload) == expected
    assert "no debugger attached in time" in function.logs()
    assert broker.wait_for_state("armed")  # still armed, for Alice


def test_a_filter_that_fails_on_an_event_is_no_match_logged_once(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    function = make_function(broker=broker, env=ALWAYS_ON)
    expected = plain_payload(make_function, order("bob"))
    assert function.invoke(order("bob")).ok
    # length() of a number is a JMESPath type error, on every event here.
    bridge, ide = filtered_debugger(broker, function.path, "length(items[0].price) > `1`")
    broker.wait_for_state("armed")
    for _ in range(3):
        result = function.invoke(order("bob"))
        assert result.ok and json.loads(result.payload) == expected
    logs = function.logs()
    assert logs.count("failed on an event") == 1
    assert "counted as no match" in logs


def test_a_broker_restart_costs_one_new_connection_and_loses_nothing(own_broker, make_function, filtered_debugger):
    broker = own_broker()
    ports = (broker.lambda_port, broker.debugger_port)
    function = make_function(broker=broker, env=ALWAYS_ON)
    expected = plain_payload(make_function, order("alice"))
    for _ in range(3):
        assert json.loads(function.invoke(order("alice")).payload) == expected
    broker.process.kill()
    broker.process.wait(5)
    restarted = own_broker(ports=ports)
    # The container finds its connection closed and opens one to the new broker.
    for _ in range(3):
        result = function.invoke(order("alice"))
        assert result.ok and json.loads(result.payload) == expected
    assert restarted.lambda_connections() == 1
    assert restarted.status()["control_connections"] == 1
    bridge, ide = filtered_debugger(restarted, function.path, "user == 'alice'")
    restarted.wait_for_state("armed")
    future = function.invoke_async(order("alice"))
    assert ide.stop_and_read() == "'alice'"
    assert json.loads(future.result(timeout=60).payload) == expected
    # The broker gone for good: invocations run normally, without delay.
    restarted.process.kill()
    restarted.process.wait(5)
    for _ in range(3):
        result = function.invoke(order("alice"))
        assert result.ok and json.loads(result.payload) == expected
        assert result.duration_ms < 1000  # a refused connection, then the breaker: no wait
    assert "broker unreachable" in function.logs()


def test_a_frozen_container_keeps_its_connection_and_sees_a_debugger_armed_meanwhile(
    own_broker, make_function, filtered_debugger
):
    # Pings every second and a heartbeat every second: a frozen container
    # answers neither, for longer than the broker would wait for a pong.
    broker = own_broker("--ping-interval", "1", "--control-heartbeat", "1")
    function = make_function(broker=broker, env=ALWAYS_ON)
    expected = plain_payload(make_function, order("alice"))
    assert function.invoke(order("alice")).ok
    os.killpg(function.local.pid, signal.SIGSTOP)  # Lambda freezes the whole sandbox
    try:
        _, ide = filtered_debugger(broker, function.path, "user == 'alice'")
        broker.wait_for_state("armed")
        time.sleep(4.0)  # longer than every keepalive of the broker
        assert broker.status()["control_connections"] == 1
    finally:
        os.killpg(function.local.pid, signal.SIGCONT)
    future = function.invoke_async(order("alice"))
    assert ide.stop_and_read() == "'alice'"
    assert json.loads(future.result(timeout=60).payload) == expected
    # The control connection outlived the freeze: no new one was opened.
    assert broker.lambda_connections() == 2


def next_change(ws, armed):
    """The next armed list on ``ws`` that differs from ``armed`` (the broker
    re-sends the same list as a heartbeat)."""
    for _ in range(5):
        message = json.loads(ws.recv())
        assert message["type"] == "debuggers"
        if message["armed"] != armed:
            return message["armed"]
    raise AssertionError("the armed list did not change")


def test_a_thousand_control_connections_all_hear_of_a_debugger(own_broker):
    import resource

    import websocket

    # 1,000 connections on each side: more than a default soft limit of 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard > soft):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096 if hard == resource.RLIM_INFINITY else min(hard, 4096), hard))
    broker: BrokerProcess = own_broker()  # inherits the limit
    url = "ws://127.0.0.1:%d/lambda/fleet-fn" % broker.lambda_port
    header = ["Authorization: Bearer " + LAMBDA_TOKEN]
    sockets = []
    try:
        for _ in range(1000):
            ws = websocket.create_connection(url, header=header, timeout=10)
            ws.send(json.dumps({"type": "watch", "protocol": 1}))
            sockets.append(ws)
        for ws in sockets:
            assert json.loads(ws.recv()) == {"type": "debuggers", "armed": [], "heartbeat_s": 20}  # at once
        assert broker.status()["control_connections"] == 1000
        debugger = websocket.create_connection(
            "ws://127.0.0.1:%d/debug/fleet-fn?when=user" % broker.debugger_port,
            header=["Authorization: Bearer " + DEBUGGER_TOKEN],
            timeout=10,
        )
        try:
            assert json.loads(debugger.recv())["type"] == "armed"
            for ws in sockets:
                assert next_change(ws, []) == [{"id": 1, "when": "user"}]
        finally:
            debugger.close()
        for ws in sockets:
            assert next_change(ws, [{"id": 1, "when": "user"}]) == []
    finally:
        for ws in sockets:
            ws.close()
    wait_until(lambda: broker.status()["control_connections"] == 0, 15, "the broker to forget them")
