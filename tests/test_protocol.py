import pytest

from lambda_debugger.wire import protocol
from lambda_debugger.wire.protocol import CloseCode, ProtocolError

pytestmark = pytest.mark.timeout(10)


def test_messages_round_trip():
    for message in (
        protocol.Invocation("req-1", 1700000000000, "fn", "python3.11", 5000),
        protocol.Armed("my-fn", expires_ms=12),
        protocol.Paired("my-fn", "req-1", 1700000000000, "fn", "python3.11"),
        protocol.Paired("my-fn", "req-1", 1700000000000, attachment=2),
        protocol.Detached("debugger disconnected"),
        protocol.Detached(),
        protocol.Notice("hello"),
        protocol.Ended("the handler returned", exit_code=0),
        protocol.Ended("the handler's process ended (signal: killed)", exit_code=-9),
        protocol.Ended("the debugger did not finish attaching in time"),
        protocol.Invocation("req-1", 1, matches={"user == 'alice'": True, "a": False}),
        protocol.Armed("my-fn", when="user == 'alice'"),
        protocol.Paired("my-fn", "req-1", 1, when="a"),
        protocol.Watch("fn", "python3.12"),
        protocol.Debuggers(armed=[{"id": 1, "when": None}, {"id": 2, "when": "a"}], heartbeat_s=5),
        protocol.Debuggers(),
        protocol.Consider("a.b"),
        protocol.Considered("a.b", matches=True),
    ):
        assert protocol.decode(protocol.encode(message)) == message


@pytest.mark.parametrize(
    "text, needle",
    [
        ("not json", "not JSON"),
        ("[]", "JSON object"),
        ('{"type": "nope"}', "unknown control message type"),
        ('{"type": "invocation", "deadline_ms": 1}', "lacks 'request_id'"),
        ('{"type": "invocation", "request_id": 5, "deadline_ms": 1}', "must be a string"),
        ('{"type": "invocation", "request_id": "r", "deadline_ms": true}', "must be an integer"),
        ('{"type": "invocation", "request_id": "r", "deadline_ms": 1, "protocol": 99}', "not supported"),
        ('{"type": "ended", "message": "m", "exit_code": "3"}', "ended.exit_code must be an integer"),
        ('{"type": "ended", "message": "m", "exit_code": false}', "ended.exit_code must be an integer"),
        ('{"type": "ended", "exit_code": 3}', "lacks 'message'"),
        ("x" * (protocol.MAX_CONTROL_MESSAGE_BYTES + 1), "larger than"),
        (b"\xff\xfe", "not JSON"),
        ('{"type": "invocation", "request_id": "r", "deadline_ms": 1, "matches": []}', "must be an object"),
        ('{"type": "invocation", "request_id": "r", "deadline_ms": 1, "matches": {"a": 1}}', "true or false"),
        ('{"type": "armed", "function_id": "f", "when": 3}', "armed.when must be a string"),
        ('{"type": "debuggers", "armed": {}}', "must be a list"),
        pytest.param("[" * 5000, "not JSON", id="nested-too-deeply"),
        ('{"type": "debuggers", "armed": [{"id": 1, "when": 2}]}', "entries must be"),
        ('{"type": "debuggers", "armed": [7]}', "entries must be"),
        ('{"type": "considered", "when": "a", "matches": "yes"}', "true or false"),
        ('{"type": "consider"}', "lacks 'when'"),
        ('{"type": "watch", "protocol": 2}', "not supported"),
    ],
)
def test_decode_rejects_malformed_messages(text, needle):
    with pytest.raises(ProtocolError, match=needle):
        protocol.decode(text)


def test_decode_ignores_unknown_fields():
    message = protocol.decode('{"type": "notice", "message": "m", "extra": [1]}')
    assert message == protocol.Notice("m")


def test_close_codes_are_private_or_standard():
    for code in CloseCode:
        assert code < 1012 or 4000 <= code <= 4999


@pytest.mark.parametrize(
    "value, ok",
    [
        ("my-fn", True),
        ("a.b_c-9", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("a/b", False),
        ("a b", False),
        ("é", False),
        (None, False),
        ("a\n", False),
    ],
)
def test_function_ids(value, ok):
    assert protocol.valid_function_id(value) is ok


def test_function_id_from_path():
    assert protocol.function_id_from_path("/lambda/fn-1", "/lambda/") == "fn-1"
    with pytest.raises(ProtocolError):
        protocol.function_id_from_path("/lambda/../x", "/lambda/")
    with pytest.raises(ProtocolError):
        protocol.function_id_from_path("/debug/x", "/lambda/")


@pytest.mark.parametrize(
    "address, url",
    [
        ("broker.example.com", "ws://broker.example.com:8080/p"),
        ("10.0.0.5:9000", "ws://10.0.0.5:9000/p"),
        ("ws://h", "ws://h:8080/p"),
        ("wss://h:443/", "wss://h:443/p"),
        ("https://h", "wss://h:8080/p"),
        ("[::1]:81", "ws://[::1]:81/p"),
    ],
)
def test_broker_url(address, url):
    assert protocol.broker_url(address, 8080, "/p") == url


@pytest.mark.parametrize("address", ["", "ws://", "h:0", "h:70000", "h:x", "a:b:c", "h/x", "u@h", "[::1"])
def test_broker_url_rejects(address):
    with pytest.raises(ProtocolError):
        protocol.broker_url(address, 8080, "/p")


def test_clip_reason_fits_a_close_frame():
    reason = protocol.clip_reason("é" * 200)
    assert len(reason.encode("utf-8")) <= protocol.MAX_CLOSE_REASON_BYTES
    assert reason.endswith("...")
    assert protocol.clip_reason("short") == "short"


def test_bearer_header_round_trip():
    assert protocol.token_from_header(protocol.bearer("t0k")["Authorization"]) == "t0k"
    assert protocol.bearer(None) == {}
    assert protocol.token_from_header("Basic abc") is None
    assert protocol.token_from_header("Bearer ") is None


def test_optional_fields_decode_after_typings_caches_were_cleared():
    # Another library clearing typing's caches makes Optional[int] a new
    # object; the field check must not depend on object identity.
    import typing

    for clear in typing._cleanups:
        clear()
    for message in (protocol.Ended("the handler returned", exit_code=0), protocol.Ended("no code")):
        assert protocol.decode(protocol.encode(message)) == message
    with pytest.raises(ProtocolError, match="must be an integer"):
        protocol.decode('{"type": "ended", "message": "m", "exit_code": "3"}')
