"""Load on one broker: many waiting invocations plus relaying sessions.

Opens ``--waiting`` Lambda connections that announce an invocation and wait,
then ``--relaying`` Lambda/debugger pairs; in each pair the debugger sends
``--messages`` timestamped messages that the Lambda side echoes. Reports the
broker's RSS, the round-trip latency through the broker (p50/p99), and bytes
lost (must be 0). The broker runs as its own process.

    python bench/load.py [--waiting 1000] [--relaying 100] [--messages 50]
"""

import argparse
import asyncio
import os
import resource
import struct
import sys
import time

import _common  # noqa: F401  (puts the repository on sys.path)
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, BrokerProcess


def rss_kib(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])


async def connect(url, token):
    return await websocket_connect(HTTPRequest(url, headers=protocol.bearer(token)), max_message_size=2**24)


async def waiting_lambda(broker, number):
    ws = await connect("ws://127.0.0.1:%d/lambda/wait-%d" % (broker.lambda_port, number), LAMBDA_TOKEN)
    await ws.write_message(protocol.encode(protocol.Invocation("w-%d" % number, 2**41, wait_ms=600000)))
    return ws


async def relaying_pair(broker, number, messages, payload_size, latencies, totals):
    function_id = "relay-%d" % number
    lam = await connect("ws://127.0.0.1:%d/lambda/%s" % (broker.lambda_port, function_id), LAMBDA_TOKEN)
    await lam.write_message(protocol.encode(protocol.Invocation("r-%d" % number, 2**41, wait_ms=600000)))
    dbg = await connect("ws://127.0.0.1:%d/debug/%s" % (broker.debugger_port, function_id), DEBUGGER_TOKEN)
    for ws in (lam, dbg):
        while True:  # the debugger may be armed first, then paired
            message = await ws.read_message()
            assert message is not None, (ws.close_code, ws.close_reason)
            if isinstance(protocol.decode(message), protocol.Paired):
                break

    async def echo():
        for _ in range(messages):
            data = await lam.read_message()
            totals["lambda_received"] += len(data)
            await lam.write_message(data, binary=True)

    echoing = asyncio.ensure_future(echo())
    padding = os.urandom(payload_size)
    for _ in range(messages):
        data = struct.pack("!d", time.perf_counter()) + padding
        totals["sent"] += len(data)
        await dbg.write_message(data, binary=True)
        back = await dbg.read_message()
        latencies.append(time.perf_counter() - struct.unpack("!d", back[:8])[0])
        totals["debugger_received"] += len(back)
    await echoing
    lam.close(protocol.CloseCode.INVOCATION_DONE)
    dbg.close()


async def run(args, broker):
    baseline = rss_kib(broker.process.pid)
    started = time.perf_counter()
    waiting = []
    for start in range(0, args.waiting, 100):  # connect in batches of 100
        waiting += await asyncio.gather(
            *(waiting_lambda(broker, n) for n in range(start, min(args.waiting, start + 100)))
        )
    connected = time.perf_counter() - started
    while len([s for s in broker.sessions() if s["state"] == "waiting"]) < args.waiting:
        await asyncio.sleep(0.1)
    rss_waiting = rss_kib(broker.process.pid)
    latencies, totals = [], {"sent": 0, "lambda_received": 0, "debugger_received": 0}
    started = time.perf_counter()
    await asyncio.gather(
        *(relaying_pair(broker, n, args.messages, args.payload, latencies, totals) for n in range(args.relaying))
    )
    relay_s = time.perf_counter() - started
    rss_peak = rss_kib(broker.process.pid)
    for ws in waiting:
        ws.close()
    latencies.sort()
    p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000  # noqa: E731
    lost = (totals["sent"] - totals["lambda_received"]) + (totals["sent"] - totals["debugger_received"])
    print("waiting invocations: %d (connected in %.1f s)" % (args.waiting, connected))
    print(
        "relaying sessions:   %d x %d round trips of %d bytes in %.1f s"
        % (args.relaying, args.messages, args.payload + 8, relay_s)
    )
    print(
        "broker RSS:          %.1f MiB idle, %.1f MiB with %d waiting, %.1f MiB while relaying"
        % (baseline / 1024, rss_waiting / 1024, args.waiting, rss_peak / 1024)
    )
    print(
        "round trip through the broker (debugger -> lambda -> debugger): p50 %.2f ms, p99 %.2f ms" % (p(0.5), p(0.99))
    )
    print("bytes lost:          %d of %d sent each way" % (lost, totals["sent"]))
    return lost


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--waiting", type=int, default=1000)
    parser.add_argument("--relaying", type=int, default=100)
    parser.add_argument("--messages", type=int, default=50)
    parser.add_argument("--payload", type=int, default=1024)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (args.waiting + 2 * args.relaying) + 256
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))  # the broker inherits it
    broker = BrokerProcess(
        "/tmp/lambda-debugger-load-broker.log",
        "--max-sessions",
        str(args.waiting + args.relaying + 10),
        "--log-level",
        "warning",
    )
    try:
        lost = asyncio.run(run(args, broker))
    finally:
        broker.stop()
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
