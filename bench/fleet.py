"""What nginx in front of the brokers costs: pairs per second and the debug
stream's round trip, through nginx (``deploy/nginx``, three brokers) and
straight to one broker, in the same run.

A pair is what a debug session opens: a debugger arms on /debug/<id>, an
invocation announces itself on /lambda/<id>, both hear ``paired``. The round
trip is a 64-byte binary frame from the debugger to the function and back
(a DAP request and its answer travel so).

    python bench/fleet.py [--pairs 300] [--round-trips 2000]
"""

import argparse
import json
import os
import sys
import tempfile
import time

import _common  # noqa: F401  (puts the repository on sys.path)
import websocket
from _common import median_ms, report

from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, BrokerProcess, free_port
from tests.support.fleet import Fleet


def pair(lambda_base, debug_base, function_id):
    debugger = websocket.create_connection(
        "%s/debug/%s" % (debug_base, function_id), header=protocol.bearer(DEBUGGER_TOKEN), timeout=10
    )
    json.loads(debugger.recv())  # armed
    function = websocket.create_connection(
        "%s/lambda/%s" % (lambda_base, function_id), header=protocol.bearer(LAMBDA_TOKEN), timeout=10
    )
    function.send(protocol.encode(protocol.Invocation("req-" + function_id, 4102444800000, wait_ms=60000)))
    json.loads(function.recv())
    json.loads(debugger.recv())
    return debugger, function


def pairs_per_second(lambda_base, debug_base, count, tag):
    started = time.perf_counter()
    for i in range(count):
        debugger, function = pair(lambda_base, debug_base, "%s-%d" % (tag, i))
        function.close()
        debugger.close()
    return count / (time.perf_counter() - started)


def round_trips(lambda_base, debug_base, count, tag):
    debugger, function = pair(lambda_base, debug_base, tag)
    payload = os.urandom(64)
    samples = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            debugger.send_binary(payload)
            function.send_binary(function.recv())
            assert debugger.recv() == payload
            samples.append(time.perf_counter() - started)
    finally:
        function.close()
        debugger.close()
    return samples


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=300)
    parser.add_argument("--round-trips", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        fleet = Fleet(os.path.join(folder, "fleet"))
        port = free_port()
        direct = BrokerProcess(os.path.join(folder, "direct.log"), ports=(port, port))
        try:
            through = ("ws://127.0.0.1:%d" % fleet.nginx.lambda_port, "ws://127.0.0.1:%d" % fleet.nginx.debugger_port)
            straight = ("ws://127.0.0.1:%d" % port,) * 2
            rates = {}
            for name, bases in (("direct", straight), ("nginx", through)) * 2:  # interleaved, twice
                rates.setdefault(name, []).append(pairs_per_second(*bases, args.pairs, name + str(len(rates))))
            nginx_rtt = round_trips(*through, args.round_trips, "rtt-nginx")
            direct_rtt = round_trips(*straight, args.round_trips, "rtt-direct")
        finally:
            fleet.stop()
            direct.stop()
    best = {name: max(values) for name, values in rates.items()}
    print(
        "pairs per second: %.0f through nginx and 3 brokers, %.0f straight to one broker (best of 2 runs of %d)"
        % (best["nginx"], best["direct"], args.pairs)
    )
    report(
        [
            ("debug stream round trip, p50", median_ms(nginx_rtt), median_ms(direct_rtt)),
            ("debug stream round trip, p99", _p99(nginx_rtt), _p99(direct_rtt)),
        ]
    )
    print("added by nginx per round trip: %.3f ms (p50)" % (median_ms(nginx_rtt) - median_ms(direct_rtt)))


def _p99(samples):
    return sorted(samples)[int(len(samples) * 0.99) - 1] * 1000.0


if __name__ == "__main__":
    sys.exit(main())
