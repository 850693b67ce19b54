"""Time from a second IDE connecting to ``stopped``, after the first IDE
vanished at a breakpoint while the handler runs on (re-attach), through
bridge -> broker -> proxy -> the same child's debugpy.

Baseline: the first attach of the same invocation, measured the same way.

    python bench/reattach.py [--rounds 5]
"""

import argparse
import os
import socket
import statistics
import sys
import time

from _chain import Chain, break_line, stopped_client
from _common import report

from tests.support.chain import BridgeProcess, wait_until

SOURCE = """import time


def handler(event, context):
    for i in range(event["rounds"]):
        time.sleep(0.01)
        value = i  # BREAK
    return {"n": value}
"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    first, again = [], []
    with Chain(SOURCE + "\nimport lambda_debugger\n") as chain:
        line = break_line(SOURCE)
        for _ in range(args.rounds):
            second_bridge = BridgeProcess(chain.broker, os.path.join(chain.root, "bridge-2.log"), function_id="bench")
            wait_until(lambda bridge=second_bridge: "listening for the IDE" in bridge.output(), 10, "the second bridge")
            port, finish = chain.session({"rounds": 300})  # about 3 s of work if never stopped
            client, _, _, elapsed = stopped_client(port, chain.path, line)
            first.append(elapsed)
            client.sock.shutdown(socket.SHUT_RDWR)  # the IDE vanishes at the breakpoint
            client.close()
            chain.broker.wait_for_state("detached")
            time.sleep(0.5)  # a developer takes longer than this to press F5 again
            client, _, _, elapsed = stopped_client(second_bridge.port, chain.path, line)
            again.append(elapsed)
            client.request("setBreakpoints", {"source": {"path": chain.path}, "breakpoints": []})
            client.disconnect()
            client.close()
            finish()
            second_bridge.stop()
    ms = lambda samples: statistics.median(samples) * 1000  # noqa: E731
    report([("connect -> stopped, re-attach to a running invocation", ms(again), ms(first))])
    print("medians of %d rounds; baseline: the first attach of the same invocation" % args.rounds)


if __name__ == "__main__":
    sys.exit(main())
