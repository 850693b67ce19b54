"""``lambda-debugger local``: the whole chain on one machine.

The handler runs in the real Lambda runtime client against the embedded
Runtime API, with an embedded broker and the very same proxy, child and
attach bridge as in the cloud. Status goes to stderr; the function's
response goes to stdout, exactly as the runtime posted it.
"""

import json
import os
import secrets
import sys
import threading
import time

from lambda_debugger.developer.bridge import AttachBridge, parse_listen
from lambda_debugger.wire.endpoints import describe_error

FUNCTION_ID = "local"

#: Seconds between "still waiting" lines when stderr is not a terminal.
REPORT_EVERY_S = 10.0


class LocalError(Exception):
    """Bad arguments for the local mode; the message says which."""


def read_event(path) -> bytes:
    """The event as JSON bytes: from ``path``, stdin for ``-``, ``{}`` for None.

    Raises:
        LocalError: the file is missing or not JSON.
    """
    if path is None:
        return b"{}"
    try:
        data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as exc:
        raise LocalError("cannot read the event file %s: %s" % (path, exc.strerror or exc)) from None
    try:
        json.loads(data)
    except ValueError as exc:
        raise LocalError("the event in %s is not JSON: %s" % (path, exc)) from None
    return data


def handler_file(handler: str, task_root: str) -> str:
    """The module file a Lambda handler name points at.

    Raises:
        LocalError: the name is not ``path/module.function`` or no such file.
    """
    module, _, function = handler.rpartition(".")
    if not module or not function:
        raise LocalError("HANDLER must look like path/module.function, not %r" % handler)
    base = os.path.join(task_root, module.replace(".", "/"))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    raise LocalError("no module for %r under %s (looked for %s.py)" % (handler, os.path.abspath(task_root), base))


def run_local(args) -> int:
    """Run one invocation; returns the exit status (0 when the function succeeded)."""
    out = sys.stderr
    try:
        event = read_event(args.event)
        path = handler_file(args.handler, args.task_root)
        listen = parse_listen(args.listen)
    except (LocalError, ValueError) as exc:
        print("lambda-debugger local: %s" % exc, file=out)
        return 2
    _note_missing_import(path, out)
    try:
        import awslambdaric  # noqa: F401  (run in a child process; checked here for a clear error)

        from broker_server.app import BrokerServer
        from broker_server.config import BrokerConfig
    except ImportError as exc:
        print("lambda-debugger local needs %s: pip install 'lambda-debugger[local]'" % exc.name, file=out)
        return 2
    # Fresh tokens each run: the embedded broker is as strict as a deployed one.
    lambda_token, debugger_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    broker = BrokerServer(
        BrokerConfig(
            host="127.0.0.1", lambda_port=0, debugger_port=0, lambda_token=lambda_token, debugger_token=debugger_token
        )
    )
    broker.start_in_thread()
    try:
        bridge = AttachBridge(
            FUNCTION_ID, "127.0.0.1:%s" % broker.debugger_port, token=debugger_token, listen=listen, out=out
        )
    except OSError as exc:
        broker.stop()
        print("lambda-debugger local: cannot listen on %s: %s" % (args.listen, exc.strerror or exc), file=out)
        return 2
    stop = threading.Event()
    bridge_thread = threading.Thread(target=_serve, args=(bridge, stop), name="attach-bridge", daemon=True)
    bridge_thread.start()
    function = _debuggable_function(args, broker.lambda_port, lambda_token, out)
    progress = threading.Thread(target=_report_wait, args=(bridge, stop, args.wait_max, listen, out), daemon=True)
    try:
        print(
            "invoking %s (timeout %g s); a debugger may attach at %s:%d for up to %g s"
            % (args.handler, args.timeout, listen[0], bridge.address[1], args.wait_max / 1000.0),
            file=out,
        )
        progress.start()
        result = function.invoke(event)
    except KeyboardInterrupt:
        print("interrupted", file=out)
        return 130
    finally:
        stop.set()
        function.close()
        broker.stop()
        bridge_thread.join(2)
    print("%s: %s in %.0f ms" % ("response" if result.ok else "error", result.request_id, result.duration_ms), file=out)
    sys.stdout.write(result.payload.decode("utf-8", "replace") + "\n")
    sys.stdout.flush()
    return 0 if result.ok else 1


def _debuggable_function(args, lambda_port, lambda_token: str, out):
    """The handler in the real runtime client, pointed at the embedded broker."""
    from lambda_debugger.local.function import LocalFunction

    return LocalFunction(
        args.handler,
        task_root=args.task_root,
        timeout_s=args.timeout,
        stdout=out,
        stderr=out,
        env={
            "DEBUGGER_ACTIVE": "1",
            "DEBUGGER_BROKER_ADDRESS": "ws://127.0.0.1:%s" % lambda_port,
            "DEBUGGER_FUNCTION_ID": FUNCTION_ID,
            "DEBUGGER_AUTH_TOKEN": lambda_token,
            "DEBUGGER_WAIT_MAX": str(args.wait_max),
        },
    )


def _note_missing_import(path: str, out) -> None:
    """Say so when the handler module cannot be debugged at all."""
    with open(path, encoding="utf-8", errors="replace") as source:
        if "import lambda_debugger" not in source.read():
            print(
                "note: %s does not import lambda_debugger, so no debugger can attach; add "
                "`import lambda_debugger` as its last line" % path,
                file=out,
            )


def _serve(bridge: AttachBridge, stop: threading.Event) -> None:
    try:
        bridge.serve(once=True, stop=stop, check=False)  # the embedded broker is ours
    except Exception as exc:  # the invocation goes on without a debugger
        bridge.say("attach bridge stopped: %s" % describe_error(exc))


def _report_wait(bridge: AttachBridge, stop: threading.Event, wait_max_ms: int, listen, out) -> None:
    """Say how long the invocation still waits, until a debugger comes."""
    started = time.monotonic()
    tty = out.isatty()
    while not stop.wait(1.0 if tty else REPORT_EVERY_S):
        elapsed = time.monotonic() - started
        left = wait_max_ms / 1000.0 - elapsed
        if bridge.paired is not None or left <= 0:
            return
        line = "waiting for a debugger at %s:%d: %d s elapsed, %d s left" % (
            listen[0],
            bridge.address[1],
            elapsed,
            left,
        )
        out.write(("\r\x1b[K" + line) if tty else line + "\n")
        out.flush()
