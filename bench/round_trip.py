"""DAP request round trips and a 5 MB result, through the chain and direct.

Stopped at a breakpoint, sends ``--requests`` stackTrace requests one after
the other (p50/p99 per request), then evaluates a 5 MB string
(``clipboard`` context, so debugpy returns all of it) ``--large`` times.
The chain is IDE -> bridge -> broker -> proxy -> child; the baseline is the
same client straight to ``debugpy.listen`` in a local process. The bridge runs
with ``--no-prefetch``: with prefetch, the repeated stackTrace would be
answered by the bridge itself, and this measures the relay (``bench/wan.py``
measures prefetch).

    python bench/round_trip.py [--requests 200] [--large 5]
"""

import argparse
import statistics
import sys
import time

from _chain import Chain, Direct, break_line, stopped_client
from _common import report

SOURCE = (
    "def handler(event, context):\n"
    "    big = 'x' * (5 * 1024 * 1024)\n"
    "    value = len(big)  # BREAK\n"
    "    return {'n': value}\n"
)


def measure(client, thread_id, frame_id, requests, large):
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        client.request("stackTrace", {"threadId": thread_id})
        samples.append(time.perf_counter() - start)
    sizes, big = set(), []
    for _ in range(large):
        start = time.perf_counter()
        result = client.evaluate("big", frame_id, context="clipboard")
        big.append(time.perf_counter() - start)
        sizes.add(len(result))
    client.continue_(thread_id)
    client.close()
    return samples, big, sizes


def p(samples, q):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--large", type=int, default=5)
    args = parser.parse_args()
    baselines = {}
    for in_process in (True, False):
        direct = Direct(SOURCE, in_process=in_process)
        port, finish = direct.session()
        client, thread_id, frame_id, _ = stopped_client(port, direct.path, break_line(SOURCE, direct.line_offset))
        baselines[in_process] = measure(client, thread_id, frame_id, args.requests, args.large)
        finish()
    base_rt, base_big, base_sizes = baselines[True]
    adapter_rt, adapter_big, _ = baselines[False]
    with Chain(SOURCE + "\nimport lambda_debugger\n") as chain:
        port, finish = chain.session(bridge_args=["--no-prefetch"])
        client, thread_id, frame_id, _ = stopped_client(port, chain.path, break_line(SOURCE))
        chain_rt, chain_big, chain_sizes = measure(client, thread_id, frame_id, args.requests, args.large)
        finish()
    print("baseline: debugpy.listen(in_process_debug_adapter=True), pydevd speaking DAP itself")
    report(
        [
            ("stackTrace round trip p50", p(chain_rt, 0.5), p(base_rt, 0.5)),
            ("stackTrace round trip p99", p(chain_rt, 0.99), p(base_rt, 0.99)),
            ("5 MB evaluate result (median)", statistics.median(chain_big) * 1000, statistics.median(base_big) * 1000),
        ]
    )
    print("baseline: debugpy.listen() with its default adapter process")
    report(
        [
            ("stackTrace round trip p50", p(chain_rt, 0.5), p(adapter_rt, 0.5)),
            ("stackTrace round trip p99", p(chain_rt, 0.99), p(adapter_rt, 0.99)),
            (
                "5 MB evaluate result (median)",
                statistics.median(chain_big) * 1000,
                statistics.median(adapter_big) * 1000,
            ),
        ]
    )
    print("evaluate result sizes: chain %s, direct %s characters" % (sorted(chain_sizes), sorted(base_sizes)))
    print("%d round trips and %d large results each" % (args.requests, args.large))


if __name__ == "__main__":
    sys.exit(main())
