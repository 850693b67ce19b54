"""The whole chain with real processes: awslambdaric + embedded Runtime API,
the broker, the attach bridge and a scripted DAP client."""

import json
import os
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.chain import LAMBDA_TOKEN, REPO, break_line, free_port, wait_until
from tests.support.dap_client import DapConnectionClosed, DapError, encode_message

pytestmark = [pytest.mark.timeout(90), pytest.mark.chain]

#: A function PYTHONPATH whose resolver hangs for *.slow-dns.test names.
SLOW_DNS_PATH = os.pathsep.join((os.path.join(REPO, "tests", "support", "slow_dns"), REPO))

#: Function PYTHONPATHs where a debugpy 1.8.6 comes first: with its dist-info,
#: and copied in without it.
OLD_DEBUGPY_PATH = os.pathsep.join((os.path.join(REPO, "tests", "support", "old_debugpy"), REPO))
UNVERSIONED_DEBUGPY_PATH = os.pathsep.join((os.path.join(REPO, "tests", "support", "unversioned_debugpy"), REPO))


def debug_to_breakpoint(bridge, function, timeout=30, **attach):
    """Attach through the bridge and wait until stopped at the ``# BREAK`` line."""
    client = bridge.connect()
    line = break_line(function.path)
    breakpoints = client.attach_and_configure({function.path: [line]}, timeout=timeout, **attach)
    assert breakpoints[function.path][0]["verified"]
    stopped = client.wait_stopped(timeout=timeout)
    return client, stopped, line


def test_breakpoint_inspect_and_continue_debugger_first(broker, start_bridge, make_function):
    baseline = make_function(folder="plain")
    expected = baseline.invoke()
    assert expected.ok
    bridge = start_bridge()
    function = make_function(broker=broker)
    client = bridge.connect()
    line = break_line(function.path)
    with ThreadPoolExecutor(1) as pool:
        attached = pool.submit(client.attach_and_configure, {function.path: [line]}, timeout=30)
        broker.wait_for_state("armed")
        result_future = function.invoke_async()
        attached.result(timeout=30)
    stopped = client.wait_stopped(timeout=30)
    assert stopped["reason"] == "breakpoint"
    frame = client.stack_trace(stopped["threadId"])[0]
    assert (frame["source"]["path"], frame["line"]) == (function.path, line)
    local_vars = client.variables(client.scopes(frame["id"])[0]["variablesReference"])
    assert local_vars["event"]["type"] == "dict" and "'items'" in local_vars["event"]["value"]
    assert client.evaluate("event['items'][1]", frame["id"]) == "{'price': 2}"
    assert client.evaluate("sum(i['price'] for i in event['items']) * 7", frame["id"]) == "42"
    request_id = client.evaluate("context.aws_request_id", frame["id"]).strip("'")
    client.continue_(stopped["threadId"])
    result = result_future.result(timeout=30)
    assert result.ok
    assert result.request_id == request_id
    assert result.payload == expected.payload  # byte-identical to a run without the debugger
    logs = function.logs()
    assert "stdout line from " + request_id in logs
    assert "stderr line" in logs
    assert "[INFO]\t" in logs and "\t%s\tlogged total 6" % request_id in logs
    bridge_out = wait_until(lambda: "session ended" in bridge.output() and bridge.output(), 10, "bridge end")
    assert "attached to orders: request " + request_id in bridge_out
    assert "session ended: the handler returned" in bridge_out


def test_invocation_first_then_debugger(broker, start_bridge, make_function):
    function = make_function(broker=broker)
    result_future = function.invoke_async()
    waiting = broker.wait_for_state("waiting")
    assert waiting[0]["function_id"] == "orders" and waiting[0]["function_name"] == "local-function"
    bridge = start_bridge()
    client, stopped, line = debug_to_breakpoint(bridge, function, attach_args={"redirectOutput": True})
    assert client.stack_trace(stopped["threadId"])[0]["line"] == line
    client.continue_(stopped["threadId"])
    result = result_future.result(timeout=30)
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert result.request_id == waiting[0]["request_id"]
    # The handler's last output still reached the IDE before the child exited.
    wait_until(lambda: "stdout line from " + result.request_id in client.output(), 5, "the output event")


def test_custom_exception_keeps_type_message_and_frames(broker, start_bridge, make_function):
    event = {"order": "A-17"}
    expected = make_function("app.fail", folder="plain").invoke(event)
    bridge = start_bridge()
    function = make_function("app.fail", broker=broker)
    result_future = function.invoke_async(event)
    client = bridge.connect()
    client.attach_and_configure({}, timeout=30)
    result = result_future.result(timeout=30)
    assert not result.ok
    error, plain = json.loads(result.payload), json.loads(expected.payload)
    assert error["errorType"] == "OrderError"
    assert error["errorMessage"] == "order A-17 is invalid"
    # The same frames as without the debugger, paths aside (two task roots).
    frames = [line.replace(function.task_root, "ROOT") for line in error["stackTrace"]]
    plain_frames = [line.replace(expected_root(expected, plain), "ROOT") for line in plain["stackTrace"]]
    assert frames == plain_frames
    assert [f for f in frames if "in check" in f and "raise OrderError" in f]
    assert not [f for f in frames if "lambda_debugger" in f]


def expected_root(expected, plain):
    """The task root that appears in a baseline stack trace."""
    first = plain["stackTrace"][0]
    return first.split('"')[1].rsplit("/", 1)[0]


def test_child_that_dies_ends_the_invocation_promptly(broker, start_bridge, make_function):
    bridge = start_bridge()
    function = make_function("app.crash", broker=broker)
    result_future = function.invoke_async({"status": 3})
    client = bridge.connect()
    try:
        client.attach_and_configure({}, timeout=30)
    except (DapConnectionClosed, DapError) as exc:
        # The child may die before its last responses leave; the bridge then
        # answers what is pending with why the session ended.
        assert isinstance(exc, DapConnectionClosed) or "exit status 3" in str(exc)
    configured = time.monotonic()
    result = result_future.result(timeout=30)
    assert time.monotonic() - configured < 2.0
    error = json.loads(result.payload)
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"] == "RequestId: %s Error: Runtime exited with error: exit status 3" % result.request_id
    assert error["stackTrace"] == []
    assert "session ended: the handler's process ended (exit status 3)" in wait_until(
        lambda: "session ended" in bridge.output() and bridge.output(), 10, "bridge end"
    )
    # The Lambda process itself survives and serves the next invocation.
    assert function.local.cold_starts == 1


def test_context_and_trace_id_in_the_child_match_the_runtime(broker, start_bridge, make_function):
    options = dict(
        trace_id="Root=1-5f84c7a1-0123456789abcdef01234567;Parent=0123456789abcdef;Sampled=1",
        client_context={"custom": {"k": "v"}},
        cognito_identity={"cognitoIdentityId": "id-1", "cognitoIdentityPoolId": "pool-1"},
    )
    plain = json.loads(make_function("app.describe", folder="plain").invoke({}, **options).payload)
    bridge = start_bridge()
    function = make_function("app.describe", broker=broker)
    result_future = function.invoke_async({}, **options)
    bridge.connect().attach_and_configure({}, timeout=30)
    result = result_future.result(timeout=30)
    debugged = json.loads(result.payload)
    assert debugged["pid"] != function.local.pid  # it really ran in the child
    assert debugged["aws_request_id"] == result.request_id
    assert debugged["memory_type"] == "str" and debugged["memory_limit_in_mb"] == "128"
    assert debugged["trace_id"] == options["trace_id"]
    expected_remaining = debugged["deadline_ms"] - time.time() * 1000
    assert 0 < debugged["remaining_ms"] and debugged["remaining_ms"] >= expected_remaining
    for key in (
        "function_name",
        "function_version",
        "invoked_function_arn",
        "memory_limit_in_mb",
        "log_group_name",
        "tenant_id",
        "cognito_identity_id",
        "custom",
        "trace_id",
    ):
        assert debugged[key] == plain[key], key
    assert "[$LATEST]" in debugged["log_stream_name"]  # each environment has its own stream


def test_two_containers_with_one_function_id_are_two_sessions(broker, start_bridge, make_function):
    # Same code (one task root), two execution environments.
    first, second = (make_function(broker=broker, folder="shared") for _ in range(2))
    futures = [first.invoke_async(), second.invoke_async()]
    broker.wait_for_state("waiting", count=2)
    sessions = []
    for _ in range(2):
        bridge = start_bridge()
        client, stopped, _ = debug_to_breakpoint(bridge, first)
        frame_id = client.stack_trace(stopped["threadId"])[0]["id"]
        sessions.append((client, stopped, client.evaluate("context.aws_request_id", frame_id).strip("'")))
    assert sessions[0][2] != sessions[1][2]
    for client, stopped, _ in sessions:
        client.continue_(stopped["threadId"])
    results = [f.result(timeout=30) for f in futures]
    assert sorted(r.request_id for r in results) == sorted(s[2] for s in sessions)
    assert all(r.ok for r in results)
    assert first.local.pid != second.local.pid


def test_ide_that_vanishes_at_a_breakpoint_does_not_hang_the_handler(broker, start_bridge, make_function):
    bridge = start_bridge()
    function = make_function(broker=broker)
    result_future = function.invoke_async()
    client, stopped, _ = debug_to_breakpoint(bridge, function)
    # No DAP disconnect: the IDE just went away (as when its process dies).
    client.sock.shutdown(socket.SHUT_RDWR)
    client.sock.close()
    result = result_future.result(timeout=10)
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert "the handler was resumed" in function.logs()


def test_a_new_debugger_attaches_to_the_running_invocation_after_the_first_vanished(
    broker, start_bridge, make_function
):
    bridge = start_bridge(once=False)
    function = make_function("app.loop", broker=broker)
    result_future = function.invoke_async({"rounds": 100})  # about 5 s of work
    line = break_line(function.path, "# LOOP")

    first = bridge.connect()
    first.attach_and_configure({function.path: [line]}, timeout=30)
    stopped = first.wait_stopped(timeout=30)
    frame = first.stack_trace(stopped["threadId"])[0]
    assert first.evaluate("i", frame["id"]) == "0"
    request_id = first.evaluate("context.aws_request_id", frame["id"]).strip("'")
    first.sock.shutdown(socket.SHUT_RDWR)  # the IDE dies, no DAP disconnect
    first.sock.close()
    wait_until(lambda: "another debugger may attach" in function.logs(), 10, "the proxy to detach")

    second = bridge.connect()
    second.attach_and_configure({function.path: [line]}, timeout=30)
    stopped = second.wait_stopped(timeout=30)
    frame = second.stack_trace(stopped["threadId"])[0]
    assert (frame["source"]["path"], frame["line"]) == (function.path, line)
    assert int(second.evaluate("i", frame["id"])) > 0  # the handler ran on meanwhile
    assert second.evaluate("context.aws_request_id", frame["id"]).strip("'") == request_id
    assert second.evaluate("done[-1] + 1", frame["id"]) == second.evaluate("i", frame["id"])
    second.disconnect()  # the way an IDE leaves: breakpoints removed, handler resumed

    result = result_future.result(timeout=30)
    assert result.ok and json.loads(result.payload) == {"rounds": 100}
    assert result.request_id == request_id
    logs = function.logs()
    assert logs.count("loop finished in " + request_id) == 1
    assert "debugger 2 attached" in logs
    output = bridge.output()
    assert output.count("attached to orders: request " + request_id) == 2
    assert "a debugger left this invocation earlier" in output
    assert broker.sessions() == []


def test_a_port_probe_does_not_consume_the_waiting_invocation(broker, start_bridge, make_function):
    function = make_function(broker=broker)
    result_future = function.invoke_async()
    waiting = broker.wait_for_state("waiting")
    bridge = start_bridge()
    bridge.raw_connect().close()  # connect and close, as a port check does
    wait_until(lambda: "closed before sending a DAP message" in bridge.output(), 10, "the bridge to drop the probe")
    assert broker.sessions()[0]["state"] == "waiting"
    client, stopped, _ = debug_to_breakpoint(bridge, function)
    frame_id = client.stack_trace(stopped["threadId"])[0]["id"]
    assert client.evaluate("context.aws_request_id", frame_id).strip("'") == waiting[0]["request_id"]
    client.continue_(stopped["threadId"])
    assert result_future.result(timeout=30).request_id == waiting[0]["request_id"]
    assert "the debugger left before the handler started" not in function.logs()


def test_lambda_token_cannot_attach_a_debugger(broker, start_bridge):
    bridge = start_bridge(token=LAMBDA_TOKEN)
    client = bridge.connect()
    client.send_request("initialize", {"adapterID": "debugpy"})
    assert bridge.process.wait(15) == 1
    output = bridge.output()
    assert "unauthorized (4001)" in output and "debugger token missing or wrong" in output
    assert LAMBDA_TOKEN not in output


# Fallbacks: the invocation runs normally and the added time is bounded -------


@pytest.mark.parametrize(
    "env, log_line, max_added_s",
    [
        ({"DEBUGGER_WAIT_MAX": "500"}, "no debugger attached in time; running normally", 1.5),
        ({"DEBUGGER_AUTH_TOKEN": "wrong-token"}, "unauthorized (4001): lambda token missing or wrong", 1.0),
        ({"DEBUGGER_BROKER_ADDRESS": "127.0.0.1:%d" % free_port()}, "broker unreachable", 1.0),
        (
            {"DEBUGGER_BROKER_ADDRESS": "broker.slow-dns.test:8080", "PYTHONPATH": SLOW_DNS_PATH},
            "DNS lookup of broker.slow-dns.test took longer than 1.0 s); running normally",
            1.5,
        ),
        ({"DEBUGGER_FUNCTION_ID": "not valid!"}, "DEBUGGER_FUNCTION_ID must match", 0.5),
        ({"DEBUGGER_WAIT_MAX": "soon"}, "DEBUGGER_WAIT_MAX must be a whole number", 0.5),
        ({"DEBUGGER_BROKER_ADDRESS": ""}, "DEBUGGER_BROKER_ADDRESS is not set", 0.5),
    ],
)
def test_fallbacks_return_the_normal_result(broker, make_function, env, log_line, max_added_s):
    plain = make_function(folder="plain")
    plain.invoke()  # warm, so that both timings exclude the cold start
    expected = plain.invoke()
    function = make_function(broker=broker, env=env)
    function.invoke()
    result = function.invoke()
    assert result.ok and result.payload == expected.payload
    assert result.duration_ms - expected.duration_ms < max_added_s * 1000
    assert log_line in function.logs()
    assert LAMBDA_TOKEN not in function.logs()


def test_an_unsupported_debugpy_is_named_once_and_the_function_runs_normally(broker, make_function):
    expected = make_function(folder="plain").invoke()
    function = make_function(broker=broker, env={"PYTHONPATH": OLD_DEBUGPY_PATH})
    results = [function.invoke() for _ in range(2)]
    assert all(r.ok and r.payload == expected.payload for r in results)
    logs = function.logs()
    line = (
        "debugpy 1.8.6 cannot serve; lambda-debugger needs debugpy>=1.8.1,!=1.8.6,<2; every invocation runs"
        " normally, without the debugger"
    )
    assert logs.count(line) == 1
    assert "waiting up to" not in logs  # it never dialled the broker
    assert broker.sessions() == []


def test_an_unsupported_debugpy_found_only_on_import_is_told_to_the_ide(broker, start_bridge, make_function):
    function = make_function(broker=broker, env={"PYTHONPATH": UNVERSIONED_DEBUGPY_PATH})
    future = function.invoke_async()
    client = start_bridge().connect()
    seq = client.send_request("initialize", {"adapterID": "debugpy"})
    with pytest.raises(
        DapError,
        match=r"debugpy 1.8.6 cannot serve; lambda-debugger needs debugpy>=1.8.1,!=1.8.6,<2;"
        " the invocation runs without the debugger",
    ):
        client.wait_response(seq, timeout=30)
    assert future.result(timeout=30).ok
    assert "debugpy 1.8.6 cannot serve" in function.logs()


def test_debugger_leaving_before_the_handler_starts_means_a_normal_run(broker, start_bridge, make_function):
    bridge = start_bridge()
    function = make_function(broker=broker)
    result_future = function.invoke_async()
    client = bridge.connect()
    client.request("initialize", {"adapterID": "debugpy", "clientID": "tests"}, timeout=30)
    left = time.monotonic()
    client.sock.shutdown(socket.SHUT_RDWR)  # gone before attach/configurationDone
    client.sock.close()
    result = result_future.result(timeout=30)
    assert time.monotonic() - left < 3.0
    assert result.ok and json.loads(result.payload)["total"] == 6
    logs = function.logs()
    assert "the debugger left before the handler started; running normally" in logs
    assert "stdout line from " + result.request_id in logs  # it ran, once
    assert logs.count("stdout line from ") == 1


ISOLATION_HANDLER = """\
import os
import socket

ADDRESS = ("127.0.0.1", int(os.environ["LINE_SERVER_PORT"]))
connection = socket.create_connection(ADDRESS)  # made at init, like a pooled client


def send_line(text):
    connection.sendall(text.encode() + b"\\n")
    reply = connection.recv(100)
    if not reply:
        raise ConnectionError("closed")
    return reply.decode().strip()


def handler(event, context):
    global connection
    try:
        return send_line(event["text"])
    except OSError:
        connection = socket.create_connection(ADDRESS)  # what a pooled client does
        return "reconnected " + send_line(event["text"])


import lambda_debugger
"""


class LineServer:
    """Answers each line with the number of the connection that sent it."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lines = {}
        import threading

        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            number = len(self.lines)
            self.lines[number] = []
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn, number):
        with conn:
            for line in conn.makefile("rb"):
                self.lines[number].append(line.decode().strip())
                conn.sendall(b"%d\n" % number)

    def close(self):
        self.listener.close()


def test_the_child_never_shares_the_functions_connections(broker, start_bridge, make_function):
    server = LineServer()
    try:
        # DEBUGGER_WAIT_MAX=0: an invocation pairs only with a debugger already armed.
        function = make_function(
            broker=broker,
            source=ISOLATION_HANDLER,
            env={"LINE_SERVER_PORT": str(server.port), "DEBUGGER_WAIT_MAX": "0"},
        )
        client = start_bridge().connect()
        with ThreadPoolExecutor(1) as pool:
            attached = pool.submit(client.attach_and_configure, {}, timeout=30)
            broker.wait_for_state("armed")
            debugged = json.loads(function.invoke({"text": "debugged"}).payload)
            attached.result(timeout=30)
        plain = json.loads(function.invoke({"text": "plain"}).payload)
    finally:
        server.close()
    # The child found its inherited connection unusable and opened its own;
    # the warm process's connection carried only the process's own line.
    assert debugged == "reconnected 1"
    assert plain == "0"
    assert server.lines == {0: ["plain"], 1: ["debugged"]}


def attach_without_breakpoints(bridge, function, handler_event=None):
    future = function.invoke_async(handler_event)
    bridge.connect().attach_and_configure({}, timeout=30)
    return future.result(timeout=30)


def test_the_handler_may_start_processes_under_the_debugger(broker, start_bridge, make_function):
    result = attach_without_breakpoints(start_bridge(), make_function("app.spawn", broker=broker))
    assert result.ok, result.payload
    assert json.loads(result.payload) == {"from_process": 45}


def test_values_pickle_cannot_carry_are_returned_byte_identical(broker, start_bridge, make_function):
    expected = make_function("app.odd_value", folder="plain").invoke()
    result = attach_without_breakpoints(start_bridge(), make_function("app.odd_value", broker=broker))
    assert result.ok and result.payload == expected.payload == b'{"name": "Ada Lovelace"}'


def test_a_peer_that_never_finishes_attaching_costs_at_most_the_handlers_share(broker, start_bridge, make_function):
    # 6 s function: the handler keeps 1 s whatever happens, so the attach
    # must give up by 5 s even though a debugger paired.
    function = make_function(broker=broker, timeout_s=6, env={"DEBUGGER_WAIT_MAX": "1000"})
    bridge = start_bridge()
    stray = bridge.connect()
    stray.send_request("initialize", {"adapterID": "debugpy"})  # and never finishes attaching
    try:
        broker.wait_for_state("armed")
        started = time.monotonic()
        result = function.invoke()
        elapsed = time.monotonic() - started
    finally:
        stray.close()
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert 4.0 < elapsed < 5.9
    assert "the debugger did not finish attaching in time; running normally" in function.logs()


def test_the_bridge_survives_an_ide_that_resets_while_waiting(broker, start_bridge):
    bridge = start_bridge()
    ide = bridge.raw_connect()
    ide.sendall(encode_message({"seq": 1, "type": "request", "command": "initialize", "arguments": {}}))
    broker.wait_for_state("armed")
    ide.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ide.close()  # a reset, not a clean close
    wait_until(lambda: "disconnected" in bridge.output() or "session ended" in bridge.output(), 10, "the bridge")
    assert bridge.process.poll() is None  # still serving
    second = bridge.connect()  # and a new IDE connection is taken
    second.send_request("initialize", {"adapterID": "debugpy"})
    broker.wait_for_state("armed")
    assert "Traceback" not in bridge.output()


def test_pings_do_not_stretch_the_wait_for_a_debugger(tmp_path, make_function):
    from tests.support.chain import BrokerProcess

    chatty = BrokerProcess(str(tmp_path / "chatty.log"), "--ping-interval", "0.3")
    try:
        function = make_function(broker=chatty, env={"DEBUGGER_WAIT_MAX": "2000"})
        function.invoke()
        result = function.invoke()
    finally:
        chatty.stop()
    assert result.ok
    assert result.duration_ms < 2000 + 600
    assert "no debugger attached in time" in function.logs()
