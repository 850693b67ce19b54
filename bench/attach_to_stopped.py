"""Time from the IDE connecting to ``stopped`` at a breakpoint on the
handler's first line, through bridge -> broker -> proxy -> child, for the
first invocation of a fresh container and for a second, warm one.

Baseline: a DAP client attaching directly to ``debugpy.listen`` (in-process
adapter) in a local process, measured the same way.

    python bench/attach_to_stopped.py [--rounds 5]
"""

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

from _common import median_ms, report

from broker_server.app import BrokerServer
from broker_server.config import BrokerConfig
from lambda_debugger.bridge import AttachBridge
from lambda_debugger.local.function import LocalFunction
from tests.support.dap_client import DapClient

HANDLER = "def handler(event, context):\n    value = event.get('n', 0)  # BREAK\n    return {'n': value}\n\nimport lambda_debugger\n"

DIRECT = (
    "import os, sys, debugpy\n"
    "_, port = debugpy.listen(('127.0.0.1', 0), in_process_debug_adapter=True)\n"
    "print(port, flush=True)\n"
    "debugpy.wait_for_client()\n"
    "def handler(event):\n"
    "    value = event.get('n', 0)  # BREAK\n"
    "    return value\n"
    "handler({})\n"
)


def stop_once(port, path, line):
    """Connect, configure a breakpoint, wait for ``stopped``, continue; return seconds to stopped."""
    start = time.perf_counter()
    client = DapClient.connect("127.0.0.1", port, timeout=30)
    client.attach_and_configure({path: [line]}, timeout=30)
    stopped = client.wait_stopped(timeout=30)
    elapsed = time.perf_counter() - start
    client.continue_(stopped["threadId"])
    client.close()
    return elapsed


def direct_round(root):
    path = os.path.join(root, "direct.py")
    with open(path, "w") as f:
        f.write(DIRECT)
    env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
    process = subprocess.Popen([sys.executable, path], stdout=subprocess.PIPE, text=True, env=env)
    try:
        port = int(process.stdout.readline())
        return stop_once(port, path, 6)
    finally:
        process.wait(30)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    broker = BrokerServer(BrokerConfig(host="127.0.0.1", lambda_port=0, debugger_port=0,
                                       lambda_token="bench-lambda", debugger_token="bench-debugger"))
    broker.start_in_thread()
    cold, warm, direct = [], [], []
    try:
        with tempfile.TemporaryDirectory() as root, open(os.devnull, "w") as devnull:
            path = os.path.join(root, "app.py")
            with open(path, "w") as f:
                f.write(HANDLER)
            env = {"DEBUGGER_ACTIVE": "1", "DEBUGGER_BROKER_ADDRESS": "127.0.0.1:%d" % broker.lambda_port,
                   "DEBUGGER_FUNCTION_ID": "bench", "DEBUGGER_AUTH_TOKEN": "bench-lambda",
                   "DEBUGGER_WAIT_MAX": "30000"}
            for _ in range(args.rounds):
                direct.append(direct_round(root))
                with LocalFunction("app.handler", task_root=root, timeout_s=60, env=env,
                                   stdout=devnull, stderr=devnull) as function:
                    for samples in (cold, warm):
                        bridge = AttachBridge("bench", "127.0.0.1:%d" % broker.debugger_port,
                                              token="bench-debugger", listen=("127.0.0.1", 0), out=devnull)
                        thread = threading.Thread(target=bridge.serve, kwargs={"once": True}, daemon=True)
                        thread.start()
                        result = {}
                        invoker = threading.Thread(target=lambda: result.setdefault("r", function.invoke({"n": 1})))
                        invoker.start()
                        while not [s for s in broker.registry.snapshot() if s["state"] == "waiting"]:
                            time.sleep(0.01)
                        samples.append(stop_once(bridge.address[1], path, 2))
                        invoker.join(30)
                        thread.join(10)
                        assert result["r"].ok, result["r"].payload
    finally:
        broker.stop()
    report([
        ("connect -> stopped, first session (cold)", median_ms(cold), median_ms(direct)),
        ("connect -> stopped, second session (warm)", median_ms(warm), median_ms(direct)),
    ])
    print("medians of %d rounds; baseline: DAP client straight to debugpy.listen" % args.rounds)


if __name__ == "__main__":
    sys.exit(main())
