"""VS Code: the example .vscode/ files, their generator, and the background
task's patterns against the lines a real bridge prints."""

import json
import os
import pty
import re
import socket
import subprocess
import sys
import threading

import pytest

from lambda_debugger.developer import vscode
from lambda_debugger.developer.cli import main
from tests.support.chain import DEBUGGER_TOKEN, REPO, free_port, stop_process, wait_until
from tests.support.dap_client import encode_message

pytestmark = pytest.mark.timeout(90)

EXAMPLE = os.path.join(REPO, "examples", "vscode")
INPUT_RE = re.compile(r"\$\{input:([^}]+)\}")


def load_example(path):
    """An example file, parsed as strict JSON (no comments are used)."""
    with open(os.path.join(EXAMPLE, path), encoding="utf-8") as source:
        return json.load(source)


def the_task(tasks, label):
    matching = [task for task in tasks["tasks"] if task["label"] == label]
    assert len(matching) == 1, "no single task labelled %r" % label
    return matching[0]


def with_input_defaults(tasks, args):
    """The task's arguments as VS Code runs them when each prompt is answered
    with its default."""
    defaults = {item["id"]: item["default"] for item in tasks.get("inputs", [])}
    return [INPUT_RE.sub(lambda m: defaults[m.group(1)], arg) for arg in args]


def watch(lines, background):
    """Replay VS Code's background problem matcher (WatchingProblemCollector).

    Returns the state changes as ``("busy" | "idle", line index)``; a task
    that is active on start begins with ``("busy", -1)``. As in VS Code, a
    line that starts a cycle is not also tested against ``endsPattern``,
    and ``endsPattern`` only ends a cycle that is active.
    """
    begins, ends = re.compile(background["beginsPattern"]), re.compile(background["endsPattern"])
    active = bool(background.get("activeOnStart"))
    changes = [("busy", -1)] if active else []
    for index, line in enumerate(lines):
        if begins.search(line) and not active:
            active = True
            changes.append(("busy", index))
            continue
        if ends.search(line) and active:
            active = False
            changes.append(("idle", index))
    return changes


def terminal_lines(raw):
    """Complete lines as a terminal shows them (what VS Code's task system
    matches): applies CR, LF and ESC[K, the only controls the bridge writes."""
    lines, line, col, i = [], [], 0, 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del line[col:]
            i += 3
            continue
        char = raw[i]
        assert char != "\x1b", "unexpected escape sequence %r" % raw[i : i + 8]
        if char == "\r":
            col = 0
        elif char == "\n":
            lines.append("".join(line))
            line, col = [], 0
        else:
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
        i += 1
    return lines


def assert_idle_once_listening(lines, background, port):
    """The task goes idle at the 'listening' line, after the begin line, and
    never busy again; returns the index of the 'listening' line."""
    listening = [i for i, line in enumerate(lines) if line.startswith("listening for the IDE on 127.0.0.1:%d;" % port)]
    assert len(listening) == 1, lines
    begin = [i for i, line in enumerate(lines) if re.search(background["beginsPattern"], line)]
    assert begin and begin[0] < listening[0], "beginsPattern not found before endsPattern: %r" % lines
    assert watch(lines, background) == [("busy", -1), ("idle", listening[0])], lines
    return listening[0]


# --- the files -------------------------------------------------------------------------------------------


def test_the_example_files_are_what_the_generator_gives_for_placeholders():
    files = vscode.vscode_files()
    assert sorted(files) == [".vscode/launch.json", ".vscode/tasks.json"]
    for path, config in files.items():
        assert load_example(path) == config, path
        with open(os.path.join(EXAMPLE, path), encoding="utf-8") as source:
            assert source.read() == vscode.render(config), "%s: regenerate it with vscode.render" % path


def test_f5_starts_the_attach_task_and_attaches_to_its_port():
    launch, tasks = load_example(".vscode/launch.json"), load_example(".vscode/tasks.json")
    (config,) = launch["configurations"]
    assert (config["type"], config["request"]) == ("debugpy", "attach")
    assert config["connect"] == {"host": "127.0.0.1", "port": 5678}
    assert config["pathMappings"] == [{"localRoot": "${workspaceFolder}", "remoteRoot": "/var/task"}]
    task = the_task(tasks, config["preLaunchTask"])
    assert task["isBackground"] is True and task["type"] == "process"
    assert task["command"] == "lambda-debugger" and task["args"][0] == "attach"
    background = task["problemMatcher"]["background"]
    assert background["beginsPattern"] and background["endsPattern"]
    assert task["problemMatcher"]["pattern"]["regexp"]  # VS Code refuses a matcher without one
    # Every ${input:...} is defined, and every input is used.
    used = {name for arg in task["args"] for name in INPUT_RE.findall(arg)}
    assert used == {item["id"] for item in tasks["inputs"]} == {vscode.FUNCTION_ID_INPUT, vscode.BROKER_INPUT}
    assert all(item["type"] == "promptString" and item["default"] for item in tasks["inputs"])
    # The token is taken from the environment or a file, never from these files.
    text = json.dumps([launch, tasks]).lower()
    assert '--token"' not in text and "broker_debugger_token" not in text


def test_the_task_command_line_is_one_the_cli_accepts_and_describes_the_same_port(capsys):
    """Run the example task's own arguments (prompts answered with their
    defaults) with --print-vscode-config: the CLI accepts them and gives the
    same connect address and path mappings as the example launch.json."""
    launch, tasks = load_example(".vscode/launch.json"), load_example(".vscode/tasks.json")
    (config,) = launch["configurations"]
    args = with_input_defaults(tasks, the_task(tasks, config["preLaunchTask"])["args"])
    assert args[:2] == ["attach", vscode.PLACEHOLDER_FUNCTION_ID]
    assert main(args + ["--print-vscode-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    (generated,) = printed[".vscode/launch.json"]["configurations"]
    assert generated["connect"] == config["connect"]
    assert generated["pathMappings"] == config["pathMappings"]
    assert printed[".vscode/tasks.json"]["tasks"][0]["args"] == args


# --- the patterns against a real bridge ------------------------------------------------------------------


def test_background_patterns_match_what_a_real_bridge_prints(broker, start_bridge, make_function):
    """Piped output (no terminal): idle exactly at 'listening', when the port
    takes the IDE; a whole debug session later, never busy again, and the
    bridge is still there for the next F5."""
    background = load_example(".vscode/tasks.json")["tasks"][0]["problemMatcher"]["background"]
    bridge = start_bridge(once=False)
    wait_until(lambda: "listening for the IDE" in bridge.output(), 15, "the bridge to listen")
    assert_idle_once_listening(bridge.output().splitlines(), background, bridge.port)

    # What VS Code does once the task is idle: attach, for a whole session.
    function = make_function(broker=broker)
    future = function.invoke_async()
    client = bridge.connect()
    client.attach_and_configure({}, timeout=30)
    assert future.result(timeout=30).ok
    wait_until(lambda: "session ended" in bridge.output(), 15, "the end of the session")
    lines = bridge.output().splitlines()
    assert [line for line in lines if line.startswith("attached to orders: request ")]
    assert_idle_once_listening(lines, background, bridge.port)
    assert bridge.process.poll() is None  # still listening: the next F5 attaches at once


class PtyBridge:
    """``lambda-debugger attach`` on a pseudo-terminal, as in a VS Code task."""

    def __init__(self, broker):
        self.port = free_port()
        master, slave = pty.openpty()
        env = dict(os.environ, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambda_debugger",
                "attach",
                "orders",
                "--broker",
                "127.0.0.1:%d" % broker.debugger_port,
                "--listen",
                "127.0.0.1:%d" % self.port,
            ],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=REPO,
        )
        os.close(slave)
        self._master = master
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO: the bridge closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._raw += data

    def raw(self):
        with self._lock:
            return self._raw.decode("utf-8", errors="replace")

    def stop(self):
        stop_process(self.process)
        self._reader.join(5)
        os.close(self._master)


@pytest.fixture
def pty_bridge(broker):
    bridge = PtyBridge(broker)
    yield bridge
    bridge.stop()


def test_background_patterns_match_a_bridge_on_a_terminal(pty_bridge):
    """On a terminal (as in VS Code) the bridge rewrites its status line in
    place; the lines a terminal shows still go idle at 'listening' only."""
    background = load_example(".vscode/tasks.json")["tasks"][0]["problemMatcher"]["background"]
    wait_until(lambda: "listening for the IDE" in pty_bridge.raw(), 15, "the bridge to listen")
    with socket.create_connection(("127.0.0.1", pty_bridge.port), timeout=5) as ide:
        ide.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize", "arguments": {}}))
        # The IDE connected and waits: the bridge now rewrites a 'waiting' line every second.
        wait_until(lambda: pty_bridge.raw().count("waiting for an invocation") >= 2, 15, "waiting lines")
    wait_until(lambda: "disconnected before an invocation came" in pty_bridge.raw(), 15, "the disconnect")
    raw = pty_bridge.raw()
    assert "\x1b[K" in raw  # it really wrote for a terminal
    lines = terminal_lines(raw)
    assert [line for line in lines if line.startswith("IDE connected from 127.0.0.1:")]
    assert [line for line in lines if line == "the IDE disconnected before an invocation came"]
    assert_idle_once_listening(lines, background, pty_bridge.port)
    assert pty_bridge.process.poll() is None


def test_the_replayed_matcher_needs_begin_then_end_on_different_lines():
    """The replay used above is strict enough to catch wrong patterns."""
    ok = {"activeOnStart": False, "beginsPattern": "^bridging to ", "endsPattern": "^listening for the IDE on "}
    lines = ["bridging to ws://b:9229/debug/f", "listening for the IDE on 127.0.0.1:5678; attach"]
    assert watch(lines, ok) == [("busy", 0), ("idle", 1)]
    same_line = dict(ok, beginsPattern="^listening", endsPattern="^listening")
    assert watch(lines, same_line) == [("busy", 1)]  # never idle: VS Code would wait forever
    assert watch(lines[1:], ok) == []  # no begin, no cycle
    assert terminal_lines("\r\x1b[Kwaiting 1\r\x1b[Kwaiting 2\r\x1b[Kattached\r\n") == ["attached"]


# --- --print-vscode-config -------------------------------------------------------------------------------


def test_print_vscode_config_uses_the_given_values_and_connects_nowhere(capsys, monkeypatch):
    monkeypatch.setenv("BROKER_DEBUGGER_TOKEN", "env-token-should-not-appear")
    with socket.create_server(("127.0.0.1", 0)) as fake_broker, socket.create_server(("127.0.0.1", 0)) as taken:
        broker_port, listen_port = fake_broker.getsockname()[1], taken.getsockname()[1]
        # --listen names a port we hold: binding it would fail with exit 2.
        assert (
            main(
                [
                    "attach",
                    "orders",
                    "--broker",
                    "127.0.0.1:%d" % broker_port,
                    "--listen",
                    "127.0.0.1:%d" % listen_port,
                    "--remote-root",
                    "/var/task/src",
                    "--print-vscode-config",
                ]
            )
            == 0
        )
        fake_broker.settimeout(0.5)
        with pytest.raises(socket.timeout):
            fake_broker.accept()  # nobody dialled the broker
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert sorted(printed) == [".vscode/launch.json", ".vscode/tasks.json"]
    (config,) = printed[".vscode/launch.json"]["configurations"]
    assert config["connect"] == {"host": "127.0.0.1", "port": listen_port}
    assert config["pathMappings"] == [{"localRoot": "${workspaceFolder}", "remoteRoot": "/var/task/src"}]
    tasks = printed[".vscode/tasks.json"]
    task = the_task(tasks, config["preLaunchTask"])
    assert task["args"] == [
        "attach",
        "orders",
        "--broker",
        "127.0.0.1:%d" % broker_port,
        "--listen",
        "127.0.0.1:%d" % listen_port,
    ]
    assert "inputs" not in tasks  # the values are written, nothing is asked
    assert task["problemMatcher"] == load_example(".vscode/tasks.json")["tasks"][0]["problemMatcher"]
    assert "env-token-should-not-appear" not in out + err
    assert "BROKER_DEBUGGER_TOKEN" in err


def test_print_vscode_config_passes_files_and_flags_but_never_the_token(tmp_path):
    token_file, ca_file = tmp_path / "token", tmp_path / "ca.pem"
    token_file.write_text(DEBUGGER_TOKEN)
    ca_file.write_text("not checked here")
    env = dict(os.environ, BROKER_DEBUGGER_TOKEN=DEBUGGER_TOKEN)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_debugger",
            "attach",
            "orders",
            "--broker",
            "wss://broker.example.com",
            "--listen",
            "0.0.0.0:7000",
            "--token-file",
            "token",
            "--ca-file",
            "ca.pem",
            "--once",
            "--no-prefetch",
            "--when",
            "user == 'alice'",
            "--print-vscode-config",
        ],
        cwd=str(tmp_path),
        env=dict(env, PYTHONPATH=REPO),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    (config,) = printed[".vscode/launch.json"]["configurations"]
    assert config["connect"] == {"host": "127.0.0.1", "port": 7000}  # wildcard listen: dial loopback
    args = printed[".vscode/tasks.json"]["tasks"][0]["args"]
    assert args == [
        "attach",
        "orders",
        "--broker",
        "wss://broker.example.com",
        "--listen",
        "0.0.0.0:7000",
        "--token-file",
        str(token_file),
        "--ca-file",
        str(ca_file),
        "--once",
        "--no-prefetch",
        "--when",
        "user == 'alice'",
    ]
    assert DEBUGGER_TOKEN not in run.stdout + run.stderr
    with_token = subprocess.run(
        [
            sys.executable,
            "-m",
            "lambda_debugger",
            "attach",
            "orders",
            "--broker",
            "b",
            "--token",
            "s3cret-value",
            "--print-vscode-config",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert with_token.returncode == 0, with_token.stderr
    assert "s3cret-value" not in with_token.stdout + with_token.stderr
    assert "--token is never written" in with_token.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--listen", "127.0.0.1:0"], "needs a fixed --listen port"),
        (["--listen", "nope"], "--listen must be host:port"),
        (["--remote-root", "var/task"], "--remote-root must be an absolute path"),
        (["--broker", "ws://a/b"], "broker address must be"),
        (["--ca-file", "/nonexistent.pem"], "no such file"),
        (["--when", "user =="], "--when: not a valid JMESPath expression"),
        (["--push", "/abs/src"], "--push is a directory inside the workspace folder"),
        (["--push", "../src"], "--push is a directory inside the workspace folder"),
    ],
)
def test_print_vscode_config_rejects_bad_values(capsys, extra, message):
    assert main(["attach", "orders", "--broker", "b"] + extra + ["--print-vscode-config"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


@pytest.mark.parametrize(
    "push, local_root",
    [(".", "${workspaceFolder}"), ("src", "${workspaceFolder}/src"), ("src/", "${workspaceFolder}/src")],
)
def test_print_vscode_config_pushes_the_folder_it_maps(capsys, push, local_root):
    assert main(["attach", "orders", "--broker", "b", "--push", push, "--print-vscode-config"]) == 0
    files = json.loads(capsys.readouterr().out)
    (configuration,) = files[".vscode/launch.json"]["configurations"]
    assert configuration["pathMappings"] == [{"localRoot": local_root, "remoteRoot": "/var/task"}]
    args = files[".vscode/tasks.json"]["tasks"][0]["args"]
    assert args[args.index("--push") + 1] == local_root


def test_attach_refuses_a_push_folder_that_is_not_there(capsys, tmp_path):
    assert main(["attach", "orders", "--broker", "b", "--push", str(tmp_path / "nowhere")]) == 2
    assert "--push %s: not a directory" % (tmp_path / "nowhere") in capsys.readouterr().err


def test_print_vscode_config_checks_the_function_id(capsys):
    assert main(["attach", "bad id", "--broker", "b", "--print-vscode-config"]) == 2
    assert "function ID must match" in capsys.readouterr().err


def test_listen_addresses_become_connect_addresses():
    assert vscode.connect_host("0.0.0.0") == "127.0.0.1"
    assert vscode.connect_host("::") == "::1"
    assert vscode.connect_host("127.0.0.2") == "127.0.0.2"
    assert vscode.format_listen(("::1", 5678)) == "[::1]:5678"
    launch = vscode.launch_config(function_id="orders", listen=("::1", 6000))
    assert launch["configurations"][0]["connect"] == {"host": "::1", "port": 6000}
    tasks = vscode.tasks_config(function_id="orders", broker="b", listen=("::1", 6000))
    assert tasks["tasks"][0]["args"][-2:] == ["--listen", "[::1]:6000"]
    assert tasks["tasks"][0]["label"] == launch["configurations"][0]["preLaunchTask"]
