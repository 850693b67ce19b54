"""Fixtures that start real processes and always stop them."""

import os
import signal

import pytest

from tests.support.chain import BridgeProcess, BrokerProcess, Function


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    process = BrokerProcess(str(tmp_path_factory.mktemp("broker") / "broker.log"))
    yield process
    process.stop()


@pytest.fixture
def start_bridge(tmp_path, broker):
    started = []

    def start(**kwargs):
        bridge = BridgeProcess(broker, str(tmp_path / ("bridge-%d.log" % len(started))), **kwargs)
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.stop()


@pytest.fixture
def make_function(tmp_path):
    made = []

    def make(handler="app.handler", *, folder=None, **kwargs):
        root = tmp_path / (folder or "task-%d" % len(made))
        root.mkdir(exist_ok=True)
        function = Function(root, handler, **kwargs)
        made.append(function)
        return function

    yield make
    for function in made:
        function.close()


@pytest.fixture
def own_broker(tmp_path):
    """A broker of the test's own, which it may kill or starve."""
    brokers = []

    def start(*args, **kwargs):
        broker = BrokerProcess(str(tmp_path / ("broker-%d.log" % len(brokers))), *args, **kwargs)
        brokers.append(broker)
        return broker

    yield start
    for broker in brokers:
        if broker.process.poll() is None:
            os.kill(broker.process.pid, signal.SIGCONT)
        broker.stop()


def pytest_collection_modifyitems(items):
    # Every end-to-end chain test is also slow: `pytest -m "not slow"` is the
    # fast tier of CONTRIBUTING.md.
    for item in items:
        if item.get_closest_marker("chain"):
            item.add_marker(pytest.mark.slow)
