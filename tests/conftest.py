"""Fixtures that start real processes and always stop them."""

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
