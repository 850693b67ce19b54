"""The ``lambda-debugger`` command: broker, attach, sessions, local."""

import argparse
import json
import os
import sys
from typing import List, Optional

from lambda_debugger import __version__, protocol

COMMANDS = ("broker", "attach", "sessions", "local")


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "broker":
        try:
            from broker_server.app import main as broker_main
        except ImportError as exc:
            print("lambda-debugger broker needs tornado: pip install 'lambda-debugger[broker]' (%s)" % exc,
                  file=sys.stderr)
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
    sub = parser.add_subparsers(dest="command", metavar="{broker,attach,sessions,local}")
    sub.add_parser("broker", help="run the broker (see: lambda-debugger broker --help)")

    attach = sub.add_parser("attach", help="bridge a local IDE port to a function's invocations")
    attach.add_argument("function_id", metavar="FUNCTION_ID", help="the DEBUGGER_FUNCTION_ID of the function")
    _broker_options(attach)
    attach.add_argument("--listen", default="127.0.0.1:5678", metavar="HOST:PORT",
                        help="where the IDE attaches (default 127.0.0.1:5678)")
    attach.add_argument("--once", action="store_true", help="exit after one debug session")
    attach.set_defaults(run=_attach)

    sessions = sub.add_parser("sessions", help="list what the broker holds now")
    _broker_options(sessions)
    sessions.add_argument("--json", action="store_true", help="print the raw JSON")
    sessions.set_defaults(run=_sessions)

    local = sub.add_parser("local", help="run a handler in the real Lambda runtime client, locally, debuggable")
    local.add_argument("handler", metavar="HANDLER", help="Lambda handler, e.g. examples/hello.handler")
    local.add_argument("--event", metavar="FILE", help="JSON event file ('-' for stdin; default {})")
    local.add_argument("--listen", default="127.0.0.1:5678", metavar="HOST:PORT",
                       help="where the IDE attaches (default 127.0.0.1:5678)")
    local.add_argument("--timeout", type=float, default=300.0, metavar="S",
                       help="function timeout in seconds (default 300)")
    local.add_argument("--wait-max", type=int, default=60000, metavar="MS",
                       help="how long the invocation waits for a debugger (default 60000)")
    local.add_argument("--task-root", default=".", metavar="DIR",
                       help="the folder Lambda would unpack the function into (default .)")
    local.set_defaults(run=_local)
    return parser


def _broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, metavar="HOST[:PORT]",
                        help="broker address: host, host:port, ws://... or wss://... (port 9229 by default)")
    parser.add_argument("--token", default=None,
                        help="the broker's debugger token (default: $BROKER_DEBUGGER_TOKEN)")
    parser.add_argument("--token-file", default=None, metavar="PATH",
                        help="read the debugger token from this file (keeps it out of process listings)")
    parser.add_argument("--ca-file", default=None, metavar="PATH",
                        help="PEM bundle that signs the broker's certificate (wss:// with a private CA)")


class _UsageError(Exception):
    """A bad command-line value; the message says which."""


def _token(args) -> Optional[str]:
    if args.token_file:
        if args.token:
            raise _UsageError("give --token or --token-file, not both")
        from broker_server.config import ConfigError, read_token_file

        try:
            return read_token_file(args.token_file, "--token-file")
        except ConfigError as exc:
            raise _UsageError(str(exc)) from None
    return args.token or os.environ.get("BROKER_DEBUGGER_TOKEN") or None


def _ca_file(args) -> Optional[str]:
    if args.ca_file and not os.path.isfile(args.ca_file):
        raise _UsageError("--ca-file %s: no such file" % args.ca_file)
    return args.ca_file


def _attach(args) -> int:
    from lambda_debugger.bridge import AttachBridge, BridgeError, parse_listen

    try:
        ca_file = _ca_file(args)
        bridge = AttachBridge(args.function_id, args.broker, token=_token(args), listen=parse_listen(args.listen),
                              sslopt={"ca_certs": ca_file} if ca_file else None)
    except (BridgeError, ValueError, protocol.ProtocolError, _UsageError) as exc:
        print("lambda-debugger attach: %s" % exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print("lambda-debugger attach: cannot listen on %s: %s" % (args.listen, exc.strerror or exc), file=sys.stderr)
        return 2
    bridge.say("bridging to %s" % bridge.url)
    try:
        bridge.serve(once=args.once)
    except BridgeError as exc:
        print("lambda-debugger attach: %s" % exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        bridge.say("stopped")
    return 0


def _sessions(args) -> int:
    from lambda_debugger.sessions import SessionsError, fetch_sessions, format_sessions

    try:
        token, ca_file = _token(args), _ca_file(args)
    except _UsageError as exc:
        print("lambda-debugger sessions: %s" % exc, file=sys.stderr)
        return 2
    context = None
    if ca_file:
        import ssl

        context = ssl.create_default_context(cafile=ca_file)
    try:
        sessions = fetch_sessions(args.broker, token, context=context)
    except SessionsError as exc:
        print("lambda-debugger sessions: %s" % exc, file=sys.stderr)
        return 1
    print(json.dumps(sessions, indent=2) if args.json else format_sessions(sessions))
    return 0


def _local(args) -> int:
    from lambda_debugger.local.runner import run_local

    return run_local(args)
