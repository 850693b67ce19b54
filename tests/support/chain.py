"""Real processes for end-to-end tests: broker, attach bridge, Lambda runtime.

Every process is started on 127.0.0.1 with free ports and stopped by PID by
the fixture that started it, whatever the test's outcome.
"""

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from lambda_debugger.local.function import LocalFunction
from tests.support.dap_client import DapClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

LAMBDA_TOKEN = "lt-9fK2qZ7pW4xR1mN8"
DEBUGGER_TOKEN = "dt-3vB6yH0sJ5cT2eL7"

#: A handler module used by the end-to-end tests; ``# BREAK`` marks the line
#: the debugger stops at.
HANDLER_SOURCE = '''\
import json
import logging
import os
import sys
import time

logger = logging.getLogger()
logger.setLevel(logging.INFO)


class OrderError(Exception):
    pass


def handler(event, context):
    items = event["items"]  # BREAK
    total = sum(item["price"] for item in items)
    print("stdout line from", context.aws_request_id)
    sys.stderr.write("stderr line\\n")
    logger.info("logged total %s", total)
    return {"total": total, "text": "h\\u00e9llo \\u2603", "float": 0.1 + 0.2, "nested": [1, {"a": None}]}


def fail(event, context):
    def check(order):
        raise OrderError("order %s is invalid" % order)
    check(event["order"])


def crash(event, context):
    sys.stdout.flush()
    os._exit(int(event.get("status", 3)))


def describe(event, context):
    ident, cc = context.identity, context.client_context
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "memory_type": type(context.memory_limit_in_mb).__name__,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "tenant_id": context.tenant_id,
        "cognito_identity_id": ident.cognito_identity_id,
        "custom": cc.custom if cc is not None else None,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "deadline_ms": context._epoch_deadline_time_in_ms,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "pid": os.getpid(),
    }


def spawn(event, context):
    import multiprocessing

    def work(conn):
        conn.send(sum(range(10)))

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=work, args=(child,))
    process.start()
    value = parent.recv()
    process.join()
    return {"from_process": value}


class Name(str):
    """JSON-serialisable, but pickle cannot rebuild it."""

    def __new__(cls, first, last):
        return super().__new__(cls, first + " " + last)


def loop(event, context):
    done = []
    for i in range(event["rounds"]):
        done.append(i)  # LOOP
        time.sleep(0.05)
    print("loop finished in", context.aws_request_id)
    return {"rounds": len(done)}


def odd_value(event, context):
    return {"name": Name("Ada", "Lovelace")}


import lambda_debugger  # noqa: E402,F401
'''

EVENT = {"items": [{"price": 1}, {"price": 2}, {"price": 3}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def break_line(path: str, marker: str = "# BREAK") -> int:
    """The line of ``path`` marked with ``marker``."""
    with open(path) as source:
        return next(i for i, line in enumerate(source, 1) if marker in line)


def stop_process(process: subprocess.Popen) -> None:
    """Terminate, then kill, a process we started; by PID, bounded."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def broker_in_thread(**settings):
    """A broker on free loopback ports in a thread of this process (stop it
    with ``.stop()``), with the tests' two tokens and any other ``settings``."""
    from broker_server.app import BrokerServer
    from broker_server.config import BrokerConfig

    values = dict(lambda_port=0, debugger_port=0, lambda_token=LAMBDA_TOKEN, debugger_token=DEBUGGER_TOKEN)
    values.update(settings)
    return BrokerServer(BrokerConfig(host="127.0.0.1", **values).validate()).start_in_thread()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class BrokerProcess:
    """``python -m broker_server`` on free loopback ports."""

    def __init__(self, log_path: str, *extra_args: str, ca_file: str = None, env: dict = None, ports: tuple = None):
        self.lambda_port, self.debugger_port = ports or (free_port(), free_port())
        self.log_path = log_path
        self.scheme = "https" if ca_file else "http"
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None
        if env is None:
            env = {"BROKER_LAMBDA_TOKEN": LAMBDA_TOKEN, "BROKER_DEBUGGER_TOKEN": DEBUGGER_TOKEN}
        env = dict({k: v for k, v in os.environ.items() if not k.startswith("BROKER_")}, **env)
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "broker_server",
                "--host",
                "127.0.0.1",
                "--lambda-port",
                str(self.lambda_port),
                "--debugger-port",
                str(self.debugger_port),
                *extra_args,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        wait_until(self._healthy, 15, "the broker's /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("broker exited: " + open(self.log_path).read())
        try:
            url = "%s://127.0.0.1:%d/healthz" % (self.scheme, self.debugger_port)
            with urllib.request.urlopen(url, timeout=1, context=self.context) as r:
                return r.status == 200
        except OSError:
            return False

    def sessions(self) -> list:
        return self._api("sessions")

    def status(self) -> dict:
        return self._api("status")

    def _api(self, name: str):
        """``GET /api/<name>`` with the debugger token, as JSON."""
        request = urllib.request.Request(
            "%s://127.0.0.1:%d/api/%s" % (self.scheme, self.debugger_port, name),
            headers={"Authorization": "Bearer " + DEBUGGER_TOKEN},
        )
        with urllib.request.urlopen(request, timeout=5, context=self.context) as response:
            return json.loads(response.read())

    def lambda_connections(self) -> int:
        """How many connections the broker accepted on its Lambda port."""
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return sum(1 for line in log if "event=connection_accepted" in line and " side=lambda " in line)

    def wait_for_state(self, state: str, count: int = 1, timeout: float = 15) -> list:
        def found():
            matching = [s for s in self.sessions() if s["state"] == state]
            return matching if len(matching) >= count else None

        return wait_until(found, timeout, "%d %s session(s)" % (count, state))

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class BridgeProcess:
    """``lambda-debugger attach`` listening on a free loopback port."""

    def __init__(
        self,
        broker: BrokerProcess,
        log_path: str,
        function_id: str = "orders",
        token: str = DEBUGGER_TOKEN,
        once: bool = True,
        extra_args=(),
        host: str = "127.0.0.1",
        env: dict = None,
    ):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "wb")
        env = dict(os.environ, **(env or {}))
        env.pop("BROKER_DEBUGGER_TOKEN", None)
        if token is not None:
            env["BROKER_DEBUGGER_TOKEN"] = token
        scheme = "wss://" if broker.scheme == "https" else ""
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambda_debugger",
                "attach",
                function_id,
                "--broker",
                "%s%s:%d" % (scheme, host, broker.debugger_port),
                "--listen",
                "127.0.0.1:%d" % self.port,
            ]
            + (["--once"] if once else [])
            + list(extra_args),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )

    def output(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def wait_listening(self, timeout: float = 15) -> None:
        """Wait for the bridge's own ready line: a connection made to find
        out would be a client of the bridge."""

        def ready():
            if self.process.poll() is not None:
                raise AssertionError("bridge exited: " + self.output())
            return "listening for the IDE on " in self.output()

        wait_until(ready, timeout, "the bridge's ready line")

    def connect(self, timeout: float = 10) -> DapClient:
        self.wait_listening()
        return DapClient.connect("127.0.0.1", self.port, timeout=timeout)

    def raw_connect(self) -> socket.socket:
        """A plain TCP connection to the bridge, once it listens."""
        self.wait_listening()
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()


class Function:
    """A handler module in ``task_root`` run by the real runtime client."""

    def __init__(
        self,
        task_root: str,
        handler: str = "app.handler",
        *,
        broker=None,
        env=None,
        timeout_s: float = 60.0,
        source: str = HANDLER_SOURCE,
        function_id: str = "orders",
    ):
        self.task_root = str(task_root)
        self.path = os.path.join(self.task_root, handler.rpartition(".")[0] + ".py")
        with open(self.path, "w") as module:
            module.write(source)
        self.log_path = os.path.join(self.task_root, "function-%s.log" % handler.replace(".", "-"))
        self.log = open(self.log_path, "ab")
        # The package under test is the working tree's, whatever is installed.
        variables = {"PYTHONPATH": REPO}
        if broker is not None:
            scheme = "wss://" if broker.scheme == "https" else ""
            variables.update(
                {
                    "DEBUGGER_ACTIVE": "1",
                    "DEBUGGER_BROKER_ADDRESS": "%s127.0.0.1:%d" % (scheme, broker.lambda_port),
                    "DEBUGGER_FUNCTION_ID": function_id,
                    "DEBUGGER_AUTH_TOKEN": LAMBDA_TOKEN,
                    "DEBUGGER_WAIT_MAX": "30000",
                }
            )
        variables.update(env or {})
        self.local = LocalFunction(
            handler, task_root=self.task_root, timeout_s=timeout_s, env=variables, stdout=self.log, stderr=self.log
        )
        self._pool = ThreadPoolExecutor(max_workers=1)

    def invoke(self, event=None, **kwargs):
        return self.local.invoke(json.dumps(EVENT if event is None else event).encode(), **kwargs)

    def invoke_async(self, event=None, **kwargs):
        return self._pool.submit(self.invoke, event, **kwargs)

    def logs(self) -> str:
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def close(self) -> None:
        self.local.close()
        self._pool.shutdown(wait=False)
        self.log.close()
