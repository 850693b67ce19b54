"""Added latency per invocation when active but nobody attaches.

Runs the same handler in two containers of the real runtime client, invoked
in turn: plain, and with ``DEBUGGER_ACTIVE`` on, a live broker and
``DEBUGGER_WAIT_MAX=0`` (pair only with a debugger already armed). Compares
the invocation durations measured by the embedded Runtime API (the median of
the paired differences), and counts the connections the broker accepted
from the function. With ``--broker-rtt`` a delay proxy
(``bench/delay_proxy.py``) sits between the function and the broker.

    python bench/idle_latency.py [--invocations 200] [--broker-rtt 0]
"""

import argparse
import logging
import os
import sys
import tempfile

from _common import REPO, median_ms, report
from delay_proxy import DelayProxy

from broker_server.app import BrokerServer
from broker_server.config import BrokerConfig
from lambda_debugger.local.function import LocalFunction

HANDLER = "def handler(event, context):\n    return {'ok': True}\n\nimport lambda_debugger\n"


def measure(root, plain_env, active_env, invocations):
    """Invoke a plain container and an active one in turn, so that both see
    the same machine load; return their durations in seconds."""
    with open(os.devnull, "wb") as devnull:
        run = dict(task_root=root, timeout_s=30, stdout=devnull, stderr=devnull)
        with LocalFunction("app.handler", env=plain_env, **run) as plain:
            with LocalFunction("app.handler", env=active_env, **run) as active:
                for fn in (plain, active):
                    fn.invoke({})  # cold start, not counted
                samples = {"plain": [], "active": []}
                for _ in range(invocations):
                    for name, fn in (("plain", plain), ("active", active)):
                        result = fn.invoke({})
                        assert result.ok, result.payload
                        samples[name].append(result.duration_ms / 1000.0)
                return samples["plain"], samples["active"]


class ConnectionCount(logging.Handler):
    """Counts the broker's ``connection_accepted`` lines of the Lambda side."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def emit(self, record):
        text = record.getMessage()
        if text.startswith("event=connection_accepted") and " side=lambda " in text:
            self.count += 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument("--broker-rtt", type=float, default=0.0, help="round trip (ms) between function and broker")
    args = parser.parse_args()
    counter = ConnectionCount()
    logging.getLogger("broker_server").addHandler(counter)
    logging.getLogger("broker_server").setLevel(logging.INFO)
    broker = BrokerServer(
        BrokerConfig(
            host="127.0.0.1",
            lambda_port=0,
            debugger_port=0,
            lambda_token="bench-lambda",
            debugger_token="bench-debugger",
        )
    )
    broker.start_in_thread()
    link = DelayProxy(broker.lambda_port, args.broker_rtt / 2.0) if args.broker_rtt else None
    try:
        with tempfile.TemporaryDirectory() as root:
            with open(os.path.join(root, "app.py"), "w") as f:
                f.write(HANDLER)
            plain, active = measure(
                root,
                {"PYTHONPATH": REPO},
                {
                    "PYTHONPATH": REPO,
                    "DEBUGGER_ACTIVE": "1",
                    "DEBUGGER_BROKER_ADDRESS": "127.0.0.1:%d" % (link.port if link else broker.lambda_port),
                    "DEBUGGER_FUNCTION_ID": "bench",
                    "DEBUGGER_AUTH_TOKEN": "bench-lambda",
                    "DEBUGGER_WAIT_MAX": "0",
                },
                args.invocations,
            )
    finally:
        if link:
            link.stop()
        broker.stop()
    report([("invocation, active, nobody attached (p50)", median_ms(active), median_ms(plain))])
    differences = [a - p for a, p in zip(active, plain, strict=True)]
    print(
        "added per invocation: %.3f ms (median of %d paired differences; medians differ by %.3f ms)"
        % (median_ms(differences), args.invocations, median_ms(active) - median_ms(plain))
    )
    print(
        "broker connections from the function: %d for %d invocations (and a cold start), %.1f per 1,000;"
        " %g ms round trip to the broker"
        % (counter.count, args.invocations, counter.count * 1000.0 / (args.invocations + 1), args.broker_rtt)
    )


if __name__ == "__main__":
    sys.exit(main())
