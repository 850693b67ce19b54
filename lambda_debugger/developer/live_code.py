"""The bridge's side of live code push and restart, for one session.

The bridge's options request asks for the Lambda side's manifest (with
``--push``); the answer tells whether the Lambda side can restart and what
it runs. The bridge then pushes the local files that differ or are new,
before the handler starts. It advertises ``supportsRestartRequest`` in
debugpy's ``initialize`` answer; the IDE's ``restart`` becomes the bridge's
restart request, which carries the files as they are now and the IDE's
configuration, recorded here, for the fresh debugpy. See
:mod:`lambda_debugger.wire.push`.
"""

import time
from typing import Callable, Dict, List, Optional, Tuple

from lambda_debugger.wire import dap, push
from lambda_debugger.wire.prefetch import OPTIONS_COMMAND, options_request

#: The IDE's configuration requests, replayed to a restarted child's debugpy
#: in this order (the latest of each kind; breakpoints per source).
CONFIGURATION = ("initialize", "attach", "setBreakpoints", "setFunctionBreakpoints", "setExceptionBreakpoints")

#: What to do with a message of the Lambda side's on its way to the IDE.
PASS, DROP = "pass", "drop"


class LiveCode:
    """Push and restart for one IDE connection.

    Attributes:
        local_dir: the directory pushed (``--push``), or None.
        supported: the Lambda side answered the options: it restarts, and pushes.
        deadline_ms: the invocation's deadline (epoch ms), once paired.
    """

    def __init__(
        self,
        local_dir: Optional[str],
        conversation: dap.Conversation,
        *,
        say: Callable[[str], None],
        to_ide: Callable[[bytes], None],
    ):
        self.local_dir = local_dir
        self.dap = conversation
        self.say = say
        self.to_ide = to_ide
        self.supported = False
        self.deadline_ms = 0
        self.own: List[bytes] = []  # the bridge's requests, for the next boundary of the stream
        self._options_seq: Optional[int] = None
        self._answered = False  # the options request was answered (or will never be)
        self._manifest: Dict[str, str] = {}
        self._configuration: Dict[Tuple[str, str], dict] = {}
        self._done: Optional[dict] = None
        self._mine: Dict[int, Tuple[str, Optional[int]]] = {}  # our seq -> (command, the IDE's restart seq)
        self._stopped_thread: Optional[int] = None

    def options(self, prefetch: bool) -> bytes:
        """The bridge's first request of the session."""
        self._options_seq = self.dap.next_seq()
        return options_request(self._options_seq, prefetch=prefetch, push=self.local_dir is not None)

    # From the IDE ---------------------------------------------------------

    def from_ide(self, request: dict) -> bool:
        """A whole request of the IDE's. Returns whether the bridge took it
        (a ``restart``): it must not reach the Lambda side as it is."""
        command = request.get("command")
        arguments = request.get("arguments")
        if command == "restart" and isinstance(request.get("seq"), int):
            self._restart(request["seq"])
            return True
        if command in CONFIGURATION:
            key = ""
            if command == "setBreakpoints" and isinstance(arguments, dict):
                source = _dict(arguments.get("source"))
                key = str(source.get("path") or source.get("sourceReference") or source.get("name"))
            self._configuration[(command, key)] = {"command": command, "arguments": arguments or {}}
        elif command == "configurationDone":
            self._done = {"command": command, "arguments": arguments or {}}
        return False

    def owns(self, message: dict) -> bool:
        """Whether ``message`` answers a request of the bridge's own."""
        request_seq = message.get("request_seq")
        return message.get("type") == "response" and (
            (request_seq is not None and request_seq == self._options_seq) or request_seq in self._mine
        )

    def _restart(self, ide_seq: int) -> None:
        left = self.deadline_ms / 1000.0 - time.time()
        if any(command == push.RESTART_COMMAND for command, _ in self._mine.values()):
            return self._refuse(ide_seq, "a restart is already under way")
        if not self.supported:
            return self._refuse(ide_seq, "the function runs a lambda-debugger older than restart support")
        if left < push.MIN_RESTART_S:
            return self._refuse(
                ide_seq, "only %.1f s left before the Lambda timeout, too little to run the handler again" % left
            )
        if self._done is None:
            return self._refuse(ide_seq, "the IDE has not finished configuring the session")
        files: List[push.PushedFile] = []
        if self.local_dir is not None:
            try:
                plan = push.plan(self.local_dir, self._manifest)
            except (push.PushRefused, OSError) as exc:
                return self._refuse(ide_seq, "cannot push %s: %s" % (self.local_dir, exc))
            files = plan.files
            self.say("restart: pushing %s" % plan.describe())
        replay = [self._configuration[key] for key in sorted(self._configuration, key=_replay_order)]
        self._request(
            push.RESTART_COMMAND,
            {"files": push.encode_files(files), "configuration": replay + [self._done]},
            ide_seq,
        )

    def _refuse(self, ide_seq: int, why: str) -> None:
        self.say("restart refused: " + why)
        self.to_ide(self.dap.answer(ide_seq, "restart", error="lambda-debugger: restart refused: " + why))

    # From the Lambda side -------------------------------------------------

    def from_adapter(self, message: dict, whole: bool) -> object:
        """A message (its head, unless ``whole``) on its way to the IDE.
        Returns PASS, DROP, or the message to send instead."""
        kind = message.get("type")
        if kind == "event" and message.get("event") == "stopped" and whole:
            thread = _dict(message.get("body")).get("threadId")
            self._stopped_thread = thread if isinstance(thread, int) else self._stopped_thread
            return PASS
        if kind != "response":
            return PASS
        request_seq = message.get("request_seq")
        if request_seq is not None and request_seq == self._options_seq:
            self._on_options(message if whole else None)
            return DROP
        if request_seq in self._mine:
            command, ide_seq = self._mine.pop(request_seq)
            self._on_own_answer(command, ide_seq, message if whole else {})
            return DROP
        if message.get("command") == OPTIONS_COMMAND:
            return DROP  # a Lambda side that passed it to debugpy
        if message.get("command") == "initialize" and whole:
            if not self._answered:
                self._answered = True  # never will be: an older Lambda side
                if self.local_dir is not None:
                    self._tell(
                        "the function runs a lambda-debugger older than --push: it runs the deployed code",
                        important=True,
                    )
            if self.supported and message.get("success"):
                body = dict(_dict(message.get("body")), supportsRestartRequest=True)
                return dict(message, body=body)
        return PASS

    def _on_options(self, response: Optional[dict]) -> None:
        self._answered = True
        if response is None:  # too large to read: the Lambda side waits for a push all the same
            if self.local_dir is not None:
                self._tell("the function's list of its files could not be read; the deployed code runs", True)
                self._send_push([])
            return
        body = _dict(response.get("body"))
        self.supported = response.get("success") is True and body.get("restart") is True
        if self.local_dir is None:
            return
        manifest = body.get("manifest")
        if not self.supported or not isinstance(manifest, dict):
            self._tell("the function runs a lambda-debugger older than --push: it runs the deployed code", True)
            return
        files = manifest.get("files")
        self._manifest = {k: v for k, v in files.items() if isinstance(v, str)} if isinstance(files, dict) else {}
        try:
            plan = push.plan(self.local_dir, self._manifest)
        except (push.PushRefused, OSError) as exc:
            self._tell("cannot push %s: %s; the deployed code runs" % (self.local_dir, exc), important=True)
            plan = push.Plan([], 0)
        else:
            self.say("pushing %s" % plan.describe())
            if (
                self._manifest
                and plan.files
                and not plan.same
                and not any(f.path in self._manifest for f in plan.files)
            ):
                self._tell(
                    "none of the local files is at a path the function has (it runs %s): is %s what its task root"
                    " holds, and not a folder above or below it?"
                    % (
                        ", ".join(sorted(self._manifest)[:3]) + (", ..." if len(self._manifest) > 3 else ""),
                        self.local_dir,
                    ),
                    important=True,
                )
        self._send_push(plan.files)

    def _send_push(self, files: List[push.PushedFile]) -> None:
        self._request(push.PUSH_COMMAND, {"files": push.encode_files(files)})

    def _request(self, command: str, arguments: dict, ide_seq: Optional[int] = None) -> None:
        """Queue a request of the bridge's own for the Lambda side (source
        text as UTF-8, not escaped)."""
        seq = self.dap.next_seq()
        self._mine[seq] = (command, ide_seq)
        message = {"seq": seq, "type": "request", "command": command, "arguments": arguments}
        self.own.append(dap.encode(message, ensure_ascii=False))

    def _on_own_answer(self, command: str, ide_seq: Optional[int], response: dict) -> None:
        ok = response.get("success") is True
        body = _dict(response.get("body"))
        report = body.get("files")
        report = report if isinstance(report, list) else []
        for entry in report:
            if isinstance(entry, dict):
                self._tell("pushed " + push.describe(entry), important=entry.get("status") == "not applied")
        if command == push.PUSH_COMMAND:
            if not ok:
                self._tell(str(response.get("message") or "the push failed"), important=True)
            return
        if ide_seq is None:
            return
        if ok:
            # The IDE's requests to the old run will never be answered by it.
            for seq, pending in sorted(self.dap.pending.items()):
                if seq < ide_seq:
                    self.to_ide(self.dap.answer(seq, pending, error="cancelled: the invocation restarted"))
            if self._stopped_thread is not None:
                self.to_ide(
                    dap.encode(
                        {
                            "seq": self.dap.next_seq(),
                            "type": "event",
                            "event": "continued",
                            "body": {"threadId": self._stopped_thread, "allThreadsContinued": True},
                        }
                    )
                )
            self.say("restart: the handler runs again from the top (run %s)" % body.get("run", "?"))
            self.to_ide(self.dap.answer(ide_seq, "restart"))
        else:
            why = str(response.get("message") or "the restart failed")
            self.say(why)
            self.to_ide(self.dap.answer(ide_seq, "restart", error="lambda-debugger: " + why))

    def _tell(self, text: str, important: bool = False) -> None:
        """Say ``text`` here and in the IDE's debug console."""
        self.say(text)
        self.to_ide(self.dap.output("lambda-debugger: %s\n" % text, "stderr" if important else "console"))


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _replay_order(key: Tuple[str, str]) -> Tuple[int, str]:
    return CONFIGURATION.index(key[0]), key[1]
