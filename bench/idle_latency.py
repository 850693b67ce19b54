"""Added latency per invocation when active but nobody attaches.

Runs the same handler in the real runtime client twice: plain, and with
``DEBUGGER_ACTIVE`` on, a live broker and ``DEBUGGER_WAIT_MAX=0`` (pair only
with a debugger already armed). Compares the median invocation durations
measured by the embedded Runtime API, and counts the connections the broker
accepted from the function. With ``--broker-rtt`` a delay proxy
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


def measure(root, env, invocations):
    with open(os.devnull, "wb") as devnull:
        with LocalFunction("app.handler", task_root=root, timeout_s=30, env=env, stdout=devnull, stderr=devnull) as fn:
            fn.invoke({})  # cold start, not counted
            samples = []
            for _ in range(invocations):
                result = fn.invoke({})
                assert result.ok, result.payload
                samples.append(result.duration_ms / 1000.0)
            return samples


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
            plain = measure(root, {"PYTHONPATH": REPO}, args.invocations)
            active = measure(
                root,
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
    print(
        "added per invocation: %.3f ms (median of %d invocations each)"
        % (median_ms(active) - median_ms(plain), args.invocations)
    )
    print(
        "broker connections from the function: %d for %d invocations (and a cold start); %g ms to the broker"
        % (counter.count, args.invocations, args.broker_rtt)
    )


if __name__ == "__main__":
    sys.exit(main())
