"""One invocation's debug session, on the Lambda side.

:meth:`DebugSession.run` dials the broker, announces the invocation, waits
for a debugger, forks the child that runs the handler under debugpy and
relays the child's DAP stream to the broker. It returns an :class:`Outcome`
(the handler's result, error or exit) or None, which means "no debugger, or
the debug path failed before the handler started: run the handler here".

Once the child has started the handler, the session never returns None: the
handler must not run twice.
"""

import enum
import functools
import logging
import os
import socket
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import Any, List, Optional, Sequence, Tuple, Union

from lambda_debugger.lambda_side import child, control, errors, versions
from lambda_debugger.lambda_side.budget import ATTACH_S, WaitBudget
from lambda_debugger.lambda_side.child_process import ChildProcess
from lambda_debugger.lambda_side.config import LambdaConfig
from lambda_debugger.lambda_side.debugpy_endpoint import DebugpyEndpoint
from lambda_debugger.lambda_side.handshake import BROKER_RETRY_AFTER_S, Handshake, broker_breaker
from lambda_debugger.lambda_side.pipe import PipeMessage
from lambda_debugger.wire import dap, filters, prefetch, protocol, push, relay
from lambda_debugger.wire.endpoints import (
    IO_TIMEOUT_S,
    WebSocketEndpoint,
    describe_close,
    describe_error,
)

log = logging.getLogger("lambda_debugger")

#: How long the handler's last DAP output may take to reach the debugger.
DRAIN_S = 1.0

#: How often a quiet relay checks that the broker is still there.
KEEPALIVE_TICK_S = 1.0


def task_root() -> str:
    return os.environ.get("LAMBDA_TASK_ROOT") or "/var/task"


@functools.lru_cache(maxsize=4)
def deployed_manifest(root: str) -> dict:
    """The function's own source files and their hashes, once per process
    (the task root does not change)."""
    return push.manifest(root)


def _slim(request: dict) -> dict:
    """What answering ``request`` needs (its files need not stay in memory)."""
    return {"seq": request.get("seq"), "command": request.get("command")}


def _response(request: dict, body: Optional[dict] = None, error: Optional[str] = None) -> dict:
    response = {
        "type": "response",
        "request_seq": request.get("seq"),
        "command": request.get("command"),
        "success": error is None,
        "body": body or {},
    }
    if error is not None:
        response["message"] = error
    return response


class RelayMode(enum.Enum):
    """What the proxy does with the broker connection once the child runs."""

    RELAYING = "relaying"  # a debugger is attached: relay its stream
    DETACHED = "detached"  # the debugger left: wait for another or the outcome
    ALONE = "alone"  # no broker connection any more: wait for the outcome


class OutcomeKind(str, enum.Enum):
    """How the handler ended in the child."""

    VALUE = "value"  # it returned; ``value`` holds the return value
    JSON = "json"  # it returned what pickle cannot carry; ``value`` holds the runtime's JSON of it
    ERROR = "error"  # it raised; ``error`` holds a child.RemoteError
    EXIT = "exit"  # its process died with ``exitcode``


class Fallback(enum.Enum):
    """The child failed before the handler started: run the handler here."""

    RUN_HERE = "run here"


@dataclass
class Outcome:
    """What the handler did in the child (see :class:`OutcomeKind`)."""

    kind: OutcomeKind
    value: Any = None
    error: Optional[child.RemoteError] = None
    exitcode: Optional[int] = None

    def describe(self) -> str:
        """The outcome in plain words, for the developer's debug console."""
        if self.kind is OutcomeKind.ERROR:
            return "the handler raised %s: %s" % (self.error.type_name, self.error.message[:300])
        if self.kind is OutcomeKind.EXIT:
            return "the handler's process ended (%s) before the handler returned" % errors.describe_exit(self.exitcode)
        return "the handler returned"

    def exit_status(self) -> int:
        """The exit status of the handler's process: it exits 0 right after
        reporting a result or an error."""
        return self.exitcode if self.kind is OutcomeKind.EXIT else 0


class _DebugpyCheck:
    """Checks the installed debugpy once per process, before any broker
    connection, and says once why it cannot serve."""

    checked = False
    problem: Optional[str] = None

    def ready(self) -> bool:
        if not self.checked:
            self.checked = True
            self.problem = versions.debugpy_problem(versions.installed_debugpy())
            if self.problem:
                log.warning("lambda_debugger: %s; every invocation runs normally, without the debugger", self.problem)
        return self.problem is None


debugpy_check = _DebugpyCheck()


class DebugSession:
    """The debug attempt of one invocation.

    Attributes:
        started: the child has started the handler; from then on the
            outcome must come from the child.
        outcome: what the handler did, once the child reported it.
    """

    #: What the forked child runs (tests put a stand-in here).
    child_target = staticmethod(child.run)

    def __init__(self, config: LambdaConfig, handler, event, context):
        self.config = config
        self.handler = handler
        self.event = event
        self.context = context
        self.request_id = getattr(context, "aws_request_id", "") or ""
        self.started = False
        self.outcome: Optional[Outcome] = None
        self.child: Optional[ChildProcess] = None
        self.broker: Optional[WebSocketEndpoint] = None
        self.debugpy: Optional[DebugpyEndpoint] = None
        self.debugpy_port = 0
        self.pump: Optional[relay.Pump] = None
        self.runs = 0  # children that ran the handler (more than one after a restart)
        self._child_awaits_push = False
        self._push_request: Optional[dict] = None  # answered once the child applied it
        self._restart_request: Optional[dict] = None  # answered once the new child runs
        self._pushed: List[dict] = []

    def __repr__(self) -> str:
        return "Session[%s/%s]" % (self.config.function_id, self.request_id)

    # The phases --------------------------------------------------------

    def run(self) -> Optional[Outcome]:
        """Debug the invocation; see the module docstring for the result."""
        budget = WaitBudget.plan(
            arrived=time.monotonic(),
            remaining_ms=int(self.context.get_remaining_time_in_millis()),
            wait_max_ms=self.config.wait_max_ms,
            connect_timeout_s=self.config.connect_timeout_s,
        )
        if not budget.possible:
            log.info("%r: %d ms left, too little to wait for a debugger", self, budget.remaining_ms)
            return None
        if not debugpy_check.ready():
            return None
        if broker_breaker.open():
            log.debug("%r: broker failed recently; not trying it yet", self)
            return None
        matches: dict = {}
        if self.config.wait_max_ms == 0:
            # Always on: the control connection says whether anyone wants it.
            try:
                decision, matches = control.link.check(
                    self.config,
                    self.event,
                    budget.connect_timeout(time.monotonic(), self.config.connect_timeout_s),
                    repr(self),
                )
            except ConnectionError as exc:
                broker_breaker.trip()
                log.warning("%r: %s; running normally, next try in %d s", self, exc, BROKER_RETRY_AFTER_S)
                return None
            if decision is not control.Decision.ASK:
                return None
        try:
            shake = Handshake(
                self.config,
                self.context,
                self.request_id,
                repr(self),
                on_notice=self._on_notice,
                matches=matches,
                event=self.event,
            )
            try:
                paired = shake.find_debugger(budget)
            finally:
                self.broker = shake.broker  # closed by _cleanup whatever happened
            if paired is None:
                return None
            log.info(
                "%r: debugger attached; running the handler under debugpy (%.1f s left)",
                self,
                self.context.get_remaining_time_in_millis() / 1000.0,
            )
            attach_by = budget.attach_by(time.monotonic())
            if not self._start_child(attach_by):
                return None
            return self._relay_until_done(attach_by)
        except Exception:
            if not self.started:
                raise
            log.exception("%r: the relay failed; the handler runs on without the debugger", self)
            self._end_relay()
            return self.wait_without_relay()
        finally:
            self._cleanup(budget.latest_start)

    def _start_child(self, attach_by: float) -> bool:
        """Fork the child and connect to its debugpy; False (after saying
        why) when that fails before the handler started."""
        problem = self._fork_child(attach_by)
        if problem:
            self._give_up(problem)
            return False
        return True

    def _fork_child(
        self,
        attach_by: float,
        files: Optional[list] = None,
        replay: Sequence[dict] = (),
        options: Optional[dict] = None,
    ) -> str:
        """Fork a child and connect to its debugpy, gated until a push is
        applied (``files`` known now, or the bridge's to come). Returns ""
        or what went wrong."""
        self.child = ChildProcess(
            self.handler,
            self.event,
            self.context,
            debug_logs=self.config.log_level == "debug",
            # The broker connections are not the child's.
            close_fds=(self.broker.sock,) + ((control.link.sock,) if control.link.sock is not None else ()),
            target=self.child_target,
        )
        self.child.start()
        message = self.child.next_message(attach_by)
        if not message or message[0] != PipeMessage.READY:
            failed = message and message[0] == PipeMessage.FAILED
            return message[1] if failed else "the child did not start"
        self.debugpy_port = message[1]
        try:
            sock = socket.create_connection(("127.0.0.1", self.debugpy_port), timeout=5)
        except OSError as exc:
            return "cannot reach the child's debugpy (%s)" % exc
        sock.settimeout(IO_TIMEOUT_S)
        self.debugpy = DebugpyEndpoint(sock, gated=True, replay=replay, options=options)
        self.broker.settimeout(IO_TIMEOUT_S)
        self._child_awaits_push = True
        if files is not None:
            self._send_push(files)
        return ""

    def _send_push(self, files: list) -> None:
        self._child_awaits_push = False
        self.child.push(files, task_root())

    def _relay_until_done(self, attach_by: float) -> Optional[Outcome]:
        self._attach_by = attach_by  # a restart sets its own
        self.pump = relay.Pump(self.broker, self.debugpy)
        mode = RelayMode.RELAYING
        while True:
            watch = self.child.watch  # a restart forks another child
            if mode is RelayMode.RELAYING:
                tick = time.monotonic() + KEEPALIVE_TICK_S
                result = self.pump.run(deadline=tick if self.started else min(tick, self._attach_by), watch=watch)
                if result.reason == relay.CONTROL and result.endpoint is self.debugpy:
                    if not self._bridge_requests():
                        return None  # a restart that could not start a child: the handler runs here
                    continue
                if result.reason == relay.CONTROL:
                    message = self.broker.receive_control()
                    if isinstance(message, protocol.Detached):
                        if not self.started:
                            self._give_up("the debugger left before the handler started")
                            return None
                        mode = self._detach(message)
                    continue
                if result.reason == relay.CLOSED:
                    mode = RelayMode.ALONE
                    if result.endpoint is self.debugpy and wait_for(watch, DRAIN_S):
                        continue  # the child is reporting or exiting: its outcome ends the session
                    self._relay_closed(result)
                    if not self.started:
                        self._give_up("the debugger left before the handler started")
                        return None
                    continue
                if result.reason == relay.DEADLINE:
                    if not self.started and time.monotonic() >= self._attach_by:
                        self._give_up("the debugger did not finish attaching in time")
                        return None
                    if not self.broker.keepalive(time.monotonic()):
                        mode = RelayMode.ALONE
                        log.warning("%r: the broker went silent; the handler runs on without the debugger", self)
                        self._end_relay()
                        if not self.started:
                            self._give_up("the debugger was lost before the handler started")
                            return None
                    continue
            elif mode is RelayMode.DETACHED:
                mode = self._wait_detached(watch)
                if not wait_for(watch, 0):
                    continue
            else:
                wait_for(watch)
            outcome = self._poll_child(self._attach_by)
            if outcome is None:
                continue
            if outcome is Fallback.RUN_HERE:
                return None
            if mode is RelayMode.RELAYING:
                self._drain()
                self._tell_debugger(outcome.describe(), outcome.exit_status())
            return outcome

    def _drain(self) -> None:
        """The handler's last output events are still on their way; what
        the bridge asks now is answered that the invocation is over."""
        until = time.monotonic() + DRAIN_S
        while time.monotonic() < until:
            result = self.pump.run(deadline=until)
            if result.reason != relay.CONTROL or result.endpoint is not self.debugpy:
                break
            for _, request in self.debugpy.take_actions():
                if request is not None and request.get("command") != prefetch.OPTIONS_COMMAND:
                    self.debugpy.reply(_response(request, error="the invocation has finished"))
        self.pump.flush(self.broker)

    # The bridge's own requests: options, push, restart ---------------------

    def _bridge_requests(self) -> bool:
        """Answer what the bridge asked in the stream. Returns False when a
        restart could not start a new child (then the handler runs here)."""
        for command, request in self.debugpy.take_actions():
            if command == "options":
                self._on_options(request)
            elif command == push.PUSH_COMMAND and request is not None:
                self._on_push(request)
            elif command == push.RESTART_COMMAND and request is not None:
                if not self._restart(request):
                    return False
                if self.debugpy is None:
                    break
        return True

    def _on_options(self, request: Optional[dict]) -> None:
        arguments = (request or {}).get("arguments")
        wants_push = isinstance(arguments, dict) and arguments.get("push") is True
        if request is not None:
            body: dict = {"restart": True, "push": True}
            if wants_push:
                body["manifest"] = deployed_manifest(task_root())
            self.debugpy.reply(_response(request, body))
        if self._child_awaits_push and not wants_push:
            self._send_push([])

    def _on_push(self, request: dict) -> None:
        if not self._child_awaits_push:
            self.debugpy.reply(
                _response(
                    request,
                    error="the handler is already running: restart it (the IDE's restart button) to run your files",
                )
            )
            return
        try:
            files = self._decode_push(request)
        except push.PushRefused as exc:
            log.warning("%r: code push refused: %s; the deployed code runs", self, exc)
            self.debugpy.reply(_response(request, error="push refused: %s; the deployed code runs" % exc))
            self._send_push([])
            return
        self._push_request = _slim(request)
        self._send_push(files)

    @staticmethod
    def _decode_push(request: dict) -> List[push.PushedFile]:
        if request.get("too_large"):
            raise push.PushRefused("the request is larger than %d MB" % (push.MAX_BYTES // (1024 * 1024)))
        arguments = request.get("arguments")
        return push.decode_files(arguments.get("files", []) if isinstance(arguments, dict) else None)

    def _on_pushed(self, report: List[dict]) -> None:
        """The child applied the push: say what it ran, let the IDE's
        configuration through."""
        self._pushed = report
        for entry in report:
            log.info("%r: pushed %s", self, push.describe(entry))
        if self.debugpy is None:
            return
        self.debugpy.open_gate()
        if self._push_request is not None:
            self.debugpy.reply(_response(self._push_request, {"files": report}))
            self._push_request = None

    def _restart(self, request: dict) -> bool:
        """Run the handler again from the top in a fresh child, with the
        files pushed again and the IDE's configuration replayed. Until the
        new child runs the handler, the session counts as not started: if
        the debugger goes, the handler runs here. Returns False when no
        child could be started."""
        left = self.context.get_remaining_time_in_millis() / 1000.0
        why = ""
        files: List[push.PushedFile] = []
        arguments = request.get("arguments") if isinstance(request.get("arguments"), dict) else {}
        replay = arguments.get("configuration")
        if not self.started:
            why = "the handler has not started yet"
        elif left < push.MIN_RESTART_S:
            why = "only %.1f s left before the Lambda timeout, too little to run the handler again" % left
        elif self.debugpy.inside_message:
            why = "debugpy is sending a message; try again"
        else:
            try:
                files = self._decode_push(request)
            except push.PushRefused as exc:
                why = "push refused: %s" % exc
            else:
                if (
                    not isinstance(replay, list)
                    or not all(isinstance(r, dict) for r in replay)
                    or not replay
                    or replay[-1].get("command") != "configurationDone"
                ):
                    why = "the restart request carries no configuration ending with configurationDone"
        if not why:
            # What debugpy sent that the broker did not get yet goes first, whole.
            self.pump.enqueue(self.broker, self.debugpy.unsent())
            if not self.pump.flush(self.broker):
                why = "the broker is not taking what debugpy sent; try again"
        if why:
            log.info("%r: restart refused: %s", self, why)
            self.debugpy.reply(_response(request, error="restart refused: " + why))
            self.debugpy.cancel_restart()
            return True
        log.info("%r: restart: running the handler again in a fresh child (%.1f s left)", self, left)
        held, options = self.debugpy.after_restart_bytes(), self.debugpy.options
        self.debugpy.close()
        self.debugpy = None
        self.child.end(reported=False)  # SIGKILL: processes the handler started are left running
        self.started = False
        self._restart_request = _slim(request)
        self._attach_by = time.monotonic() + max(1.0, min(ATTACH_S, left - 1.0))
        try:
            problem = self._fork_child(self._attach_by, files=files, replay=replay, options=options)
        except Exception as exc:  # e.g. fork refused for memory
            problem = "%s: %s" % (type(exc).__name__, exc)
        if problem:
            # No handler runs now: the session ends and the handler runs here, deployed.
            log.error("%r: the restart failed: %s", self, problem)
            self._restart_request = None
            self._tell_debugger("the restart failed (%s); the invocation runs without the debugger" % problem)
            return False
        self.pump = relay.Pump(self.broker, self.debugpy)
        if held:
            self.pump.enqueue(self.debugpy, held)
        return True

    def _detach(self, message: protocol.Detached) -> RelayMode:
        """The debugger left while the handler runs: resume the handler, end
        the old debug stream, and tell the broker that another debugger may
        attach. Returns the next mode."""
        log.info(
            "%r: the debugger left (%s); the handler runs on and another debugger may attach",
            self,
            message.reason[:200] or "no reason given",
        )
        self.debugpy.drain()
        self.pump.flush(self.debugpy)  # the old debugger's last requests
        self.debugpy.close()
        self.debugpy = None
        released = dap.release_debuggee(self.debugpy_port)
        log.info("%r: %s", self, "the handler was resumed" if released else "debugpy did not confirm the resume")
        try:
            if not self.pump.flush(self.broker):
                raise OSError("the broker did not take the end of the old debug stream")
            self.pump = None
            # Everything before this message is the old stream; the broker drops it.
            self.broker.send_control(protocol.Detached(reason="debug stream ended"))
        except Exception as exc:
            return self._without_broker("broker connection failed (%s)" % describe_error(exc))
        return RelayMode.DETACHED

    def _wait_detached(self, watch) -> RelayMode:
        """Wait up to a keepalive tick for another debugger (``Paired``) or
        the child's report; keep the quiet broker connection alive. Returns
        the next mode."""
        waitable: Tuple[Any, ...] = (self.broker, *watch)  # wait() takes anything with fileno()
        if not self.broker.has_buffered() and self.broker not in wait_for(waitable, KEEPALIVE_TICK_S):
            try:
                if not self.broker.keepalive_unpumped(time.monotonic()):
                    return self._without_broker("the broker went silent")
            except OSError as exc:
                return self._without_broker("broker connection failed (%s)" % describe_error(exc))
            return RelayMode.DETACHED
        try:
            # The broker sends nothing binary now; anything it had in flight
            # belongs to the debugger that left.
            message = self.broker.receive_control(deadline=time.monotonic() + KEEPALIVE_TICK_S, drop_binary=True)
        except (socket.timeout, TimeoutError):
            return RelayMode.DETACHED
        except Exception as exc:
            return self._without_broker("broker connection failed (%s)" % describe_error(exc))
        if message is None:
            return self._without_broker(
                "the broker closed the connection: %s"
                % describe_close(self.broker.close_code, self.broker.close_reason),
                logging.INFO,
            )
        if isinstance(message, protocol.Paired):
            return self._reattach(message)
        if isinstance(message, protocol.Consider):
            try:
                self.broker.send_control(
                    protocol.Considered(when=message.when, matches=filters.matches(message.when, self.event))
                )
            except Exception as exc:
                return self._without_broker("broker connection failed (%s)" % describe_error(exc))
            return RelayMode.DETACHED
        self._on_notice(message)
        return RelayMode.DETACHED

    def _without_broker(self, why: str, level: int = logging.WARNING, reason: str = "relay ended") -> RelayMode:
        """Stop debugging a running handler: log ``why``, close the broker
        connection with ``reason``. Returns the next mode, ALONE."""
        log.log(level, "%r: %s; the handler runs on without the debugger", self, why)
        self._close_broker(protocol.CloseCode.PEER_GONE, reason)
        return RelayMode.ALONE

    def _reattach(self, paired: protocol.Paired) -> RelayMode:
        """Another debugger was paired with the running invocation: give it a
        new connection to the child's debugpy. Returns the next mode."""
        try:
            sock = socket.create_connection(("127.0.0.1", self.debugpy_port), timeout=5)
        except OSError as exc:
            return self._without_broker(
                "cannot reach the child's debugpy again (%s)" % exc, reason="debugpy unreachable"
            )
        sock.settimeout(IO_TIMEOUT_S)
        self.debugpy = DebugpyEndpoint(sock)
        self.pump = relay.Pump(self.broker, self.debugpy)
        log.info(
            "%r: debugger %d attached (%.1f s left); the handler stops at its next breakpoint",
            self,
            paired.attachment,
            self.context.get_remaining_time_in_millis() / 1000.0,
        )
        return RelayMode.RELAYING

    # Helpers -----------------------------------------------------------

    def _poll_child(self, attach_by: float = float("inf")) -> Union[Outcome, Fallback, None]:
        """Read what the child reported. Returns the Outcome, Fallback when
        the child failed before the handler started, or None to go on."""
        child_ = self.child
        if child_.has_message():
            message = child_.receive()
            if message is not None:
                kind = message[0]
                if kind == PipeMessage.PUSHED:
                    self._on_pushed(message[1])
                    return None
                if kind == PipeMessage.CONFIGURED:
                    if time.monotonic() > attach_by:
                        self._give_up("the debugger finished attaching too late")
                        return Fallback.RUN_HERE
                    # Decided here, not in the child, so that a session given
                    # up by the proxy can never have started the handler.
                    self.started = True
                    self.runs += 1
                    child_.go()
                    if self._restart_request is not None and self.debugpy is not None:
                        self.debugpy.reply(_response(self._restart_request, {"files": self._pushed, "run": self.runs}))
                    self._restart_request = None
                    return None
                if kind == PipeMessage.RESULT:
                    self.outcome = Outcome(OutcomeKind.VALUE, value=message[1])
                elif kind == PipeMessage.RESULT_JSON:
                    self.outcome = Outcome(OutcomeKind.JSON, value=message[1])
                elif kind == PipeMessage.ERROR:
                    self.outcome = Outcome(OutcomeKind.ERROR, error=message[1])
                return self.outcome
        if child_.is_alive():
            if not child_.has_message():
                time.sleep(0.005)  # only the pipe's EOF was seen; let the exit land
            return None
        exitcode = child_.exitcode
        if not self.started:
            self._give_up("the child exited (status %s) before the handler started" % exitcode)
            return Fallback.RUN_HERE
        log.error("%r: the handler's process exited with status %s", self, exitcode)
        self.outcome = Outcome(OutcomeKind.EXIT, exitcode=exitcode)
        return self.outcome

    def wait_without_relay(self) -> Outcome:
        """After an unexpected fault of the relay: wait for the started
        handler's outcome, without debugging it further."""
        while True:
            self.child.wait()
            outcome = self._poll_child()
            if isinstance(outcome, Outcome):
                return outcome

    def _relay_closed(self, result: relay.PumpResult) -> None:
        # pump.run() already flushed what was queued for the side still open.
        if result.endpoint is self.broker:
            why = describe_close(self.broker.close_code, self.broker.close_reason)
            log.info("%r: the broker ended the session (%s); the handler runs on", self, why)
        else:
            log.info("%r: debugpy closed its connection", self)
        self._end_relay()

    def _end_relay(self) -> None:
        """Stop relaying; a handler stopped at a breakpoint is resumed."""
        if self.debugpy is None:
            return
        self.debugpy.close()
        self._close_broker(protocol.CloseCode.PEER_GONE, "relay ended")
        if self.started and self.outcome is None:
            released = dap.release_debuggee(self.debugpy_port)
            log.info("%r: %s", self, "the handler was resumed" if released else "debugpy did not confirm the resume")

    def _give_up(self, why: str) -> None:
        """Run the handler here, without the debugger, because of ``why``."""
        if self.runs:
            why += " (the run after a restart; this one runs the deployed code)"
        log.warning("%r: %s; running normally", self, why)
        self._tell_debugger("%s; the invocation runs without the debugger" % why)
        return None

    def _tell_debugger(self, why: str, exit_code: Optional[int] = None) -> None:
        """Tell a paired debugger why its session ends (``Ended``), where the
        broker connection can still carry a message. Best effort."""
        if (
            self.broker is None
            or self.broker.peer_closed
            or self.broker.sock.fileno() < 0
            or (self.pump is not None and self.pump.queued(self.broker))
        ):
            return
        try:
            self.broker.send_control(protocol.Ended(message=why, exit_code=exit_code))
        except Exception as exc:
            log.debug("%r: could not tell the debugger why the session ends (%s)", self, describe_error(exc))

    def _on_notice(self, message) -> None:
        if isinstance(message, protocol.Notice):
            log.info("%r: broker says: %s", self, message.message[:200])

    def _close_broker(self, code: int, reason: str, latest_start: float = float("inf")) -> None:
        """Close the broker connection, within what is left before ``latest_start``."""
        if self.broker is not None:
            timeout = max(0.0, min(1.0, latest_start - time.monotonic()))
            # A frame left half-sent must not be followed by a close frame.
            clean = self.pump is None or not self.pump.queued(self.broker)
            self.broker.close(code, reason, timeout=timeout, send_frame=clean)

    def _cleanup(self, latest_start: float) -> None:
        if self.debugpy is not None:
            self.debugpy.close()
        self._close_broker(
            protocol.CloseCode.INVOCATION_DONE,
            "invocation finished",
            latest_start if not self.started else float("inf"),
        )
        if self.child is None or (self.started and self.outcome is None):
            return  # never kill a handler that is running
        self.child.end(reported=self.started)
