"""The proxy's handle on the forked child of one debug session: it forks
the child, reads the pipe and ends the child.

Fork, on purpose, whatever the platform default (Python 3.14 changed it):
the child must start as an exact copy of the Lambda process, with the
handler module, the runtime's logging and the invocation's real context.
Only ``Process`` and ``Pipe`` are used: AWS Lambda has no /dev/shm.
"""

import multiprocessing
import time
import warnings
from multiprocessing.connection import wait as wait_for
from typing import Any, Callable, Optional, Sequence, Tuple

from lambda_debugger.lambda_side import child
from lambda_debugger.lambda_side.pipe import PipeMessage

#: How long a child that reported may take to exit before it is killed.
EXIT_S = 1.0


class ChildProcess:
    """One forked child and the proxy's end of its pipe.

    Attributes:
        process: the ``multiprocessing`` process, once started.
    """

    def __init__(
        self,
        handler: Callable,
        event: Any,
        context: Any,
        *,
        debug_logs: bool = False,
        close_fds: Sequence[Any] = (),
        target: Callable = child.run,
    ):
        ctx = multiprocessing.get_context("fork")
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(
            target=target,
            args=(child_conn, handler, event, context),
            # The proxy's pipe end (and what the caller names) are not the child's.
            kwargs={"debug_logs": debug_logs, "close_fds": (*close_fds, self.conn)},
            name="lambda-debugger-child",
            daemon=False,  # the handler may start processes of its own
        )
        self._child_conn = child_conn
        self._exitcode: Optional[int] = None  # kept once the process object is closed
        self._started = self._ended = False

    def start(self) -> None:
        with warnings.catch_warnings():
            # Forking while user threads run is what Lambda's own fork-based
            # tools do too; the warning would only clutter the log.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.process.start()
        self._started = True
        self._child_conn.close()

    @property
    def watch(self) -> Tuple[Any, Any]:
        """What becomes readable when the child reports or exits."""
        return self.conn, self.process.sentinel

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until the child reports or exits; False after ``timeout`` s."""
        return bool(wait_for(self.watch, timeout))

    def has_message(self) -> bool:
        return self.conn.poll()

    def receive(self) -> Optional[tuple]:
        """The child's next message, or None once its end of the pipe closed."""
        try:
            return self.conn.recv()
        except (EOFError, OSError):
            return None

    def next_message(self, until: float) -> Optional[tuple]:
        """The next message, waiting until ``until`` (``time.monotonic()``);
        None when none came or the child is gone."""
        while True:
            left = until - time.monotonic()
            if left <= 0 or not self.wait(left):
                return None
            if self.has_message():
                return self.receive()
            if not self.process.is_alive():
                return None

    def push(self, files, task_root: str) -> None:
        """Hand the started child the pushed files (maybe none); it answers
        ``PUSHED``."""
        self.conn.send((PipeMessage.PUSH, files, task_root))

    def go(self) -> None:
        """Let the configured child run the handler."""
        self.conn.send(PipeMessage.GO)

    def is_alive(self) -> bool:
        return self.process.is_alive()

    @property
    def exitcode(self) -> Optional[int]:
        """The exit status (negative: killed by that signal), once it exited."""
        return self._exitcode if self._exitcode is not None else self.process.exitcode

    def end(self, *, reported: bool) -> None:
        """Release the child: one that ``reported`` exits by itself and gets
        a moment; any other is killed. Never call it for a handler that is
        still running, unless a restart asks for just that. Once is enough:
        later calls do nothing."""
        if self._ended:
            return
        self._ended = True
        if not self._started:  # the fork itself failed
            self.conn.close()
            self._child_conn.close()
            return
        if reported:
            self.process.join(EXIT_S)  # it exits right after reporting
        if self.process.is_alive():
            self.process.kill()
        self.process.join(1)
        self._exitcode = self.process.exitcode
        self.conn.close()
        try:
            self.process.close()  # its sentinel descriptors, now rather than at garbage collection
        except ValueError:
            pass  # still running after SIGKILL: left to the OS
