"""Prefetch on stop: the stop's context travels with the ``stopped`` event.

After every stop an IDE asks, each question waiting for the one before, for
the threads, the top of the stack, its scopes and their variables. Over a
link of 100 ms round trip that is half a second before the locals show.
GDB's stop reply and Chrome's ``Debugger.paused`` carry that context in the
stop notification; DAP has no such field, so the chain does it:

* on the Lambda side, :class:`StopCollector` sees debugpy report ``stopped``,
  holds the event back, asks debugpy those questions at local latency (one at
  a time: pydevd runs a second queued question only after a 0.2 s wait), and
  ships the answers in a :data:`CONTEXT_EVENT` just before the ``stopped``
  event, within :data:`LIMIT_BYTES`;
* in the attach bridge, :class:`StopAnswers` answers the IDE's requests that
  match from that context, with the IDE's own ``request_seq``, and forgets it
  on anything that resumes the debuggee or may change its state.

The context is never seen by the IDE, and the questions of the Lambda side
are never seen by it either: their sequence numbers start at
:data:`COLLECTOR_SEQ`, far above the IDE's and the bridge's own. The bridge
turns prefetch on for its session with :data:`OPTIONS_COMMAND`, the first
message of its stream; without it (``attach --no-prefetch``, or an older
bridge) the Lambda side relays as before.

Both classes are sans-I/O: they take parsed messages and return the
messages to send.
"""

import copy
import itertools
import json
import time
from typing import Dict, List, Optional

from lambda_debugger.wire.dap import OWN_SEQ, encode

#: The event that carries a stop's context from the Lambda side to the bridge.
CONTEXT_EVENT = "lambdaDebugger/stopContext"

#: The bridge's request that turns prefetch on; the Lambda side takes it out
#: of the stream (debugpy would answer an unknown command with an error).
OPTIONS_COMMAND = "lambdaDebugger/options"

#: Sequence numbers of the Lambda side's own questions to debugpy.
COLLECTOR_SEQ = 2 * OWN_SEQ

#: The answers shipped for one stop, at most (JSON bytes). An answer that
#: would go over is left out, and the IDE asks for it as before.
LIMIT_BYTES = 64 * 1024

#: How long the ``stopped`` event may be held back for the context. The
#: context is usually complete within a few ms; a slow answer (a huge
#: ``repr``) must not hold the stop back longer than this.
HOLD_S = 0.25

#: Requests that neither resume the debuggee nor change its state: a context
#: stays valid across them. ``evaluate`` counts only in these contexts: a
#: watch or a hover is read, a REPL line may assign.
READ_ONLY_REQUESTS = frozenset(
    {
        "threads",
        "stackTrace",
        "scopes",
        "variables",
        "source",
        "exceptionInfo",
        "loadedSources",
        "modules",
        "completions",
        "breakpointLocations",
        "setBreakpoints",
        "setFunctionBreakpoints",
        "setExceptionBreakpoints",
        "dataBreakpointInfo",
        OPTIONS_COMMAND,
    }
)
READ_ONLY_EVALUATE_CONTEXTS = frozenset({"watch", "hover", "clipboard", "variables"})

#: Events after which a context is still what debugpy would answer.
HARMLESS_EVENTS = frozenset({"output", "module", "loadedSource", "breakpoint", "telemetry", CONTEXT_EVENT})


#: How long a state-changing request may stay unanswered before the bridge
#: stops waiting for its answer (pydevd leaves some requests it does not
#: implement unanswered).
CHANGE_ANSWER_S = 5.0


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def changes_state(request: dict) -> bool:
    """Whether ``request`` may resume the debuggee or change what it holds
    (anything not known to be a read)."""
    command = request.get("command")
    if not isinstance(command, str):
        return True
    if command == "evaluate":
        context = _dict(request.get("arguments")).get("context")
        return context not in READ_ONLY_EVALUATE_CONTEXTS
    return command not in READ_ONLY_REQUESTS


def options_request(seq: int, *, prefetch: bool = True, push: bool = False) -> bytes:
    """The bridge's first request, framed: prefetch on or off, and whether
    it pushes code (then the Lambda side's response carries its manifest,
    see :mod:`lambda_debugger.wire.push`)."""
    return encode(
        {
            "seq": seq,
            "type": "request",
            "command": OPTIONS_COMMAND,
            "arguments": {"prefetch": prefetch, "push": push},
        }
    )


class StopCollector:
    """The Lambda side of prefetch, for one debugpy connection.

    Feed it every whole message debugpy sends (:meth:`on_debugpy_message`)
    and every request on its way to debugpy (:meth:`on_request`); send what
    :meth:`take_requests` returns to debugpy. While :attr:`holding`, the
    caller holds back what debugpy sends (starting with the ``stopped``
    event); once :meth:`done`, :meth:`finish` gives the context event to send
    before them.

    Attributes:
        enabled: the bridge asked for prefetch.
        holding: a ``stopped`` event is held back while its context is collected.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.holding = False
        self._seq = itertools.count(COLLECTOR_SEQ)
        self._queue: List[dict] = []  # questions not asked yet, in order
        self._asked: Optional[dict] = None  # the question debugpy is answering
        self._answers: List[dict] = []
        self._size = 0
        self._thread_id: Optional[int] = None
        self._until = 0.0
        self._stale = False
        self._outgoing: List[bytes] = []

    # What comes in ------------------------------------------------------

    def on_request(self, request: dict) -> None:
        """A request on its way to debugpy (from the IDE)."""
        if self.holding and changes_state(request):
            self._stale = True  # what is collected may no longer hold

    def owns(self, message: dict) -> bool:
        """Whether ``message`` answers one of the collector's questions (it
        must not reach the IDE)."""
        request_seq = message.get("request_seq")
        return message.get("type") == "response" and isinstance(request_seq, int) and request_seq >= COLLECTOR_SEQ

    def on_debugpy_message(self, message: dict, now: float, *, whole: bool = True) -> None:
        """A message from debugpy (of a large one, its head: ``whole`` False)."""
        if self.owns(message):
            self._on_answer(message, whole)
        elif (
            self.enabled
            and not self.holding
            and message.get("type") == "event"
            and message.get("event") == "stopped"
            and isinstance(_dict(message.get("body")).get("threadId"), int)
        ):
            self._start(message["body"], now)

    def _start(self, stop: dict, now: float) -> None:
        self.holding = True
        self._stale = False
        self._asked = None  # a question of an earlier stop still out: its answer is ignored
        self._answers, self._size = [], 0
        self._thread_id = stop["threadId"]
        self._until = now + HOLD_S
        self._queue = [
            {"command": "threads"},
            {"command": "stackTrace", "arguments": {"threadId": self._thread_id}},
        ]
        if stop.get("reason") == "exception":
            self._queue.append({"command": "exceptionInfo", "arguments": {"threadId": self._thread_id}})
        self._ask_next()

    def _on_answer(self, response: dict, whole: bool) -> None:
        if self._asked is None or response.get("request_seq") != self._asked["seq"]:
            return  # the answer to a question of a stop already shipped
        asked, self._asked = self._asked, None
        if not self.holding:
            return
        if whole and response.get("success") is True:
            self._keep(asked, response)
            self._follow_up(asked["command"], _dict(response.get("body")))
        self._ask_next()

    def _keep(self, asked: dict, response: dict) -> None:
        answer = {"command": asked["command"], "arguments": asked.get("arguments", {}), "response": response}
        size = len(json.dumps(answer, separators=(",", ":")))
        if self._size + size <= LIMIT_BYTES:
            self._answers.append(answer)
            self._size += size

    def _follow_up(self, command: str, body: dict) -> None:
        if command == "stackTrace":
            frames = body.get("stackFrames")
            top = _dict(frames[0]) if isinstance(frames, list) and frames else {}
            if isinstance(top.get("id"), int):
                self._queue.append({"command": "scopes", "arguments": {"frameId": top["id"]}})
        elif command == "scopes":
            scopes = body.get("scopes")
            for scope in scopes if isinstance(scopes, list) else []:
                scope = _dict(scope)
                reference = scope.get("variablesReference")
                if not scope.get("expensive") and isinstance(reference, int) and reference > 0:
                    self._queue.append({"command": "variables", "arguments": {"variablesReference": reference}})

    def _ask_next(self) -> None:
        if self._asked is not None or not self._queue or self._stale:
            return
        question = self._queue.pop(0)
        self._asked = dict(question, seq=next(self._seq), type="request")
        self._outgoing.append(encode(self._asked))

    # What goes out ------------------------------------------------------

    def take_requests(self) -> List[bytes]:
        """Framed questions for debugpy, to send now."""
        out, self._outgoing = self._outgoing, []
        return out

    def done(self, now: float) -> bool:
        """Whether the held stop should go now (context complete, stale or late)."""
        if not self.holding:
            return False
        complete = self._asked is None and (not self._queue or self._stale)
        return complete or now >= self._until

    @property
    def due(self) -> Optional[float]:
        """When a held stop must go at the latest (``time.monotonic()``)."""
        return self._until if self.holding else None

    def finish(self) -> bytes:
        """End the hold; return the framed context event to send before the
        held messages (empty when there is nothing valid to ship)."""
        self.holding = False
        self._queue = []
        self._outgoing = []  # questions not sent yet are not needed any more
        answers, self._answers = self._answers, []
        if self._stale or not answers:
            return b""
        return encode(
            {
                "seq": next(self._seq),
                "type": "event",
                "event": CONTEXT_EVENT,
                "body": {"threadId": self._thread_id, "answers": answers},
            }
        )


class StopAnswers:
    """The bridge's side of prefetch: the context of the current stop, and
    which of the IDE's requests it answers.

    Feed it every message from the adapter (:meth:`on_adapter_message`) and
    every request from the IDE that it did not answer (:meth:`on_request`).
    """

    def __init__(self) -> None:
        self._context: Optional[dict] = None
        self._changing: Dict[int, float] = {}  # state-changing requests sent, not answered yet: seq -> when
        self.answered = 0  # requests answered from a context, for the record

    def forget(self) -> None:
        """Drop the context (e.g. the IDE sends a message too large to read)."""
        self._context = None

    def on_request(self, request: dict, now: Optional[float] = None) -> None:
        """A request of the IDE's on its way to the Lambda side."""
        if changes_state(request):
            self._context = None
            if isinstance(request.get("seq"), int):
                self._changing[request["seq"]] = time.monotonic() if now is None else now

    def on_adapter_message(self, message: dict, *, whole: bool = True, now: Optional[float] = None) -> bool:
        """A message from the Lambda side (of a large one, its head). Returns
        whether the IDE must not see it: a context, or the answer to the
        bridge's options request (from a Lambda side that passed it on)."""
        kind = message.get("type")
        if kind == "response":
            request_seq = message.get("request_seq")
            if isinstance(request_seq, int):
                self._changing.pop(request_seq, None)
            return message.get("command") == OPTIONS_COMMAND
        if kind != "event":
            return False
        event = message.get("event")
        if event == CONTEXT_EVENT:
            # Taken before a state-changing request was answered, it may
            # predate that change.
            now = time.monotonic() if now is None else now
            waiting = [seq for seq, sent in self._changing.items() if now - sent < CHANGE_ANSWER_S]
            body = message.get("body") if whole else None
            self._context = _index(body) if isinstance(body, dict) and not waiting else None
            return True
        if event == "stopped":
            thread_id = _dict(message.get("body")).get("threadId")
            if self._context is not None and self._context["threadId"] != thread_id:
                self._context = None
        elif event not in HARMLESS_EVENTS:
            self._context = None
        return False

    def answer(self, request: dict) -> Optional[dict]:
        """The response to the IDE's ``request`` from the current context
        (``seq`` is the caller's to set), or None to ask debugpy."""
        context = self._context
        seq = request.get("seq")
        if context is None or not isinstance(seq, int) or request.get("type") != "request":
            return None
        command = request.get("command")
        arguments = request.get("arguments") or {}
        if not isinstance(arguments, dict):
            return None
        response = None
        if command == "threads" and not arguments:
            response = context["threads"]
        elif command == "exceptionInfo" and arguments == {"threadId": context["threadId"]}:
            response = context["exceptionInfo"]
        elif command == "scopes" and set(arguments) == {"frameId"} and isinstance(arguments["frameId"], int):
            response = context["scopes"].get(arguments["frameId"])
        elif (
            command == "variables"
            and set(arguments) == {"variablesReference"}
            and isinstance(arguments["variablesReference"], int)
        ):
            response = context["variables"].get(arguments["variablesReference"])
        elif command == "stackTrace":
            return self._stack_slice(request, context)
        if response is None:
            return None
        self.answered += 1
        return dict(copy.deepcopy(response), request_seq=seq)

    def _stack_slice(self, request: dict, context: dict) -> Optional[dict]:
        """pydevd's answer for any window of the whole stack: ``levels`` 0 or
        absent means every frame, whatever ``startFrame`` says."""
        arguments = request.get("arguments") or {}
        full = context["stackTrace"]
        if full is None or arguments.get("threadId") != context["threadId"]:
            return None
        if not set(arguments) <= {"threadId", "startFrame", "levels"}:
            return None  # e.g. ``format``: the frame names would differ
        start, levels = arguments.get("startFrame", 0), arguments.get("levels", 0)
        if not isinstance(start, int) or not isinstance(levels, int) or start < 0 or levels < 0:
            return None
        response = copy.deepcopy(full)
        if levels:
            frames = response["body"]["stackFrames"]  # a list: checked when the context came
            response["body"]["stackFrames"] = frames[start : min(start + levels, len(frames))]
        self.answered += 1
        return dict(response, request_seq=request["seq"])


def _index(body: dict) -> Optional[dict]:
    """A context event's answers, by what they answer."""
    thread_id = body.get("threadId")
    answers = body.get("answers")
    if not isinstance(thread_id, int) or not isinstance(answers, list):
        return None
    context: Dict = {
        "threadId": thread_id,
        "threads": None,
        "stackTrace": None,
        "exceptionInfo": None,
        "scopes": {},
        "variables": {},
    }
    for answer in answers:
        answer = _dict(answer)
        response, arguments = answer.get("response"), _dict(answer.get("arguments"))
        if not isinstance(response, dict):
            continue
        command = answer.get("command")
        if command in ("threads", "exceptionInfo"):
            context[command] = response
        elif command == "stackTrace" and arguments == {"threadId": thread_id}:
            if isinstance(_dict(response.get("body")).get("stackFrames"), list):
                context["stackTrace"] = response
        elif command == "scopes" and isinstance(arguments.get("frameId"), int):
            context["scopes"][arguments["frameId"]] = response
        elif command == "variables" and isinstance(arguments.get("variablesReference"), int):
            context["variables"][arguments["variablesReference"]] = response
    return context
