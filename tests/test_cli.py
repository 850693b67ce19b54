"""The command line: sessions, attach and local, with real processes."""

import json
import os
import subprocess
import sys

import pytest

from lambda_debugger.developer.cli import main
from lambda_debugger.developer.sessions import format_sessions
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, REPO, free_port, stop_process, wait_until
from tests.support.dap_client import DapClient

pytestmark = pytest.mark.timeout(90)


def test_sessions_lists_what_the_broker_holds(broker, make_function, capsys):
    assert main(["sessions", "--broker", "127.0.0.1:%d" % broker.debugger_port, "--token", DEBUGGER_TOKEN]) == 0
    assert capsys.readouterr().out.strip() == "no sessions"
    function = make_function(broker=broker)
    future = function.invoke_async()
    waiting = broker.wait_for_state("waiting")
    assert main(["sessions", "--broker", "127.0.0.1:%d" % broker.debugger_port, "--token", DEBUGGER_TOKEN]) == 0
    table = capsys.readouterr().out
    assert "FUNCTION ID" in table and "waiting" in table and waiting[0]["request_id"] in table
    assert (
        main(["sessions", "--json", "--broker", "127.0.0.1:%d" % broker.debugger_port, "--token", DEBUGGER_TOKEN]) == 0
    )
    assert json.loads(capsys.readouterr().out)[0]["state"] == "waiting"
    function.local.close()  # the invocation gives up; nothing is left waiting
    with pytest.raises(RuntimeError):
        future.result(timeout=10)


def test_the_sessions_table_shows_state_time_left_debuggers_and_filters():
    now = 1_800_000_000.0
    table = format_sessions(
        [
            {
                "function_id": "orders",
                "state": "detached",
                "request_id": "req-1",
                "function_name": "orders-fn",
                "since": now - 12,
                "deadline_ms": int((now + 95.4) * 1000),
                "attachments": 1,
            },
            {
                "function_id": "orders",
                "state": "armed",
                "request_id": None,
                "function_name": None,
                "since": now - 3,
                "deadline_ms": None,
                "attachments": 0,
                "when": "user == 'alice'",
            },
        ],
        now=now,
    )
    assert table.splitlines() == [
        "FUNCTION ID  STATE     REQUEST ID  FUNCTION   AGE   TIME LEFT  DEBUGGERS  WHEN",
        "orders       detached  req-1       orders-fn  12 s  95 s       1          -",
        "orders       armed     -           -          3 s   -          0          user == 'alice'",
    ]


@pytest.mark.parametrize(
    "token, message",
    [
        (LAMBDA_TOKEN, "refused the debugger token (HTTP 401)"),
        (None, "refused the debugger token (HTTP 401)"),
    ],
)
def test_sessions_needs_the_debugger_token(broker, capsys, monkeypatch, token, message):
    monkeypatch.delenv("BROKER_DEBUGGER_TOKEN", raising=False)
    argv = ["sessions", "--broker", "127.0.0.1:%d" % broker.debugger_port] + (["--token", token] if token else [])
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and LAMBDA_TOKEN not in err


def test_sessions_reports_an_unreachable_broker(capsys):
    assert main(["sessions", "--broker", "127.0.0.1:%d" % free_port(), "--token", "t"]) == 1
    assert "cannot reach the broker" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attach", "bad id", "--broker", "b"], "function ID must match"),
        (["attach", "fn", "--broker", "b:notaport"], "broker port must be a number"),
        (["attach", "fn", "--broker", "b", "--listen", "127.0.0.1:x"], "--listen must be host:port"),
        (["local", "nodot", "--wait-max", "0"], "HANDLER must look like path/module.function"),
        (["local", "examples/missing.handler"], "no module for 'examples/missing.handler'"),
        (["local", "examples/hello.handler", "--event", "/nonexistent.json"], "cannot read the event file"),
        (["local", "examples/hello.handler", "--event", "setup.cfg"], "is not JSON"),
    ],
)
def test_bad_arguments_get_a_clear_error(capsys, monkeypatch, argv, message):
    monkeypatch.chdir(REPO)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def run_local(*args, **kwargs):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lambda_debugger",
            "local",
            "examples/hello.handler",
            "--event",
            "examples/event.json",
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def test_local_mode_stops_at_a_breakpoint_and_prints_the_response():
    port = free_port()
    process = run_local("--listen", "127.0.0.1:%d" % port, "--wait-max", "30000")
    try:
        client = DapClient.connect("127.0.0.1", port, timeout=15)
        path = os.path.join(REPO, "examples", "hello.py")
        line = next(i for i, text in enumerate(open(path), 1) if "a good first breakpoint" in text)
        client.attach_and_configure({path: [line]}, timeout=30)
        stopped = client.wait_stopped(timeout=30)
        frame = client.stack_trace(stopped["threadId"])[0]
        assert (frame["source"]["path"], frame["line"]) == (path, line)
        assert client.evaluate("name", frame["id"]) == "'Lambda'"
        client.continue_(stopped["threadId"])
        out, err = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == 0, err
    response = json.loads(out)
    assert json.loads(response["body"])["message"] == "Hello, Lambda!"
    assert "attached to local: request " in err and "response: " in err


def test_local_mode_without_a_debugger_runs_normally():
    process = run_local("--listen", "127.0.0.1:%d" % free_port(), "--wait-max", "0")
    try:
        out, err = process.communicate(timeout=30)
    finally:
        stop_process(process)
    assert process.returncode == 0, err
    assert json.loads(json.loads(out)["body"])["message"] == "Hello, Lambda!"
    assert "control connection to the broker open; no debugger armed" in err


def test_attach_warns_of_a_missing_token_and_a_listen_address_beyond_loopback(tmp_path):
    log_path = tmp_path / "bridge.log"
    env = {k: v for k, v in os.environ.items() if k != "BROKER_DEBUGGER_TOKEN"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lambda_debugger",
                "attach",
                "fn",
                "--broker",
                "127.0.0.1:%d" % free_port(),
                "--listen",
                "0.0.0.0:%d" % free_port(),
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        output = wait_until(
            lambda: "listening for the IDE" in log_path.read_text() and log_path.read_text(), 15, "the bridge to listen"
        )
    finally:
        stop_process(process)
    assert "warning: no debugger token (BROKER_DEBUGGER_TOKEN, --token or --token-file)" in output
    assert "warning: listening on 0.0.0.0, beyond this machine" in output
