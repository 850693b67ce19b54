"""500 debug sessions in a row through one broker and one warm Lambda
process: descriptors, threads, child processes and memory stay flat."""

import json
import os

import pytest

from tests.support.chain import BridgeProcess

pytestmark = [pytest.mark.timeout(480), pytest.mark.slow]

SESSIONS = 500
WARM_UP = 50


def usage(pid):
    """(open descriptors, threads, live children, RSS in KiB) of ``pid``."""
    status = dict(line.split(":", 1) for line in open("/proc/%d/status" % pid))
    children = open("/proc/%d/task/%d/children" % (pid, pid)).read().split()
    return (
        len(os.listdir("/proc/%d/fd" % pid)),
        int(status["Threads"]),
        len(children),
        int(status["VmRSS"].split()[0]),
    )


def test_five_hundred_sessions_leave_no_trace(broker, make_function, tmp_path):
    function = make_function(broker=broker)
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"), once=False)
    samples = {}
    try:
        for number in range(1, SESSIONS + 1):
            future = function.invoke_async()
            client = bridge.connect()
            client.attach_and_configure({}, timeout=30)
            result = future.result(timeout=30)
            client.close()
            assert result.ok and json.loads(result.payload)["total"] == 6, number
            if number in (WARM_UP, SESSIONS):
                samples[number] = {
                    "lambda": usage(function.local.pid),
                    "broker": usage(broker.process.pid),
                    "bridge": usage(bridge.process.pid),
                }
        assert function.local.cold_starts == 1  # one warm process served them all
    finally:
        bridge.stop()
    for name, before in samples[WARM_UP].items():
        after = samples[SESSIONS][name]
        fds, threads, children, rss = (b - a for a, b in zip(before, after, strict=True))
        assert abs(fds) <= 2, (name, before, after)
        assert threads == 0 and after[2] == 0, (name, before, after)
        assert rss < 8 * 1024, (name, "RSS grew by %d KiB" % rss)
