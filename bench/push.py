"""Edit -> stopped in the new code, in the real Lambda runtime, without a deploy.

The developer's link is a delay proxy between the attach bridge and the
broker (``--rtt`` ms round trip). The function's task root holds the
deployed code; the developer's directory, pushed with ``attach --push``,
holds the edit. Each sample writes an edit to a local file, then:

* ``re-invoke``: a new invocation comes (the IDE is attached and waiting,
  as with VS Code's F5 before the event is sent); measured from the edit to
  the ``stopped`` event at the breakpoint in the edited code;
* ``restart``: the IDE, stopped in the running invocation, sends ``restart``;
  measured from the edit to the ``stopped`` event of the fresh run.

Each is measured for a one-file edit and for an edit that also changes a
1 MB module (pushed whole). The baseline, in the same run on the same link:
``re-invoke`` without ``--push`` (the deployed code, as before this
feature): invocation -> stopped. Every sample checks that the stop is in the
edited code (a value only the edit computes).

    python bench/push.py [--rtt 0,100] [--samples 7] [--mbit 0]
"""

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import types

from _chain import debuggable_function
from delay_proxy import DelayProxy

from tests.support.chain import BridgeProcess, BrokerProcess
from tests.support.dap_client import DapClient

HANDLER = """\
from data import ROWS


def handler(event, context):
    value = {value!r} + len(ROWS)
    return {{"value": value}}  # BREAK


import lambda_debugger  # noqa
"""

#: About 1 MB of source: a module of data, changed by the big edit.
BIG = "ROWS = [\n" + "".join("    %r,\n" % ("row %06d " % i + "x" * 40) for i in range(18000)) + "]\n"


class Bench:
    def __init__(self, rtt_ms, mbit=0.0):
        self.root = tempfile.mkdtemp()
        self.task_root = os.path.join(self.root, "task")
        self.local = os.path.join(self.root, "laptop")
        os.makedirs(self.task_root)
        os.makedirs(self.local)
        for folder in (self.task_root, self.local):
            self._write(folder, "app.py", HANDLER.format(value=0))
            self._write(folder, "data.py", BIG)
        self.devnull = open(os.devnull, "w")
        self.broker = BrokerProcess(os.path.join(self.root, "broker.log"))
        self.link = DelayProxy(self.broker.debugger_port, rtt_ms / 2.0, mbit=mbit)
        self.function = debuggable_function(
            self.task_root, self.broker.lambda_port, "push", self.devnull, wait_ms=60000
        )
        self.line = HANDLER.splitlines().index('    return {{"value": value}}  # BREAK') + 1
        self.edits = 0

    @staticmethod
    def _write(folder, name, text):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)

    def edit(self, big):
        """Write an edit; return the value only the edited handler computes."""
        self.edits += 1
        self._write(self.local, "app.py", HANDLER.format(value=self.edits * 1000))
        # The 1 MB module differs from the deployed one only for a big edit.
        self._write(self.local, "data.py", BIG.replace("row ", "r%d " % (self.edits % 10), 1) if big else BIG)
        return self.edits * 1000 + 18000

    def bridge(self, push):
        far = types.SimpleNamespace(scheme="http", debugger_port=self.link.port)
        bridge = BridgeProcess(
            far,
            os.path.join(self.root, "bridge.log"),
            function_id="push",
            once=False,
            extra_args=["--push", self.local] if push else [],
        )
        bridge.wait_listening(30)
        return bridge

    def armed_client(self, bridge, push):
        client = DapClient.connect("127.0.0.1", bridge.port, timeout=30)
        local = os.path.join(self.local if push else self.task_root, "app.py")
        configure = threading.Thread(
            target=client.attach_and_configure,
            args=({local: [self.line]},),
            kwargs={
                "path_mappings": [{"localRoot": os.path.dirname(local), "remoteRoot": self.task_root}],
                "timeout": 60,
            },
            daemon=True,
        )
        configure.start()
        return client, configure

    def invoke(self, result):
        thread = threading.Thread(target=lambda: result.append(self.function.invoke({})), daemon=True)
        thread.start()
        return thread

    def stopped_value(self, client):
        thread_id = client.wait_stopped(timeout=60)["threadId"]
        frame = client.stack_trace(thread_id)[0]
        return thread_id, int(client.evaluate("value", frame["id"]))

    def reinvoke(self, push, big, samples):
        bridge = self.bridge(push)
        times = []
        try:
            for _ in range(samples + 1):  # the first one warms the container up
                client, configure = self.armed_client(bridge, push)
                time.sleep(0.3)  # the bridge has armed
                start = time.perf_counter()
                expected = self.edit(big) if push else 18000
                result = []
                invoking = self.invoke(result)
                thread_id, value = self.stopped_value(client)
                times.append((time.perf_counter() - start) * 1000.0)
                assert value == expected, (value, expected)
                configure.join(30)
                client.continue_(thread_id)
                invoking.join(60)
                assert result and result[0].ok, result
                client.close()
                time.sleep(0.2)
        finally:
            bridge.stop()
        return times[1:]

    def restart(self, big, samples):
        bridge = self.bridge(True)
        times = []
        try:
            client, configure = self.armed_client(bridge, True)
            time.sleep(0.3)
            result = []
            invoking = self.invoke(result)
            thread_id, _ = self.stopped_value(client)
            configure.join(30)
            for _ in range(samples):
                start = time.perf_counter()
                expected = self.edit(big)
                client.request("restart", {}, timeout=60)
                thread_id, value = self.stopped_value(client)
                times.append((time.perf_counter() - start) * 1000.0)
                assert value == expected, (value, expected)
            client.continue_(thread_id)
            invoking.join(60)
            assert result and result[0].ok, result
            client.close()
        finally:
            bridge.stop()
        return times

    def close(self):
        self.function.close()
        self.link.stop()
        self.broker.stop()
        self.devnull.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rtt", default="0,100", help="round trips (ms) of the developer's link, comma-separated")
    parser.add_argument("--samples", type=int, default=7)
    parser.add_argument("--mbit", type=float, default=0.0, help="bandwidth cap of the developer's link (0: none)")
    args = parser.parse_args()
    print("| figure | " + " | ".join("%s ms RTT" % r for r in args.rtt.split(",")) + " |")
    print("|---|" + "---|" * len(args.rtt.split(",")))
    rows = {}
    for rtt in [float(r) for r in args.rtt.split(",")]:
        bench = Bench(rtt, args.mbit)
        try:
            base = statistics.median(bench.reinvoke(False, False, args.samples))
            figures = [
                ("invocation -> stopped, deployed code, no --push (baseline)", base),
                ("edit -> stopped, re-invoke, 1 file", statistics.median(bench.reinvoke(True, False, args.samples))),
                (
                    "edit -> stopped, re-invoke, 1 file + 1 MB",
                    statistics.median(bench.reinvoke(True, True, args.samples)),
                ),
                ("edit -> stopped, restart, 1 file", statistics.median(bench.restart(False, args.samples))),
                ("edit -> stopped, restart, 1 file + 1 MB", statistics.median(bench.restart(True, args.samples))),
            ]
        finally:
            bench.close()
        for name, value in figures:
            ratio = "" if name.endswith("(baseline)") else " (%.2fx)" % (value / base)
            rows.setdefault(name, []).append("%.0f%s" % (value, ratio))
    for name, cells in rows.items():
        print("| %s | %s |" % (name, " | ".join(cells)))
    print(
        "\nmedians of %d samples in ms; ratios against the baseline of the same link; bandwidth cap %s"
        % (args.samples, "%g Mbit/s" % args.mbit if args.mbit else "none")
    )


if __name__ == "__main__":
    sys.exit(main())
