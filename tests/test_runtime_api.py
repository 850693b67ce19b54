"""The embedded Lambda Runtime API, driven by real ``python -m awslambdaric`` processes."""

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from lambda_debugger.local.function import LocalFunction, describe_exit
from lambda_debugger.local.invocations import Invocation, InvocationQueue
from lambda_debugger.local.runtime_api import RuntimeAPI

pytestmark = pytest.mark.timeout(60)

TRACE_ID_RE = r"Root=1-[0-9a-f]{8}-[0-9a-f]{24};Parent=[0-9a-f]{16};Sampled=0"
UUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"

HANDLERS = """
import decimal, json, logging, os, signal, sys, time

from awslambdaric.lambda_runtime_marshaller import to_json

VALUE = {
    "text": "h\\u00e9llo \\u2603 \\U0001f600 \\"quoted\\" \\\\ </tag>",
    "nested": {"list": [1, 2.5, -0.0, 1e-07, 12345678901234567890, None, True],
               "empty": {}, "deep": [[[{"k": "v"}]]]},
    "float": 0.1 + 0.2,
    "decimal": decimal.Decimal("3.14159265358979323846"),
}
calls = 0


class CustomError(Exception):
    pass


def value(event, context):
    # The bytes the runtime itself would produce, for the test to compare.
    with open(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "expected.json"), "w") as f:
        f.write(to_json(VALUE))
    return VALUE


def raw_bytes(event, context):
    return b"\\x00\\xffnot json\\r\\n"


def fail(event, context):
    def inner():
        raise CustomError("it went wrong: " + event["why"])
    inner()


def describe(event, context):
    cc, ident = context.client_context, context.identity
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "custom": cc.custom if cc is not None else None,
        "cognito_identity_id": ident.cognito_identity_id,
        "cognito_identity_pool_id": ident.cognito_identity_pool_id,
        "trace_id": os.environ.get("_X_AMZN_TRACE_ID"),
        "environ": {k: os.environ.get(k) for k in (
            "AWS_EXECUTION_ENV", "AWS_REGION", "AWS_DEFAULT_REGION", "LAMBDA_TASK_ROOT",
            "_HANDLER", "AWS_LAMBDA_FUNCTION_TIMEOUT", "AWS_LAMBDA_RUNTIME_API", "TZ")},
    }


def sleepy(event, context):
    time.sleep(event.get("sleep", 0))
    return {"pid": os.getpid()}


def count(event, context):
    global calls
    calls += 1
    return {"pid": os.getpid(), "calls": calls}


def chatty(event, context):
    print("printed", event["word"])
    logging.getLogger().warning("logged %s", event["word"])
    return "ok"


def die(event, context):
    if event.get("exit") is not None:
        os._exit(event["exit"])
    if event.get("signal"):
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    return {"pid": os.getpid()}
"""


class _TrackedFunction(LocalFunction):
    """Remembers every runtime process it starts, so teardown can reap them all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spawned = []

    def _spawn(self):
        process = super()._spawn()
        self.spawned.append(process)
        return process


@pytest.fixture
def task_root(tmp_path):
    (tmp_path / "handlers.py").write_text(HANDLERS)
    return tmp_path


@pytest.fixture
def make_function(task_root):
    made = []

    def make(handler, **kwargs):
        env = {"PYTHONDONTWRITEBYTECODE": "1"}  # modules are rewritten within a second
        env.update(kwargs.pop("env", {}))
        function = _TrackedFunction(handler, task_root=str(task_root), env=env, **kwargs)
        made.append(function)
        return function

    yield make
    for function in made:
        function.close()
    for function in made:  # whatever close() missed, by PID
        for process in function.spawned:
            if process.poll() is None:
                process.kill()
            process.wait(5)


def _assert_error(result, error_type):
    assert not result.ok, result.payload
    assert result.error_type == error_type, result.payload
    document = result.json()
    assert document["errorType"] == error_type
    return document


# -- awslambdaric end to end ---------------------------------------------------


def test_response_is_byte_identical_to_the_runtimes_encoding(make_function, task_root):
    function = make_function("handlers.value")
    result = function.invoke({"ignored": True})
    assert result.ok, result.payload
    assert result.error_type is None
    assert re.fullmatch(UUID_RE, result.request_id)
    assert result.payload == (task_root / "expected.json").read_bytes()
    decoded = result.json()
    assert decoded["text"] == 'h\u00e9llo \u2603 \U0001f600 "quoted" \\ </tag>'
    assert decoded["nested"]["list"][4] == 12345678901234567890
    assert decoded["float"] == 0.1 + 0.2
    assert str(decoded["decimal"]) == "3.141592653589793"  # a JSON number, not a string
    assert b"3.14159265358979323846" in result.payload


def test_raw_bytes_response_passes_unchanged(make_function):
    result = make_function("handlers.raw_bytes").invoke(b"{}")
    assert result.ok, result.payload
    assert result.payload == b"\x00\xffnot json\r\n"


def test_handler_exception_keeps_type_message_and_frames(make_function, task_root):
    result = make_function("handlers.fail").invoke({"why": "n\u00e4h"})
    document = _assert_error(result, "CustomError")
    assert document["errorMessage"] == "it went wrong: n\u00e4h"
    assert document["requestId"] == result.request_id
    frames = document["stackTrace"]
    assert len(frames) == 2, frames
    assert all(str(task_root / "handlers.py") in frame for frame in frames)
    assert "in fail" in frames[0] and "in inner" in frames[1]
    assert "raise CustomError" in frames[1]


@pytest.mark.parametrize(
    "handler, broken, fixed, error_type, message",
    [
        (
            "later.handler",
            None,
            "def handler(event, context):\n    return 'fixed'\n",
            "Runtime.ImportModuleError",
            "Unable to import module 'later': No module named 'later'",
        ),
        (
            "later.handler",
            "def other(event, context):\n    return 'wrong'\n",
            "def handler(event, context):\n    return 'fixed'\n",
            "Runtime.HandlerNotFound",
            "Handler 'handler' missing on module 'later'",
        ),
    ],
    ids=["missing-module", "missing-function"],
)
def test_init_error_is_returned_and_next_invoke_starts_cold(
    make_function, task_root, handler, broken, fixed, error_type, message
):
    module = task_root / "later.py"
    if broken is not None:
        module.write_text(broken)
    function = make_function(handler)
    started = time.monotonic()
    result = function.invoke({})
    assert time.monotonic() - started < 5
    document = _assert_error(result, error_type)
    assert document["errorMessage"] == message
    assert function.cold_starts == 1

    again = function.invoke({})  # still broken: a fresh runtime fails the same way
    _assert_error(again, error_type)
    assert again.request_id != result.request_id
    assert function.cold_starts == 2

    module.write_text(fixed)
    result = function.invoke({})
    assert result.ok, result.payload
    assert result.json() == "fixed"
    assert function.cold_starts == 3


def test_context_and_trace_id_reach_the_handler(make_function, task_root):
    function = make_function("handlers.describe", timeout_s=7)
    trace_id = "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1"
    result = function.invoke(
        {},
        client_context={"custom": {"tenant": "t-1", "n": 2}, "env": {"platform": "test"}},
        cognito_identity={"cognitoIdentityId": "id-123", "cognitoIdentityPoolId": "pool-9"},
        trace_id=trace_id,
    )
    assert result.ok, result.payload
    seen = result.json()
    assert seen["aws_request_id"] == result.request_id
    assert seen["function_name"] == "local-function"
    assert seen["function_version"] == "$LATEST"
    assert seen["invoked_function_arn"] == ("arn:aws:lambda:us-east-1:123456789012:function:local-function")
    assert seen["memory_limit_in_mb"] == "128"
    assert seen["log_group_name"] == "/aws/lambda/local-function"
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", seen["log_stream_name"])
    assert 5000 < seen["remaining_ms"] <= 7000
    assert seen["custom"] == {"tenant": "t-1", "n": 2}
    assert seen["cognito_identity_id"] == "id-123"
    assert seen["cognito_identity_pool_id"] == "pool-9"
    assert seen["trace_id"] == trace_id
    environ = seen["environ"]
    assert environ["AWS_EXECUTION_ENV"] == "AWS_Lambda_python%d.%d" % sys.version_info[:2]
    assert environ["AWS_REGION"] == environ["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environ["LAMBDA_TASK_ROOT"] == str(task_root)
    assert environ["_HANDLER"] == "handlers.describe"
    assert environ["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "7"
    assert environ["AWS_LAMBDA_RUNTIME_API"] == function.api.address
    assert environ["TZ"] == ":UTC"

    plain = function.invoke({}).json()  # no context given: defaults like Lambda's
    assert plain["custom"] is None
    assert plain["cognito_identity_id"] is None
    assert re.fullmatch(TRACE_ID_RE, plain["trace_id"])
    assert plain["aws_request_id"] != seen["aws_request_id"]


def test_timeout_returns_promptly_and_the_next_invoke_gets_a_new_process(make_function):
    function = make_function("handlers.sleepy", timeout_s=1.0)
    first_pid = function.invoke({}).json()["pid"]  # warm: the clock covers the handler only
    old = function.process

    started = time.monotonic()
    result = function.invoke({"sleep": 30})
    elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.0
    document = _assert_error(result, "Sandbox.Timedout")
    assert document["errorMessage"] == ("RequestId: %s Error: Task timed out after 1.00 seconds" % result.request_id)
    assert 1000 <= result.duration_ms < 2000
    assert old.poll() is not None, "the timed-out runtime must be killed"

    after = function.invoke({})
    assert after.ok, after.payload
    assert after.json()["pid"] != first_pid
    assert function.cold_starts == 2


@pytest.mark.parametrize(
    "event, description",
    [({"exit": 3}, "exit status 3"), ({"signal": True}, "signal: killed")],
    ids=["exit", "sigkill"],
)
def test_runtime_death_is_an_exit_error_within_a_second(make_function, event, description):
    function = make_function("handlers.die", timeout_s=20)
    first_pid = function.invoke({}).json()["pid"]

    started = time.monotonic()
    result = function.invoke(event)
    assert time.monotonic() - started < 1.0
    document = _assert_error(result, "Runtime.ExitError")
    assert document["errorMessage"] == (
        "RequestId: %s Error: Runtime exited with error: %s" % (result.request_id, description)
    )

    after = function.invoke({})
    assert after.ok, after.payload
    assert after.json()["pid"] != first_pid
    assert function.cold_starts == 2


def test_warm_invocations_share_one_process_until_close(make_function):
    function = make_function("handlers.count")
    assert function.process is None and function.cold_starts == 0
    one, two = function.invoke({}).json(), function.invoke({}).json()
    assert one["pid"] == two["pid"] == function.pid
    assert (one["calls"], two["calls"]) == (1, 2)
    assert function.cold_starts == 1

    process = function.process
    function.close()
    assert process.poll() is not None
    with pytest.raises(RuntimeError):
        function.invoke({})


def test_runtime_output_goes_to_the_given_stream(make_function, task_root):
    log_path = task_root / "runtime.log"
    with open(log_path, "wb") as log:
        function = make_function("handlers.chatty", stdout=log, stderr=subprocess.STDOUT)
        result = function.invoke({"word": "w\u00f6rd"})
        assert result.ok, result.payload
        function.close()
    text = log_path.read_text("utf-8")
    assert "printed w\u00f6rd\n" in text
    # The runtime's own line format: level, UTC timestamp, request ID, message.
    assert re.search(
        r"\[WARNING\]\t\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\t%s\tlogged w\u00f6rd\n" % result.request_id,
        text,
    ), text


# -- the HTTP surface, with a hand-written runtime ------------------------------


@pytest.fixture
def api():
    api = RuntimeAPI(init_timeout_s=5.0).start()
    yield api
    api.stop()


def _request(api, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(api.address, timeout=10)
    try:
        connection.request(method, path, body, headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def _invoke_in_thread(api, event, **kwargs):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("result", api.invoke(event, **kwargs)), daemon=True)
    thread.start()
    return thread, box


def test_next_delivers_event_and_headers_and_response_completes(api):
    event = b' {"k": "\xc3\xa9"}\n'  # passed on as is, whitespace and all
    thread, box = _invoke_in_thread(api, event, timeout_s=4, client_context={"custom": {}})
    status, headers, body = _request(api, "GET", "/2018-06-01/runtime/invocation/next")
    assert status == 200 and body == event
    request_id = headers["Lambda-Runtime-Aws-Request-Id"]
    assert re.fullmatch(UUID_RE, request_id)
    deadline_ms = int(headers["Lambda-Runtime-Deadline-Ms"])
    assert 3000 < deadline_ms - time.time() * 1000 <= 4000
    assert headers["Lambda-Runtime-Invoked-Function-Arn"] == api.function_arn
    assert re.fullmatch(TRACE_ID_RE, headers["Lambda-Runtime-Trace-Id"])
    assert json.loads(headers["Lambda-Runtime-Client-Context"]) == {"custom": {}}
    assert "Lambda-Runtime-Cognito-Identity" not in headers
    assert headers["Content-Type"] == "application/json"

    path = "/2018-06-01/runtime/invocation/%s/response" % request_id
    assert _request(api, "POST", path, b"[1, 2]")[0] == 202
    thread.join(5)
    result = box["result"]
    assert (result.ok, result.payload, result.request_id) == (True, b"[1, 2]", request_id)

    status, _, body = _request(api, "POST", path, b"again")  # already answered
    assert status == 400
    assert json.loads(body)["errorType"] == "InvalidRequestID"


def test_unknown_request_ids_and_paths_are_refused(api):
    status, _, body = _request(api, "POST", "/2018-06-01/runtime/invocation/nope/error", b"{}")
    assert status == 400 and json.loads(body) == {
        "errorMessage": "Invalid request ID",
        "errorType": "InvalidRequestID",
    }
    status, _, body = _request(api, "GET", "/2018-06-01/runtime/invocation/elsewhere")
    assert status == 404 and json.loads(body)["errorType"] == "NotFound"


def test_error_with_an_oversized_xray_header_is_still_accepted(api):
    # awslambdaric sends the X-Ray cause as a header of up to 1 MiB.
    thread, box = _invoke_in_thread(api, b"{}", timeout_s=4)
    _, headers, _ = _request(api, "GET", "/2018-06-01/runtime/invocation/next")
    error = b'{"errorMessage": "deep", "errorType": "RecursionError", "stackTrace": []}'
    status, _, _ = _request(
        api,
        "POST",
        "/2018-06-01/runtime/invocation/%s/error" % headers["Lambda-Runtime-Aws-Request-Id"],
        error,
        {"Lambda-Runtime-Function-Xray-Error-Cause": "x" * 300_000},
    )
    assert status == 202
    thread.join(5)
    assert box["result"].error_type == "RecursionError"
    assert box["result"].payload == error


def test_init_error_fails_queued_and_later_invocations_until_reset(api):
    thread, box = _invoke_in_thread(api, b"{}", timeout_s=4)
    while not api.queue.queued:  # queued before the runtime reports its init error
        time.sleep(0.01)
    error = b'{"errorMessage": "x", "errorType": "Runtime.UserCodeSyntaxError"}'
    status, _, _ = _request(
        api,
        "POST",
        "/2018-06-01/runtime/init/error",
        error,
        {"Lambda-Runtime-Function-Error-Type": "Runtime.UserCodeSyntaxError"},
    )
    assert status == 202
    thread.join(5)
    assert box["result"].payload == error
    assert box["result"].error_type == "Runtime.UserCodeSyntaxError"
    assert api.needs_restart
    assert api.invoke(b"{}", timeout_s=1).payload == error
    api.reset()
    assert not api.needs_restart


def test_event_nobody_takes_times_out_after_the_init_limit():
    with RuntimeAPI(init_timeout_s=0.3) as api:
        started = time.monotonic()
        result = api.invoke(b"{}", timeout_s=30)
        assert 0.3 <= time.monotonic() - started < 1.3
        assert result.error_type == "Sandbox.Timedout"
        assert "Task timed out after 0.30 seconds" in result.json()["errorMessage"]


def test_a_replaced_or_departed_runtime_gets_no_event():
    queue = InvocationQueue()
    polls = {}
    polling = threading.Event()

    def poll(name, peer_gone):
        polls[name] = queue.take(peer_gone)

    def still_there():
        polling.set()
        return False

    threads = [
        threading.Thread(target=poll, args=("stale", still_there), daemon=True),
        threading.Thread(target=poll, args=("gone", lambda: True), daemon=True),
    ]
    for thread in threads:
        thread.start()
    assert polling.wait(2)
    queue.reset()  # a new runtime process replaces the polling one
    for thread in threads:
        thread.join(2)
    assert polls == {"stale": None, "gone": None}

    inv = Invocation("r-1", b"{}", 0.2, {})
    fresh = threading.Thread(target=poll, args=("fresh", lambda: False), daemon=True)
    fresh.start()
    result = queue.run(inv, init_timeout_s=5)
    fresh.join(2)
    assert polls["fresh"] is inv
    # Taken, then unanswered: the function timeout applies, not the init limit.
    assert result.error_type == "Sandbox.Timedout"
    assert "Task timed out after 0.20 seconds" in result.json()["errorMessage"]
    assert queue.complete("r-1", True, b"late", None) == 400


def test_environment_matches_lambda_and_carries_no_credentials():
    api = RuntimeAPI(port=9001, function_name="fn", memory_mb=512, region="eu-west-1")
    environ = api.environment("app/mod.handler", "/var/task", timeout_s=2.5)
    assert environ["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert environ["_HANDLER"] == "app/mod.handler"
    assert environ["LAMBDA_TASK_ROOT"] == os.path.abspath("/var/task")
    assert environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert environ["AWS_LAMBDA_FUNCTION_TIMEOUT"] == "3"
    assert environ["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/fn"
    assert environ["AWS_DEFAULT_REGION"] == "eu-west-1"
    credentials = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
    assert not set(credentials) & set(environ)
    assert all(isinstance(value, str) for value in environ.values())


def test_describe_exit_words_it_like_lambda():
    assert describe_exit(0) == "exit status 0"
    assert describe_exit(3) == "exit status 3"
    assert describe_exit(-9) == "signal: killed"
    assert describe_exit(-15) == "signal: terminated"
    assert describe_exit(-11) == "signal: segmentation fault"
