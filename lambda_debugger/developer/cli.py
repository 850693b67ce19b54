"""The ``lambda-debugger`` command: broker, attach, sessions, local, layer."""

import argparse
import json
import os
import sys
from typing import List, Optional, Tuple

from lambda_debugger import __version__
from lambda_debugger.wire import filters, protocol

COMMANDS = ("broker", "attach", "sessions", "local", "layer")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "broker":
        try:
            from broker_server.app import main as broker_main
        except ImportError as exc:
            print(
                "lambda-debugger broker needs tornado: pip install 'lambda-debugger[broker]' (%s)" % exc,
                file=sys.stderr,
            )
            return 2
        return broker_main(argv[1:], prog="lambda-debugger broker")
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help(sys.stderr)
        return 2
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lambda-debugger",
        description="Step through Python code running live in AWS Lambda from VS Code.",
    )
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="{broker,attach,sessions,local,layer}")
    sub.add_parser("broker", help="run the broker (see: lambda-debugger broker --help)")

    attach = sub.add_parser("attach", help="bridge a local IDE port to a function's invocations")
    attach.add_argument("function_id", metavar="FUNCTION_ID", help="the DEBUGGER_FUNCTION_ID of the function")
    _broker_options(attach)
    attach.add_argument(
        "--listen",
        default="127.0.0.1:5678",
        metavar="HOST:PORT",
        help="where the IDE attaches (default 127.0.0.1:5678)",
    )
    attach.add_argument("--once", action="store_true", help="exit after one debug session")
    attach.add_argument(
        "--no-prefetch",
        dest="prefetch",
        action="store_false",
        help="do not have the function send each stop's threads, stack and locals along with the stop"
        " (for diagnosis: every question of the IDE then crosses the network)",
    )
    attach.add_argument(
        "--when",
        metavar="EXPR",
        help="pair only with invocations whose event matches this JMESPath expression, evaluated in the"
        ' function (e.g. "name == \'alice\'" or "headers.\\"x-debug\\" == \'me\'"); other invocations are'
        " neither paired with this debugger nor delayed by it",
    )
    attach.add_argument(
        "--push",
        metavar="LOCAL_DIR",
        help="run your local edits in the debugged invocation, without a deploy: the .py files under"
        " LOCAL_DIR (what the function's task root holds) that differ from the deployed ones are sent"
        " when a session starts and whenever the IDE restarts it; only the debugged invocation runs"
        " them. Dependencies are not pushed. With --print-vscode-config: a directory relative to the"
        " workspace folder, mapped to --remote-root",
    )
    attach.add_argument(
        "--warn-at",
        default="60,30,10",
        metavar="S[,S...]",
        help="seconds before the Lambda timeout at which the IDE's debug console is told"
        " (default 60,30,10; 'none' for never)",
    )
    attach.add_argument(
        "--print-vscode-config",
        action="store_true",
        help="print .vscode/launch.json and tasks.json for these options (F5 starts this bridge"
        " and attaches) as one JSON object keyed by file, then exit without connecting",
    )
    attach.add_argument(
        "--remote-root",
        default="/var/task",
        metavar="PATH",
        help="with --print-vscode-config: where the function's code lives in Lambda, mapped to"
        " the workspace folder (default /var/task)",
    )
    attach.set_defaults(run=_attach)

    sessions = sub.add_parser("sessions", help="list what the broker (or each broker of a fleet) holds now")
    _broker_options(sessions, many=True)
    sessions.add_argument("--json", action="store_true", help="print the raw JSON")
    sessions.set_defaults(run=_sessions)

    local = sub.add_parser("local", help="run a handler in the real Lambda runtime client, locally, debuggable")
    local.add_argument("handler", metavar="HANDLER", help="Lambda handler, e.g. examples/hello.handler")
    local.add_argument("--event", metavar="FILE", help="JSON event file ('-' for stdin; default {})")
    local.add_argument(
        "--listen",
        default="127.0.0.1:5678",
        metavar="HOST:PORT",
        help="where the IDE attaches (default 127.0.0.1:5678)",
    )
    local.add_argument(
        "--timeout", type=float, default=300.0, metavar="S", help="function timeout in seconds (default 300)"
    )
    local.add_argument(
        "--wait-max",
        type=int,
        default=60000,
        metavar="MS",
        help="how long the invocation waits for a debugger (default 60000)",
    )
    local.add_argument(
        "--task-root", default=".", metavar="DIR", help="the folder Lambda would unpack the function into (default .)"
    )
    local.set_defaults(run=_local)

    layer = sub.add_parser("layer", help="build a Lambda layer zip of the Lambda side (python/ and the exec wrapper)")
    layer.add_argument(
        "--arch", default="x86_64", choices=("x86_64", "arm64"), help="the function's architecture (default x86_64)"
    )
    layer.add_argument(
        "--python",
        default="%d.%d" % sys.version_info[:2],
        metavar="3.X",
        help="the function's Python runtime, 3.10 to 3.14 (default: this Python's)",
    )
    layer.add_argument("-o", "--output", default="dist", metavar="DIR", help="folder for the zip (default dist)")
    layer.set_defaults(run=_layer)
    return parser


def _broker_options(parser: argparse.ArgumentParser, *, many: bool = False) -> None:
    parser.add_argument(
        "--broker",
        required=True,
        action="append" if many else "store",
        metavar="HOST[:PORT]",
        help="broker address: host, host:port, ws://... or wss://... (port 9229 by default)"
        + ("; give it once per broker of a fleet to see them all" if many else ""),
    )
    parser.add_argument("--token", default=None, help="the broker's debugger token (default: $BROKER_DEBUGGER_TOKEN)")
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the debugger token from this file (keeps it out of process listings)",
    )
    parser.add_argument(
        "--ca-file",
        default=None,
        metavar="PATH",
        help="PEM bundle that signs the broker's certificate (wss:// with a private CA)",
    )


class _UsageError(Exception):
    """A bad command-line value; the message says which."""


def _token(args) -> Optional[str]:
    if args.token_file:
        if args.token:
            raise _UsageError("give --token or --token-file, not both")
        from lambda_debugger.wire.tokens import TokenFileError, read_token_file

        try:
            return read_token_file(args.token_file, "--token-file")
        except TokenFileError as exc:
            raise _UsageError(str(exc)) from None
    return args.token or os.environ.get("BROKER_DEBUGGER_TOKEN") or None


def _ca_file(args) -> Optional[str]:
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise _UsageError("--ca-file %s: no such file" % args.ca_file)
    return args.ca_file


def _push_dir(value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not os.path.isdir(value):
        raise _UsageError("--push %s: not a directory" % value)
    return os.path.abspath(value)


def _attach(args) -> int:
    from lambda_debugger.developer.bridge import AttachBridge, BridgeError, parse_listen

    if args.print_vscode_config:
        return _print_vscode_config(args)
    try:
        ca_file = _ca_file(args)
        bridge = AttachBridge(
            args.function_id,
            args.broker,
            token=_token(args),
            listen=parse_listen(args.listen),
            sslopt={"ca_certs": ca_file} if ca_file else None,
            warn_at=_warn_at(args.warn_at),
            prefetch=args.prefetch,
            when=args.when,
            push_dir=_push_dir(args.push),
        )
    except (BridgeError, ValueError, protocol.ProtocolError, _UsageError) as exc:
        print("lambda-debugger attach: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("lambda-debugger attach: cannot listen on %s: %s" % (args.listen, exc.strerror or exc), file=sys.stderr)
        return 2
    bridge.say(
        "bridging to %s%s"
        % (bridge.url, " for invocations whose event matches %s" % args.when if args.when is not None else "")
    )
    if bridge.push_dir is not None:
        bridge.say(
            "pushing the .py files of %s that differ from the deployed ones into each debugged invocation"
            " (dependencies are not pushed); the IDE's restart runs the invocation again with your edits"
            % bridge.push_dir
        )
    if not bridge.token:
        bridge.say(
            "warning: no debugger token (BROKER_DEBUGGER_TOKEN, --token or --token-file); the broker"
            " refuses the bridge unless it runs --insecure"
        )
    if not _is_loopback(bridge.address[0]):
        bridge.say(
            "warning: listening on %s, beyond this machine: whoever reaches that port can debug the"
            " function, that is, run code with its role; prefer --listen 127.0.0.1:PORT" % bridge.address[0]
        )
    try:
        bridge.serve(once=args.once)
    except BridgeError as exc:
        print("lambda-debugger attach: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bridge.say("stopped")
    return 0


def _warn_at(text: str) -> Tuple[int, ...]:
    if text.strip().lower() == "none":
        return ()
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise _UsageError("--warn-at must be whole seconds separated by commas (e.g. 60,30,10) or none, not %r" % text)
    return tuple(int(part) for part in parts)


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _print_vscode_config(args) -> int:
    """Print launch.json and tasks.json for these options; binds and connects nothing."""
    from lambda_debugger.developer.bridge import parse_listen
    from lambda_debugger.developer.vscode import render, vscode_files

    try:
        if not protocol.valid_function_id(args.function_id):
            raise _UsageError("function ID must match %s" % protocol.FUNCTION_ID_PATTERN)
        protocol.broker_url(args.broker, protocol.DEFAULT_DEBUGGER_PORT, protocol.DEBUG_PATH_PREFIX + args.function_id)
        listen = parse_listen(args.listen)
        if listen[1] == 0:
            raise _UsageError("--print-vscode-config needs a fixed --listen port, not 0")
        if not args.remote_root.startswith("/"):
            raise _UsageError(
                "--remote-root must be an absolute path in the Lambda environment, not %r" % args.remote_root
            )
        if args.token and args.token_file:
            raise _UsageError("give --token or --token-file, not both")
        ca_file = _ca_file(args)
        problem = filters.problem(args.when) if args.when is not None else None
        if problem:
            raise _UsageError("--when: %s" % problem)
        if args.push is not None and (os.path.isabs(args.push) or ".." in args.push.replace("\\", "/").split("/")):
            raise _UsageError(
                "with --print-vscode-config, --push is a directory inside the workspace folder, like . or src"
            )
    except (ValueError, protocol.ProtocolError, _UsageError) as exc:
        print("lambda-debugger attach: %s" % exc, file=sys.stderr)
        return 2
    token_file = os.path.abspath(args.token_file) if args.token_file else None
    files = vscode_files(
        function_id=args.function_id,
        broker=args.broker,
        listen=listen,
        remote_root=args.remote_root,
        token_file=token_file,
        ca_file=os.path.abspath(ca_file) if ca_file else None,
        once=args.once,
        prefetch=args.prefetch,
        when=args.when,
        push_dir=args.push,
    )
    print(render(files), end="")
    # Guidance goes to stderr so that stdout stays one JSON document.
    if token_file:
        where = "from %s (--token-file)" % token_file
    else:
        where = "from BROKER_DEBUGGER_TOKEN in VS Code's environment (or add --token-file PATH)"
    print(
        "lambda-debugger attach: put each value into that file of your project (or merge it into the file"
        " you have); the bridge that F5 starts reads the debugger token %s%s"
        % (where, "; --token is never written into the files" if args.token else ""),
        file=sys.stderr,
    )
    return 0


def _sessions(args) -> int:
    from lambda_debugger.developer.sessions import (
        SessionsError,
        fetch_fleet,
        fetch_sessions,
        fetch_status,
    )

    try:
        token, ca_file = _token(args), _ca_file(args)
    except _UsageError as exc:
        print("lambda-debugger sessions: %s" % exc, file=sys.stderr)
        return 2
    context = None
    if ca_file:
        import ssl

        context = ssl.create_default_context(cafile=ca_file)
    brokers = list(dict.fromkeys(args.broker))  # each once, in the order given
    if len(brokers) > 1:
        # A fleet: each broker holds its own function IDs.
        sessions, problems, watching = fetch_fleet(brokers, token, context=context)
        for problem in problems:
            print("lambda-debugger sessions: %s" % problem, file=sys.stderr)
        if len(problems) < len(brokers):  # nothing to show when none answered
            _print_sessions(args, sessions, watching)
        return 1 if problems else 0
    try:
        sessions = fetch_sessions(brokers[0], token, context=context)
    except SessionsError as exc:
        print("lambda-debugger sessions: %s" % exc, file=sys.stderr)
        return 1
    status = fetch_status(brokers[0], token, context=context) if not args.json else {}
    _print_sessions(args, sessions, status.get("control_connections_by_function") or {})
    return 0


def _print_sessions(args, sessions: List[dict], watching: dict) -> None:
    from lambda_debugger.developer.sessions import format_sessions, format_watching

    if args.json:
        print(json.dumps(sessions, indent=2))
        return
    print(format_sessions(sessions))
    if format_watching(watching):
        print(format_watching(watching))


def _local(args) -> int:
    from lambda_debugger.local.runner import run_local

    return run_local(args)


def _layer(args) -> int:
    from lambda_debugger.developer.layer import LayerError, build_layer, describe

    try:
        report = build_layer(args.arch, args.python, args.output, log=lambda line: print(line, flush=True))
    except LayerError as exc:
        print("lambda-debugger layer: %s" % exc, file=sys.stderr)
        return 1
    print(describe(report))
    return 0
