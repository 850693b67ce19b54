"""The chain (broker, attach bridge, Lambda runtime) and a direct debugpy
baseline, as separate processes, for the benchmarks."""

import os
import subprocess
import sys
import tempfile
import threading
import time

import _common  # noqa: F401  (puts the repository on sys.path)

from lambda_debugger.local.function import LocalFunction
from tests.support.chain import LAMBDA_TOKEN, REPO, BridgeProcess, BrokerProcess, wait_until
from tests.support.dap_client import DapClient


def debuggable_function(root, broker_port, function_id, devnull, *, timeout_s=120, wait_ms=30000):
    """``app.handler`` in ``root``, in the real runtime client, debuggable
    through the broker's Lambda port ``broker_port``."""
    return LocalFunction(
        "app.handler",
        task_root=root,
        timeout_s=timeout_s,
        stdout=devnull,
        stderr=devnull,
        env={
            "PYTHONPATH": REPO,
            "DEBUGGER_ACTIVE": "1",
            "DEBUGGER_FUNCTION_ID": function_id,
            "DEBUGGER_BROKER_ADDRESS": "127.0.0.1:%d" % broker_port,
            "DEBUGGER_AUTH_TOKEN": LAMBDA_TOKEN,
            "DEBUGGER_WAIT_MAX": str(wait_ms),
        },
    )


class Chain:
    """The chain as separate processes, as deployed: the broker, one attach
    bridge per session, and one warm Lambda runtime running ``source``."""

    def __init__(self, source: str):
        self.root = tempfile.mkdtemp()
        self.path = os.path.join(self.root, "app.py")
        with open(self.path, "w") as f:
            f.write(source)
        self.devnull = open(os.devnull, "w")
        self.function = None
        self.broker = None

    def __enter__(self):
        self.broker = BrokerProcess(os.path.join(self.root, "broker.log"))
        self.function = debuggable_function(self.root, self.broker.lambda_port, "bench", self.devnull)
        return self

    def __exit__(self, *exc):
        self.function.close()
        self.broker.stop()
        self.devnull.close()

    def session(self, event=None, bridge_args=()):
        """Start an invocation and a bridge; return (port, finish) where
        finish() waits for the invocation and returns its result."""
        bridge = BridgeProcess(
            self.broker, os.path.join(self.root, "bridge.log"), function_id="bench", extra_args=bridge_args
        )
        wait_until(lambda: "listening for the IDE" in bridge.output(), 10, "the bridge")
        result = {}
        invoking = threading.Thread(
            target=lambda: result.setdefault("r", self.function.invoke(event or {})), daemon=True
        )
        invoking.start()
        self.broker.wait_for_state("waiting")

        def finish():
            invoking.join(60)
            bridge.stop()
            assert result["r"].ok, result["r"].payload
            return result["r"]

        return bridge.port, finish


class Direct:
    """``source`` run as a script under ``debugpy.listen``: with pydevd
    speaking DAP itself (``in_process``, what the chain's child uses) or
    through debugpy's separate adapter process (the default)."""

    PRELUDE = (
        "import debugpy\n_, port = debugpy.listen(('127.0.0.1', 0), in_process_debug_adapter=%r)\n"
        "print(port, flush=True)\ndebugpy.wait_for_client()\n"
    )

    def __init__(self, source: str, *, in_process: bool = True):
        self.root = tempfile.mkdtemp()
        self.path = os.path.join(self.root, "direct.py")
        prelude = self.PRELUDE % in_process
        with open(self.path, "w") as f:
            f.write(prelude + source + "\nhandler({}, None)\n")
        self.line_offset = prelude.count("\n")
        self.process = None

    def session(self):
        env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1")
        process = subprocess.Popen([sys.executable, self.path], stdout=subprocess.PIPE, text=True, env=env)
        self.process = process
        port = int(process.stdout.readline())

        def finish():
            process.wait(60)

        return port, finish

    def stop(self):
        """End the script if it still runs (a bench that failed half-way)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def stopped_client(port, path, line):
    """A DAP client attached at ``port`` and stopped at ``path:line``;
    returns (client, thread_id, frame_id, seconds from connect to stopped)."""
    start = time.perf_counter()
    client = DapClient.connect("127.0.0.1", port, timeout=30)
    client.attach_and_configure({path: [line]}, timeout=30)
    stopped = client.wait_stopped(timeout=30)
    elapsed = time.perf_counter() - start
    frame_id = client.stack_trace(stopped["threadId"])[0]["id"]
    return client, stopped["threadId"], frame_id, elapsed


def break_line(source: str, offset: int = 0) -> int:
    return offset + next(i for i, line in enumerate(source.splitlines(), 1) if "# BREAK" in line)
