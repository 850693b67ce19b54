"""Tests of the scripted DAP client: framing alone, then against real debugpy.

The debuggee runs in a subprocess under ``debugpy.listen`` both with the
in-process adapter (pydevd speaks DAP itself) and with debugpy's separate
adapter process, which daemonizes. Every process is tagged through its
environment so teardown can find and kill it by PID, the adapter included.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.support.dap_client import (
    DapClient,
    DapConnectionClosed,
    DapError,
    FrameError,
    FrameParser,
    encode_message,
)

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

MODES = ["in_process", "adapter"]
TAG_VAR = "LAMBDA_DEBUGGER_TEST_TAG"

DEBUGGEE = """\
import os
import sys
import time

import debugpy


def compute(x):
    y = x * 2
    total = x + y  # BREAK
    return total


def main():
    mode, port_file, gate = sys.argv[1:4]
    _, port = debugpy.listen(("127.0.0.1", 0), in_process_debug_adapter=(mode == "in_process"))
    with open(port_file + ".tmp", "w") as f:
        f.write(str(port))
    os.replace(port_file + ".tmp", port_file)
    debugpy.wait_for_client()
    print("result", compute(21), flush=True)
    if gate != "-":
        while not os.path.exists(gate):
            time.sleep(0.02)
        print("result", compute(2), flush=True)
    print("done", flush=True)


main()
"""
BREAK_LINE = DEBUGGEE.splitlines().index("    total = x + y  # BREAK") + 1


# -- framing, no sockets -------------------------------------------------------


def frame(message):
    return encode_message(message)


def test_parser_reassembles_frames_split_at_every_byte():
    data = frame({"seq": 1, "type": "event", "event": "x", "body": {"text": "é" * 10}})
    parser = FrameParser()
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    assert out == [{"seq": 1, "type": "event", "event": "x", "body": {"text": "é" * 10}}]


def test_parser_decodes_several_frames_in_one_chunk_and_keeps_the_rest():
    a, b, c = (frame({"seq": n, "type": "event", "event": "e"}) for n in (1, 2, 3))
    parser = FrameParser()
    assert [m["seq"] for m in parser.feed(a + b + c[:7])] == [1, 2]
    assert [m["seq"] for m in parser.feed(c[7:])] == [3]


def test_parser_accepts_other_headers_and_any_case():
    body = b'{"seq":1}'
    data = b"content-length: %d\r\nContent-Type: application/json\r\n\r\n" % len(body) + body
    assert FrameParser().feed(data) == [{"seq": 1}]


@pytest.mark.parametrize(
    "data, match",
    [
        (b"Content-Length 5\r\n\r\n{}", "malformed header line"),
        (b"Content-Length: abc\r\n\r\n{}", "bad Content-Length"),
        (b"Content-Length: -2\r\n\r\n{}", "bad Content-Length"),
        (b"Content-Type: x\r\n\r\n{}", "without Content-Length"),
        (b"Content-Length: 3\r\n\r\n{x}", "not valid JSON"),
        (b"Content-Length: 2\r\n\r\n[]", "not a JSON object"),
        (b"X" * 9000, "no end of header"),
    ],
)
def test_parser_rejects_malformed_input(data, match):
    with pytest.raises(FrameError, match=match):
        FrameParser().feed(data)


# -- the client over a socketpair ---------------------------------------------------


def test_client_keeps_early_events_and_raises_on_failed_response():
    ours, theirs = socket.socketpair()
    with DapClient(ours) as client:
        theirs.sendall(
            frame({"seq": 1, "type": "event", "event": "output", "body": {"category": "stdout", "output": "hi\n"}})
        )
        seq = client.send_request("evaluate", {"expression": "1/0"})
        parser = FrameParser()
        request = []
        while not request:
            request = parser.feed(theirs.recv(4096))
        assert request[0] == {"seq": seq, "type": "request", "command": "evaluate", "arguments": {"expression": "1/0"}}
        theirs.sendall(
            frame(
                {
                    "seq": 2,
                    "type": "response",
                    "request_seq": seq,
                    "success": False,
                    "command": "evaluate",
                    "message": "ZeroDivisionError",
                }
            )
        )
        with pytest.raises(DapError, match="evaluate: ZeroDivisionError"):
            client.wait_response(seq, timeout=5)
        assert client.wait_event("output", timeout=5)["body"]["output"] == "hi\n"
        assert client.output() == "hi\n"
        with pytest.raises(TimeoutError):
            client.wait_event("output", timeout=0.1)  # each event is returned once
    theirs.close()


def test_client_reports_malformed_frame_to_waiters():
    ours, theirs = socket.socketpair()
    with DapClient(ours) as client:
        theirs.sendall(b"Content-Lenght 12\r\n\r\n")
        with pytest.raises(DapConnectionClosed, match="malformed header") as info:
            client.wait_event("stopped", timeout=5)
        assert isinstance(info.value.__cause__, FrameError)
    theirs.close()


# -- real debugpy ---------------------------------------------------------------------


def _tagged_pids(tag):
    """PIDs of live processes whose environment carries ``tag``."""
    needle = f"{TAG_VAR}={tag}\0".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read():
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


class Debuggee:
    """The debuggee script in a subprocess, with its output collected."""

    def __init__(self, tmp_path, mode, gate=False):
        self.tag = uuid.uuid4().hex
        self.script = tmp_path / f"debuggee_{mode}.py"
        self.script.write_text(DEBUGGEE)
        self.port_file = tmp_path / f"port_{self.tag}"
        self.gate = tmp_path / f"gate_{self.tag}"
        env = dict(os.environ, PYDEVD_DISABLE_FILE_VALIDATION="1", PYTHONUNBUFFERED="1")
        env[TAG_VAR] = self.tag
        self.proc = subprocess.Popen(
            [sys.executable, str(self.script), mode, str(self.port_file), str(self.gate) if gate else "-"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.stdout, self.stderr = [], []
        self._readers = [
            threading.Thread(target=self._collect, args=(s, out), daemon=True)
            for s, out in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream, lines):
        for line in stream:
            lines.append(line)

    def port(self, timeout=20):
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            assert self.proc.poll() is None, f"debuggee exited early: {''.join(self.stderr)}"
            assert time.monotonic() < deadline, "debuggee never reported its port"
            time.sleep(0.02)
        return int(self.port_file.read_text())

    def wait_line(self, text, timeout=10):
        deadline = time.monotonic() + timeout
        while text + "\n" not in self.stdout:
            assert time.monotonic() < deadline, f"no line {text!r} in {self.stdout}"
            time.sleep(0.02)

    def wait_exit(self, timeout=15):
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(5)
        return code

    def kill(self):
        """Kill the debuggee and every process tagged like it (the adapter), by PID."""
        for pid in [self.proc.pid] + _tagged_pids(self.tag):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def start_debuggee(tmp_path):
    started = []

    def start(mode, gate=False):
        started.append(Debuggee(tmp_path, mode, gate))
        return started[-1]

    yield start
    for debuggee in started:
        debuggee.kill()


def _frame_at_breakpoint(client):
    stopped = client.wait_stopped(timeout=15)
    assert stopped["reason"] == "breakpoint"
    frames = client.stack_trace(stopped["threadId"])
    return stopped["threadId"], frames[0]


@pytest.mark.parametrize("mode", MODES)
def test_breakpoint_variables_evaluate_continue(start_debuggee, mode):
    debuggee = start_debuggee(mode)
    path = str(debuggee.script)
    with DapClient.connect("127.0.0.1", debuggee.port()) as client:
        bps = client.attach_and_configure({path: [BREAK_LINE]})
        assert [(bp["verified"], bp["line"]) for bp in bps[path]] == [(True, BREAK_LINE)]

        thread_id, top = _frame_at_breakpoint(client)
        assert (top["name"], top["line"], top["source"]["path"]) == ("compute", BREAK_LINE, path)
        scopes = {scope["name"]: scope for scope in client.scopes(top["id"])}
        local_vars = client.variables(scopes["Locals"]["variablesReference"])
        assert (local_vars["x"]["value"], local_vars["y"]["value"]) == ("21", "42")
        assert local_vars["x"]["type"] == "int"
        assert client.evaluate("x * 100 + y", top["id"]) == "2142"
        with pytest.raises(DapError):
            client.evaluate("undefined_name", top["id"])

        client.continue_(thread_id)
        client.wait_event("terminated", timeout=15)
        client.disconnect()
    assert debuggee.wait_exit() == 0
    assert "".join(debuggee.stdout) == "result 63\ndone\n"
    assert "Debugger warning" not in "".join(debuggee.stderr)  # silenced by PYDEVD_DISABLE_FILE_VALIDATION


@pytest.mark.parametrize("mode", MODES)
def test_disconnect_resumes_debuggee_and_a_second_client_can_attach(start_debuggee, mode):
    debuggee = start_debuggee(mode, gate=True)
    path = str(debuggee.script)
    port = debuggee.port()
    with DapClient.connect("127.0.0.1", port) as first:
        first.attach_and_configure({path: [BREAK_LINE]})
        _frame_at_breakpoint(first)
        first.disconnect()
    debuggee.wait_line("result 63")  # ran on without a debugger

    with DapClient.connect("127.0.0.1", port) as second:
        second.attach_and_configure({path: [BREAK_LINE]}, attach_args={"redirectOutput": True})
        debuggee.gate.touch()
        thread_id, top = _frame_at_breakpoint(second)
        assert second.evaluate("x", top["id"]) == "2"
        second.continue_(thread_id)
        second.wait_event("terminated", timeout=15)
        assert "result 6\n" in second.output("stdout")
        second.disconnect()
    assert debuggee.wait_exit() == 0
    assert "".join(debuggee.stdout) == "result 63\nresult 6\ndone\n"


def test_in_process_abrupt_close_leaves_thread_suspended(start_debuggee):
    """Characterises pydevd: closing without ``disconnect`` does not resume.

    A relay that loses the IDE must send ``disconnect`` itself, or the
    handler stays suspended; a new client sees the stopped thread through
    ``threads``/``stackTrace`` but gets no new ``stopped`` event.
    """
    debuggee = start_debuggee("in_process")
    path = str(debuggee.script)
    port = debuggee.port()
    with DapClient.connect("127.0.0.1", port) as first:
        first.attach_and_configure({path: [BREAK_LINE]})
        _frame_at_breakpoint(first)
    time.sleep(0.5)
    assert debuggee.proc.poll() is None and debuggee.stdout == []

    with DapClient.connect("127.0.0.1", port) as second:
        second.attach_and_configure({path: [BREAK_LINE]})
        thread_id = second.threads()[0]["id"]
        assert second.stack_trace(thread_id)[0]["line"] == BREAK_LINE
        assert not [e for e in second.events if e["event"] == "stopped"]
        second.continue_(thread_id)
        second.disconnect()
    assert debuggee.wait_exit() == 0
    assert "".join(debuggee.stdout) == "result 63\ndone\n"


def test_adapter_process_exits_after_session(start_debuggee):
    debuggee = start_debuggee("adapter")
    path = str(debuggee.script)
    with DapClient.connect("127.0.0.1", debuggee.port()) as client:
        assert len(_tagged_pids(debuggee.tag)) >= 2  # debuggee and daemonized adapter
        client.attach_and_configure({path: []})
        client.wait_event("terminated", timeout=15)
        client.disconnect()
    assert debuggee.wait_exit() == 0
    deadline = time.monotonic() + 10
    while _tagged_pids(debuggee.tag):
        assert time.monotonic() < deadline, "debugpy adapter outlived its session"
        time.sleep(0.05)
