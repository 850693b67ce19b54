"""What warm containers' control connections cost one broker.

Starts a broker process, opens ``--containers`` control connections to it
(raw WebSockets that send ``watch``, as a warm container does), and reports
the broker's resident memory before and after, the time for all of them to
hear of a debugger that arms, and the broker's open file descriptors.

    python bench/control_connections.py [--containers 1000]
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request

import websocket
from _common import REPO

LAMBDA_TOKEN, DEBUGGER_TOKEN = "bench-lambda", "bench-debugger"


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=1000)
    args = parser.parse_args()
    lambda_port, debugger_port = free_port(), free_port()
    env = dict(os.environ, BROKER_LAMBDA_TOKEN=LAMBDA_TOKEN, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN)
    broker = subprocess.Popen(
        [sys.executable, "-m", "broker_server", "--host", "127.0.0.1", "--lambda-port", str(lambda_port)]
        + ["--debugger-port", str(debugger_port), "--log-level", "warning"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sockets = []
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % debugger_port, timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        time.sleep(0.5)
        before, fds_before = rss_kib(broker.pid), fds(broker.pid)
        header = ["Authorization: Bearer " + LAMBDA_TOKEN]
        started = time.monotonic()
        for _ in range(args.containers):
            ws = websocket.create_connection("ws://127.0.0.1:%d/lambda/bench" % lambda_port, header=header, timeout=10)
            ws.send(json.dumps({"type": "watch", "protocol": 1}))
            sockets.append(ws)
        for ws in sockets:
            assert json.loads(ws.recv())["type"] == "debuggers"
        opened_s = time.monotonic() - started
        time.sleep(1.0)
        after, fds_after = rss_kib(broker.pid), fds(broker.pid)
        armed_at = time.monotonic()
        debugger = websocket.create_connection(
            "ws://127.0.0.1:%d/debug/bench" % debugger_port,
            header=["Authorization: Bearer " + DEBUGGER_TOKEN],
            timeout=10,
        )
        for ws in sockets:
            while not json.loads(ws.recv())["armed"]:
                pass  # a heartbeat sent before the debugger armed
        told_s = time.monotonic() - armed_at
        debugger.close()
    finally:
        for ws in sockets:
            ws.close()
        broker.terminate()
        broker.wait(10)
    n = args.containers
    print("control connections:                 %d (opened and answered in %.2f s)" % (n, opened_s))
    print("broker memory (RSS):                 %.1f MiB before, %.1f MiB after" % (before / 1024, after / 1024))
    print("broker memory per control connection: %.1f KiB" % ((after - before) / n))
    print("broker file descriptors:             %d before, %d after" % (fds_before, fds_after))
    print("a debugger arms -> all %d containers told: %.1f ms" % (n, told_s * 1000))


if __name__ == "__main__":
    sys.exit(main())
