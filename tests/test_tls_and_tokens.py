"""TLS on every hop, token files, and tokens never reaching a log."""

import json
import os

import pytest
import trustme

from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, BridgeProcess, BrokerProcess, break_line, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {name: str(folder / name) for name in ("ca.pem", "server.pem", "server.key")}
    ca.cert_pem.write_to_path(paths["ca.pem"])
    server.cert_chain_pems[0].write_to_path(paths["server.pem"])
    server.private_key_pem.write_to_path(paths["server.key"])
    return paths


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory, certificates):
    folder = tmp_path_factory.mktemp("tls-broker")
    (folder / "lambda.token").write_text(LAMBDA_TOKEN + "\n")
    (folder / "debugger.token").write_text(DEBUGGER_TOKEN)
    broker = BrokerProcess(
        str(folder / "broker.log"),
        "--certfile",
        certificates["server.pem"],
        "--keyfile",
        certificates["server.key"],
        "--lambda-token-file",
        str(folder / "lambda.token"),
        "--debugger-token-file",
        str(folder / "debugger.token"),
        ca_file=certificates["ca.pem"],
        env={},
    )
    yield broker
    broker.stop()


def test_debugging_over_tls_with_token_files(tls_broker, certificates, make_function, tmp_path):
    token_file = tmp_path / "my.token"
    token_file.write_text(DEBUGGER_TOKEN)
    bridge = BridgeProcess(
        tls_broker,
        str(tmp_path / "bridge.log"),
        token=None,
        extra_args=["--ca-file", certificates["ca.pem"], "--token-file", str(token_file)],
    )
    try:
        function = make_function(broker=tls_broker, env={"DEBUGGER_CA_FILE": certificates["ca.pem"]})
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        stopped = client.wait_stopped(timeout=30)
        frame = client.stack_trace(stopped["threadId"])[0]
        assert client.evaluate("len(event['items'])", frame["id"]) == "3"
        client.continue_(stopped["threadId"])
        result = future.result(timeout=30)
        assert result.ok and json.loads(result.payload)["total"] == 6
        assert "bridging to wss://127.0.0.1:%d/debug/orders" % tls_broker.debugger_port in bridge.output()
    finally:
        bridge.stop()


def broker_log(broker):
    with open(broker.log_path, encoding="utf-8", errors="replace") as log:
        return log.read()


def test_an_untrusted_certificate_is_refused_never_downgraded(tls_broker, make_function, tmp_path):
    before = len(broker_log(tls_broker))
    function = make_function(broker=tls_broker)  # no DEBUGGER_CA_FILE: the test CA is not trusted
    result = function.invoke()
    assert result.ok and json.loads(result.payload)["total"] == 6
    assert "broker unreachable (SSLCertVerificationError" in function.logs()
    bridge = BridgeProcess(tls_broker, str(tmp_path / "bridge.log"))
    try:
        client = bridge.connect()
        client.send_request("initialize", {"adapterID": "debugpy"})
        output = wait_until(lambda: "cannot reach the broker" in bridge.output() and bridge.output(), 15, "refusal")
        assert "certificate verify failed" in output
    finally:
        bridge.stop()
    # Neither side went on without TLS or without verification.
    assert "event=connection_accepted" not in broker_log(tls_broker)[before:]


def test_broker_token_file_errors_are_clear(tmp_path, capsys):
    from broker_server.app import main

    empty = tmp_path / "empty"
    empty.write_text("\n")
    for argv, message in (
        (["--lambda-token-file", str(tmp_path / "missing")], "cannot read it"),
        (["--lambda-token-file", str(empty)], "the file is empty"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["--lambda-port", "0", "--debugger-port", "0"], environ={})
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    token = tmp_path / "token"
    token.write_text("t1")
    with pytest.raises(SystemExit):
        main(["--lambda-token-file", str(token)], environ={"BROKER_LAMBDA_TOKEN": "t2", "BROKER_DEBUGGER_TOKEN": "t3"})
    assert "not both" in capsys.readouterr().err


@pytest.mark.slow
def test_no_token_appears_in_any_log_of_a_session_and_its_refusals(tmp_path, own_broker, make_function):
    """A debug session, and each token refused on each port: every log line
    that the broker, the bridges and the function wrote stays free of both
    tokens, whole or in part."""
    broker = own_broker()
    function = make_function(broker=broker, folder="fn")
    refused = make_function(broker=broker, folder="refused", env={"DEBUGGER_AUTH_TOKEN": DEBUGGER_TOKEN})
    assert refused.invoke().ok  # the debugger token does not open the Lambda port
    wrong = BridgeProcess(broker, str(tmp_path / "bridge-wrong.log"), token=LAMBDA_TOKEN)
    bridge = BridgeProcess(broker, str(tmp_path / "bridge.log"))
    try:
        wrong.connect().send_request("initialize", {"adapterID": "debugpy"})
        assert wrong.process.wait(15) == 1
        future = function.invoke_async()
        client = bridge.connect()
        client.attach_and_configure({function.path: [break_line(function.path)]}, timeout=30)
        client.continue_(client.wait_stopped(timeout=30)["threadId"])
        assert future.result(timeout=30).ok
    finally:
        wrong.stop()
        bridge.stop()
    broker.stop()
    secrets = [LAMBDA_TOKEN, DEBUGGER_TOKEN]
    fragments = {secret[i : i + 8] for secret in secrets for i in range(len(secret) - 7)}
    logs = [
        os.path.join(folder, name) for folder, _, names in os.walk(tmp_path) for name in names if name.endswith(".log")
    ]
    assert len(logs) >= 5, logs  # broker, two bridges, two functions
    for path in logs:
        with open(path, encoding="utf-8", errors="replace") as log:
            text = log.read()
        assert text.strip(), path
        leaked = [fragment for fragment in fragments if fragment in text]
        assert not leaked, "%s holds part of a token: %s" % (path, leaked[:3])


@pytest.mark.chain
def test_always_on_over_tls_reads_its_control_connection_and_pairs(tls_broker, certificates, make_function, tmp_path):
    function = make_function(
        broker=tls_broker, env={"DEBUGGER_CA_FILE": certificates["ca.pem"], "DEBUGGER_WAIT_MAX": "0"}
    )
    before = tls_broker.lambda_connections()
    for _ in range(10):
        assert function.invoke().ok
    assert tls_broker.lambda_connections() == before + 1  # one control connection, over TLS
    bridge = BridgeProcess(
        tls_broker,
        str(tmp_path / "bridge.log"),
        extra_args=["--ca-file", certificates["ca.pem"], "--when", "length(items) == `3`"],
    )
    try:
        client = bridge.connect()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            configured = pool.submit(
                client.attach_and_configure, {function.path: [break_line(function.path)]}, timeout=30
            )
            tls_broker.wait_for_state("armed")
            # The update arrived as TLS records the container reads without blocking.
            future = function.invoke_async()
            configured.result(timeout=30)
            stopped = client.wait_stopped(timeout=30)
            client.continue_(stopped["threadId"])
            result = future.result(timeout=30)
        assert result.ok and json.loads(result.payload)["total"] == 6
        assert tls_broker.lambda_connections() == before + 2
    finally:
        bridge.stop()
