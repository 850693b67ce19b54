"""VS Code configuration: F5 starts ``lambda-debugger attach`` and attaches.

Pure functions that build ``.vscode/launch.json`` and ``.vscode/tasks.json``
as dicts. ``lambda-debugger attach --print-vscode-config`` prints them with
the values given on its command line; ``examples/vscode/.vscode/`` holds
what they give for the placeholders (``vscode_files()`` with no function ID
and no broker), and a test keeps the two equal.

How the two files work together: the launch configuration names the attach
task as its ``preLaunchTask``. The task is a background task, so VS Code
does not wait for it to exit but for its problem matcher to go idle:
``activeOnStart`` makes it busy from the start, and the first line that
matches ``endsPattern`` makes it idle. The bridge prints ``bridging to ...``
(``beginsPattern``) once, first, and ``listening for the IDE on ...`` once
its port accepts connections, so VS Code attaches exactly when the bridge
can take the connection. (Without ``activeOnStart`` the begin line would be
needed, and it must be a different line: VS Code never tests a line that
starts a cycle against ``endsPattern``.)

The task is left running after a session: between sessions it holds no
broker connection, the next F5 finds it running and idle and attaches at
once, and its terminal keeps the status lines. The debugger token is never
written into these files; the bridge reads ``BROKER_DEBUGGER_TOKEN`` from
VS Code's environment, or the file named by ``--token-file``.
"""

import json
from typing import Dict, Optional, Tuple

#: Label of the attach task, and the launch configuration's preLaunchTask.
TASK_LABEL = "lambda-debugger attach"

#: Name of the launch configuration.
CONFIGURATION_NAME = "Attach to Lambda"

#: Where a zip deployment's code lives in the Lambda execution environment.
DEFAULT_REMOTE_ROOT = "/var/task"

#: The bridge's first line (printed by the CLI once the port is bound).
BEGINS_PATTERN = "^bridging to "

#: The bridge's line once it accepts IDE connections.
ENDS_PATTERN = "^listening for the IDE on "

#: VS Code requires a problem pattern even when a task reports no problems;
#: the bridge never prints this line, so it never makes one.
NO_PROBLEMS_PATTERN = "^lambda-debugger reports no problems to VS Code$"

#: Placeholders (VS Code inputs) used when no function ID or broker is given.
FUNCTION_ID_INPUT = "lambdaDebuggerFunctionId"
BROKER_INPUT = "lambdaDebuggerBroker"
PLACEHOLDER_FUNCTION_ID = "my-fn"
PLACEHOLDER_BROKER = "wss://broker.example.com"


def format_listen(listen: Tuple[str, int]) -> str:
    """``host:port`` for ``--listen``, with brackets around an IPv6 host."""
    host, port = listen
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def connect_host(listen_host: str) -> str:
    """The address the IDE dials for a bridge that listens on ``listen_host``.

    A wildcard address is where the bridge listens, not where to connect.
    """
    if listen_host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if listen_host == "::":
        return "::1"
    return listen_host


def launch_config(
    *,
    function_id: Optional[str] = None,
    listen: Tuple[str, int] = ("127.0.0.1", 5678),
    remote_root: str = DEFAULT_REMOTE_ROOT,
    local_root: str = "${workspaceFolder}",
) -> dict:
    """The content of ``.vscode/launch.json``."""
    suffix = " (%s)" % function_id if function_id else ""
    return {
        "version": "0.2.0",
        "configurations": [
            {
                "name": CONFIGURATION_NAME + suffix,
                "type": "debugpy",
                "request": "attach",
                "connect": {"host": connect_host(listen[0]), "port": listen[1]},
                "pathMappings": [{"localRoot": local_root, "remoteRoot": remote_root}],
                "justMyCode": True,
                "preLaunchTask": TASK_LABEL + suffix,
            }
        ],
    }


def tasks_config(
    *,
    function_id: Optional[str] = None,
    broker: Optional[str] = None,
    listen: Tuple[str, int] = ("127.0.0.1", 5678),
    token_file: Optional[str] = None,
    ca_file: Optional[str] = None,
    once: bool = False,
    prefetch: bool = True,
    when: Optional[str] = None,
    push_dir: Optional[str] = None,
) -> dict:
    """The content of ``.vscode/tasks.json``.

    Args:
        function_id / broker: written as given; when None, VS Code asks for
            them (a ``promptString`` input with a placeholder default) the
            first time the task starts.
        token_file / ca_file: paths passed on to the bridge when given. The
            token itself is never an argument here.
        once: start the bridge with ``--once`` (it exits after one session,
            and the next F5 starts it again).
        prefetch: False starts the bridge with ``--no-prefetch``.
        when: the bridge's ``--when`` filter, passed on as one argument.
        push_dir: the bridge's ``--push`` directory (``${workspaceFolder}``
            based), the same as launch.json's ``localRoot``.
    """
    inputs = []
    if function_id is None:
        inputs.append(
            {
                "id": FUNCTION_ID_INPUT,
                "type": "promptString",
                "description": "DEBUGGER_FUNCTION_ID of the function to debug",
                "default": PLACEHOLDER_FUNCTION_ID,
            }
        )
    if broker is None:
        inputs.append(
            {
                "id": BROKER_INPUT,
                "type": "promptString",
                "description": "broker address: host, host:port, ws://... or wss://... (port 9229 by default)",
                "default": PLACEHOLDER_BROKER,
            }
        )
    args = [
        "attach",
        function_id if function_id is not None else "${input:%s}" % FUNCTION_ID_INPUT,
        "--broker",
        broker if broker is not None else "${input:%s}" % BROKER_INPUT,
        "--listen",
        format_listen(listen),
    ]
    if token_file:
        args += ["--token-file", token_file]
    if ca_file:
        args += ["--ca-file", ca_file]
    if once:
        args.append("--once")
    if not prefetch:
        args.append("--no-prefetch")
    if when is not None:
        args += ["--when", when]
    if push_dir is not None:
        args += ["--push", push_dir]
    task = {
        "label": TASK_LABEL + (" (%s)" % function_id if function_id else ""),
        "type": "process",
        "command": "lambda-debugger",
        "args": args,
        "isBackground": True,
        "problemMatcher": {
            "owner": "lambda-debugger",
            "pattern": {"regexp": NO_PROBLEMS_PATTERN},
            "background": {
                "activeOnStart": True,
                "beginsPattern": BEGINS_PATTERN,
                "endsPattern": ENDS_PATTERN,
            },
        },
        "presentation": {"reveal": "always", "panel": "dedicated"},
    }
    config = {"version": "2.0.0", "tasks": [task]}
    if inputs:
        config["inputs"] = inputs
    return config


def vscode_files(
    *,
    function_id: Optional[str] = None,
    broker: Optional[str] = None,
    listen: Tuple[str, int] = ("127.0.0.1", 5678),
    remote_root: str = DEFAULT_REMOTE_ROOT,
    token_file: Optional[str] = None,
    ca_file: Optional[str] = None,
    once: bool = False,
    prefetch: bool = True,
    when: Optional[str] = None,
    push_dir: Optional[str] = None,
) -> Dict[str, dict]:
    """Both files, keyed by their path in the project. With ``push_dir``
    (relative to the workspace folder), that directory is both pushed and
    mapped to ``remote_root``."""
    local_root = "${workspaceFolder}"
    if push_dir is not None and push_dir not in ("", "."):
        local_root += "/" + push_dir.strip("/")
    return {
        ".vscode/launch.json": launch_config(
            function_id=function_id, listen=listen, remote_root=remote_root, local_root=local_root
        ),
        ".vscode/tasks.json": tasks_config(
            function_id=function_id,
            broker=broker,
            listen=listen,
            token_file=token_file,
            ca_file=ca_file,
            once=once,
            prefetch=prefetch,
            when=when,
            push_dir=local_root if push_dir is not None else None,
        ),
    }


def render(config: dict) -> str:
    """JSON text as written to the files: two-space indent, final newline."""
    return json.dumps(config, indent=2) + "\n"
