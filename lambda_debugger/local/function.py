"""Run a handler in the real Lambda Python runtime client, on this machine.

:class:`LocalFunction` pairs an embedded :class:`RuntimeAPI` with a
``python -m awslambdaric <handler>`` process and keeps Lambda's lifecycle: the
process starts on the first invocation (a cold start), stays warm between
invocations, and is replaced after a timeout, an init error or a crash.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Mapping, Optional, Union

from lambda_debugger.lambda_side.errors import describe_exit

from .runtime_api import InvocationResult, RuntimeAPI

logger = logging.getLogger("lambda_debugger.local")

#: Inherited variables that would change how awslambdaric runs (telemetry
#: log framing, multi-concurrency) or leak a trace from the caller.
_SCRUBBED_VARIABLES = (
    "_LAMBDA_TELEMETRY_LOG_FD",
    "_LAMBDA_TELEMETRY_LOG_FD_PROVIDER_SOCKET",
    "AWS_LAMBDA_MAX_CONCURRENCY",
    "_X_AMZN_TRACE_ID",
)

_TERMINATE_WAIT_S = 2.0
_KILL_WAIT_S = 5.0


class LocalFunction:
    """One Lambda execution environment: a runtime API and its runtime process.

    Invocations are serialised, as in one Lambda execution environment.
    """

    def __init__(
        self,
        handler: str,
        *,
        task_root: str = ".",
        timeout_s: float = 3.0,
        env: Optional[Mapping[str, str]] = None,
        python: str = sys.executable,
        stdout: Union[None, int, IO[Any]] = None,
        stderr: Union[None, int, IO[Any]] = None,
        function_name: str = "local-function",
        memory_mb: int = 128,
    ):
        self.handler = handler
        self.task_root = os.path.abspath(task_root)
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        self.python = python
        self.stdout = stdout
        self.stderr = stderr
        #: How many runtime processes were started (each one a cold start).
        self.cold_starts = 0
        self._api = RuntimeAPI(function_name=function_name, memory_mb=memory_mb)
        self._invoke_lock = threading.Lock()  # one invocation at a time
        self._proc_lock = threading.Lock()  # guards _process against the exit watcher
        self._process: Optional[subprocess.Popen] = None
        self._closed = False

    @property
    def api(self) -> RuntimeAPI:
        return self._api

    @property
    def process(self) -> Optional[subprocess.Popen]:
        """The current runtime process, None before the first invocation or after a reset."""
        return self._process

    @property
    def pid(self) -> Optional[int]:
        process = self._process
        return process.pid if process is not None else None

    def __enter__(self) -> "LocalFunction":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def start(self) -> None:
        """Start the runtime now instead of on the first invocation."""
        with self._invoke_lock:
            self._ensure_runtime()

    def invoke(self, event: Any, **kwargs) -> InvocationResult:
        """Invoke the function once and return the outcome.

        Args:
            event: ``bytes`` are the JSON payload as is; anything else is
                serialised with ``json.dumps``.
            **kwargs: ``timeout_s`` (defaults to the function's),
                ``client_context``, ``cognito_identity``, ``trace_id``; see
                :meth:`RuntimeAPI.invoke`.
        """
        if isinstance(event, (bytes, bytearray, memoryview)):
            payload = bytes(event)
        else:
            payload = json.dumps(event).encode()
        kwargs.setdefault("timeout_s", self.timeout_s)
        with self._invoke_lock:
            self._ensure_runtime()
            result = self._api.invoke(payload, **kwargs)
            if self._api.needs_restart:
                # Like Lambda, a timed-out or failed environment is not reused.
                self._retire(kill_now=True)
            return result

    def close(self) -> None:
        """Stop the runtime process (SIGTERM, then SIGKILL) and the API.

        An invocation still waiting in another thread raises RuntimeError.
        """
        with self._proc_lock:
            self._closed = True
        self._retire(kill_now=False)
        self._api.stop()

    # -- process lifecycle ----------------------------------------------------

    def _ensure_runtime(self) -> None:
        if self._closed:
            raise RuntimeError("the function is closed")
        if not self._api.running:
            self._api.start()
        process = self._process
        if process is not None and process.poll() is None and not self._api.needs_restart:
            return
        self._retire(kill_now=True)
        with self._proc_lock:
            if self._closed:
                raise RuntimeError("the function is closed")
            self._api.reset()
            self._process = self._spawn()
            self.cold_starts += 1
        threading.Thread(target=self._watch, args=(self._process,), name="lambda-runtime-watch", daemon=True).start()

    def _spawn(self) -> subprocess.Popen:
        env = dict(os.environ)
        for name in _SCRUBBED_VARIABLES:
            env.pop(name, None)
        env.update(self._api.environment(self.handler, self.task_root, timeout_s=self.timeout_s))
        if self.python != sys.executable:
            env["AWS_EXECUTION_ENV"] = "AWS_Lambda_python" + _python_version(self.python)
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (self.task_root, env.get("PYTHONPATH", "")) if p)
        command = [self.python, "-m", "awslambdaric", self.handler]
        wrapper = env.get("AWS_LAMBDA_EXEC_WRAPPER", "").strip()
        if wrapper:
            # As Lambda does: the wrapper gets the runtime's start command.
            command.insert(0, wrapper)
        process = subprocess.Popen(
            command,
            cwd=self.task_root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stdout,
            stderr=self.stderr,
            # Its own process group: a sandbox is stopped with everything it
            # started (such as a debug child), as Lambda does.
            start_new_session=True,
        )
        logger.info("Started runtime pid %d for %s", process.pid, self.handler)
        return process

    def _watch(self, process: subprocess.Popen) -> None:
        """Fail the invocation at once when the current runtime dies under it."""
        returncode = process.wait()
        with self._proc_lock:
            if self._process is process:
                logger.info("Runtime pid %d ended: %s", process.pid, describe_exit(returncode))
                self._api.runtime_exited(describe_exit(returncode))

    def _retire(self, *, kill_now: bool) -> None:
        """Stop the current process; Lambda kills a used-up sandbox outright."""
        with self._proc_lock:
            process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None and not kill_now:
            _signal_group(process, signal.SIGTERM)
            try:
                process.wait(_TERMINATE_WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(process, signal.SIGKILL)  # also what the runtime left behind
        try:
            process.wait(_KILL_WAIT_S)
        except subprocess.TimeoutExpired:
            logger.warning("Runtime pid %d did not exit after SIGKILL", process.pid)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _python_version(python: str) -> str:
    output = subprocess.run(
        [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return output.stdout.strip()
