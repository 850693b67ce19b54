"""The broker handshake of one invocation, against a broker in a thread."""

import logging
import time

import pytest
import websocket

from lambda_debugger.lambda_side import handshake
from lambda_debugger.lambda_side.budget import WaitBudget
from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, broker_in_thread, free_port

pytestmark = pytest.mark.timeout(30)


class Context:
    function_name = "orders-fn"

    def __init__(self, seconds=60):
        self.deadline = time.monotonic() + seconds

    def get_remaining_time_in_millis(self):
        return int((self.deadline - time.monotonic()) * 1000)


@pytest.fixture
def broker():
    server = broker_in_thread()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def closed_breaker(monkeypatch):
    monkeypatch.setattr(handshake, "broker_breaker", handshake._Breaker())


def shake(port, *, token=LAMBDA_TOKEN, wait_ms=0):
    config = LambdaConfig(
        broker_url="ws://127.0.0.1:%d/lambda/orders" % port, function_id="orders", auth_token=token, wait_max_ms=wait_ms
    )
    context = Context()
    budget = WaitBudget.plan(
        arrived=time.monotonic(),
        remaining_ms=context.get_remaining_time_in_millis(),
        wait_max_ms=wait_ms,
        connect_timeout_s=config.connect_timeout_s,
    )
    found = handshake.Handshake(config, context, "req-1", "Session[orders/req-1]")
    try:
        return found.find_debugger(budget)
    finally:
        if found.broker is not None:
            found.broker.close()


def test_an_armed_debugger_is_found(broker):
    debugger = websocket.create_connection(
        "ws://127.0.0.1:%d/debug/orders" % broker.debugger_port, header=protocol.bearer(DEBUGGER_TOKEN), timeout=5
    )
    try:
        assert isinstance(protocol.decode(debugger.recv()), protocol.Armed)
        paired = shake(broker.lambda_port)
        assert (paired.request_id, paired.function_name) == ("req-1", "orders-fn")
        assert protocol.decode(debugger.recv()) == paired
    finally:
        debugger.close()


def test_nobody_armed_and_no_wait_is_one_info_line(broker, caplog):
    with caplog.at_level(logging.INFO, logger="lambda_debugger"):
        assert shake(broker.lambda_port) is None
    assert "Session[orders/req-1]: broker closed the connection: not waiting (4009)" in caplog.text
    assert not handshake.broker_breaker.open()


def test_a_wait_ends_at_its_budget(broker, caplog):
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="lambda_debugger"):
        assert shake(broker.lambda_port, wait_ms=500) is None
    assert 0.4 < time.monotonic() - started < 1.5
    assert "no debugger attached in time; running normally" in caplog.text


@pytest.mark.parametrize("token", ["wrong-token", DEBUGGER_TOKEN])
def test_a_refused_token_trips_the_breaker(broker, token, caplog):
    assert shake(broker.lambda_port, token=token) is None
    assert "unauthorized (4001)" in caplog.text
    assert handshake.broker_breaker.open()
    assert token not in caplog.text


def test_an_unreachable_broker_trips_the_breaker(caplog):
    assert shake(free_port()) is None
    assert "broker unreachable (ConnectionRefusedError" in caplog.text
    assert handshake.broker_breaker.open()
