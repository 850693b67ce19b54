"""Invocation bookkeeping of the embedded Runtime API, without any sockets.

:class:`InvocationQueue` holds the events a caller submitted and the runtime
has yet to take, and those it took and has yet to answer. The caller's thread
blocks in :meth:`InvocationQueue.run`; HTTP handler threads call
:meth:`~InvocationQueue.take`, :meth:`~InvocationQueue.complete` and
:meth:`~InvocationQueue.init_failed`. One condition variable guards it all.

Errors the service itself raises (timeouts, runtime exits, oversized
responses) are rendered here, worded like Lambda's.
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Optional, Tuple

logger = logging.getLogger("lambda_debugger.local")

#: RAPID's limit on a synchronous response body, in bytes.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024 + 100

TIMEOUT_ERROR_TYPE = "Sandbox.Timedout"
EXIT_ERROR_TYPE = "Runtime.ExitError"
TOO_LARGE_ERROR_TYPE = "Function.ResponseSizeTooLarge"


@dataclass(frozen=True)
class InvocationResult:
    """The outcome of one invocation, as a synchronous Invoke returns it."""

    request_id: str
    #: True when the runtime posted a response; False for any error.
    ok: bool
    #: The exact response body bytes, or the error document (JSON).
    payload: bytes
    #: ``errorType`` of an error (the exception class name, ``Runtime.*``,
    #: ``Sandbox.Timedout``); None when ``ok``.
    error_type: Optional[str]
    #: From the runtime taking the event to the outcome (init excluded), or
    #: from submission when the runtime never took the event.
    duration_ms: float

    def json(self) -> Any:
        """The payload decoded as JSON."""
        return json.loads(self.payload)


def error_document(error_type: str, message: str) -> bytes:
    """An error body shaped like the ones the Lambda service renders."""
    return json.dumps({"errorMessage": message, "errorType": error_type}, separators=(",", ":")).encode()


def new_trace_id() -> str:
    """A fresh X-Ray trace header value, as Lambda passes to the runtime."""
    return "Root=1-%08x-%s;Parent=%s;Sampled=0" % (
        int(time.time()),
        secrets.token_hex(12),
        secrets.token_hex(8),
    )


class Invocation:
    """One event on its way through the runtime; mutated under the queue's lock."""

    def __init__(self, request_id: str, event: bytes, timeout_s: float, headers: Dict[str, Any]):
        self.request_id = request_id
        self.event = event
        self.timeout_s = timeout_s
        #: Headers for the runtime besides request ID and deadline; None values are left out.
        self.headers = headers
        self.queued_at = time.monotonic()
        #: Monotonic time the runtime took the event; None while queued.
        self.delivered_at: Optional[float] = None
        #: The absolute deadline (Unix ms) the runtime was given.
        self.deadline_ms = 0
        self.result: Optional[InvocationResult] = None

    def finish(self, ok: bool, payload: bytes, error_type: Optional[str]) -> None:
        start = self.delivered_at if self.delivered_at is not None else self.queued_at
        duration_ms = round((time.monotonic() - start) * 1000.0, 2)
        self.result = InvocationResult(self.request_id, ok, payload, error_type, duration_ms)

    def fail(self, error_type: str, message: str) -> None:
        """Finish with a service error about this request: ``RequestId: <id> Error: ...``."""
        text = "RequestId: %s Error: %s" % (self.request_id, message)
        self.finish(False, error_document(error_type, text), error_type)


class QueueClosed(RuntimeError):
    """The Runtime API stopped while an invocation waited."""


class InvocationQueue:
    """Events between the caller and one runtime process at a time."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        #: Events waiting for the runtime's ``next``, oldest first.
        self._pending: Deque[Invocation] = collections.deque()
        #: Events the runtime took and has not answered, by request ID.
        self._inflight: Dict[str, Invocation] = {}
        #: Why the runtime can take no more events (init error, exit), as
        #: (errorType, verbatim init error body or None, exit description).
        self._failure: Optional[Tuple[str, Optional[bytes], str]] = None
        self._needs_restart = False
        #: Bumped by reset(); a ``next`` poll from an older runtime gets nothing.
        self._generation = 0
        self._closed = False

    @property
    def needs_restart(self) -> bool:
        """True once the runtime process must be replaced, as Lambda would."""
        with self._cond:
            return self._needs_restart

    @property
    def queued(self) -> int:
        """How many events wait for the runtime to take them."""
        with self._cond:
            return len(self._pending)

    def close(self) -> None:
        """Wake everyone: waiting callers raise QueueClosed, polls return None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reset(self) -> None:
        """Forget the previous runtime; call it just before starting a new one."""
        with self._cond:
            self._failure = None
            self._needs_restart = False
            self._generation += 1
            self._cond.notify_all()

    # -- the caller's side --------------------------------------------------

    def run(self, inv: Invocation, *, init_timeout_s: float) -> InvocationResult:
        """Queue ``inv`` and block until it has a result.

        The function timeout runs from the moment the runtime takes the event;
        before that the wait is bounded by ``init_timeout_s``.

        Raises:
            QueueClosed: the queue was closed before or during the wait.
        """
        with self._cond:
            if self._closed:
                raise QueueClosed("the runtime API is not running")
            if self._failure is not None:
                self._fail(inv)
                assert inv.result is not None  # _fail finished it
                return inv.result
            self._pending.append(inv)
            self._cond.notify_all()
            while inv.result is None:
                if self._closed:
                    raise QueueClosed("the runtime API stopped")
                if inv.delivered_at is None:
                    limit_s, ends = init_timeout_s, inv.queued_at + init_timeout_s
                else:
                    limit_s, ends = inv.timeout_s, inv.delivered_at + inv.timeout_s
                now = time.monotonic()
                if now >= ends:
                    self._time_out(inv, limit_s)
                else:
                    self._cond.wait(ends - now)
            return inv.result

    def runtime_exited(self, description: str) -> None:
        """The runtime process ended (``exit status 3``, ``signal: killed``).

        Events it held or would have taken fail with ``Runtime.ExitError``.
        """
        with self._cond:
            if self._failure is None:
                self._failure = (EXIT_ERROR_TYPE, None, description)
            self._fail_all()

    # -- the runtime's side (HTTP handler threads) ----------------------------

    def take(self, peer_gone: Callable[[], bool]) -> Optional[Invocation]:
        """Long-poll for the next event; None once this poll can get none.

        That is when the queue closes, a new runtime replaced the polling one,
        or ``peer_gone()`` says the poller hung up; a dead runtime's poll must
        not swallow the event meant for its successor.
        """
        with self._cond:
            generation = self._generation
            while not (self._closed or generation != self._generation or peer_gone()):
                if self._pending:
                    inv = self._pending.popleft()
                    inv.delivered_at = time.monotonic()
                    inv.deadline_ms = int(time.time() * 1000 + inv.timeout_s * 1000)
                    self._inflight[inv.request_id] = inv
                    self._cond.notify_all()
                    return inv
                self._cond.wait(0.5)  # also re-checks peer_gone now and then
            return None

    def put_back(self, inv: Invocation) -> None:
        """Requeue an event whose delivery to the runtime failed."""
        with self._cond:
            if self._inflight.pop(inv.request_id, None) is not None and inv.result is None:
                inv.delivered_at = None
                self._pending.appendleft(inv)
                self._cond.notify_all()

    def complete(self, request_id: str, ok: bool, body: bytes, error_type: Optional[str]) -> int:
        """Record the outcome the runtime posted; returns the HTTP status to answer.

        400 for an unknown, answered or timed-out request ID; 413 for an
        oversized response, which fails the invocation as Lambda does.
        """
        with self._cond:
            inv = self._inflight.pop(request_id, None)
            if inv is None:
                return 400
            status = 202
            if ok and len(body) > MAX_RESPONSE_BYTES:
                status = 413
                self._needs_restart = True  # awslambdaric crashes on the 413
                message = "Response payload size exceeded maximum allowed payload size (%d bytes)." % MAX_RESPONSE_BYTES
                document = error_document(TOO_LARGE_ERROR_TYPE, message)
                inv.finish(False, document, TOO_LARGE_ERROR_TYPE)
            else:
                inv.finish(ok, body, error_type)
            self._cond.notify_all()
            return status

    def init_failed(self, body: bytes, error_type: str) -> None:
        """The runtime could not initialise: every event fails with its error until reset()."""
        with self._cond:
            if self._failure is None:
                self._failure = (error_type, body, "")
            self._fail_all()

    # -- helpers, called with the lock held -------------------------------

    def _fail(self, inv: Invocation) -> None:
        assert self._failure is not None
        error_type, body, description = self._failure
        if body is not None:  # an init error reaches the caller verbatim
            inv.finish(False, body, error_type)
        elif description == "exit status 0":
            inv.fail(error_type, "Runtime exited without providing a reason")
        else:
            inv.fail(error_type, "Runtime exited with error: " + description)

    def _fail_all(self) -> None:
        self._needs_restart = True
        for inv in list(self._pending) + list(self._inflight.values()):
            self._fail(inv)
        self._pending.clear()
        self._inflight.clear()
        self._cond.notify_all()

    def _time_out(self, inv: Invocation, limit_s: float) -> None:
        if inv in self._pending:
            self._pending.remove(inv)
        self._inflight.pop(inv.request_id, None)
        self._needs_restart = True
        inv.fail(TIMEOUT_ERROR_TYPE, "Task timed out after %.2f seconds" % limit_s)
        logger.info("Invocation %s timed out after %.2f s", inv.request_id, limit_s)
