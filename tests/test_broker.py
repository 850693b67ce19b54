"""The broker end to end: a BrokerServer on port 0 of 127.0.0.1, real clients.

Most tests run the broker and Tornado WebSocket clients on one asyncio loop
(``run_with_broker``); a few use websocket-client in a thread where a client
must block or not read.
"""

import asyncio
import base64
import gc
import json
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings

import pytest
import websocket
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

from broker_server.app import BrokerServer, _insecure_warning, main
from broker_server.config import BrokerConfig, ConfigError
from broker_server.handlers import DebugSocket
from broker_server.registry import Session
from lambda_debugger.wire.protocol import (
    FUNCTION_ID_PATTERN,
    Armed,
    CloseCode,
    Detached,
    Ended,
    Invocation,
    Notice,
    Paired,
    bearer,
    decode,
    encode,
)

pytestmark = pytest.mark.timeout(60)

LAMBDA_TOKEN = "lambda-token-Zq7vR2"
DEBUGGER_TOKEN = "debugger-token-Xk9pL4"
TOKENS = (LAMBDA_TOKEN, DEBUGGER_TOKEN)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(**overrides) -> BrokerConfig:
    values = dict(
        host="127.0.0.1",
        lambda_port=0,
        debugger_port=0,
        lambda_token=LAMBDA_TOKEN,
        debugger_token=DEBUGGER_TOKEN,
    )
    values.update(overrides)
    return BrokerConfig(**values).validate()


def deadline_ms(seconds_from_now: float = 600) -> int:
    return int((time.time() + seconds_from_now) * 1000)


class Broker:
    """A started BrokerServer plus the clients a test opened on it."""

    def __init__(self, server: BrokerServer, scheme: str = "ws") -> None:
        self.server = server
        self.registry = server.registry
        self.scheme = scheme
        self.clients = []
        self.http = AsyncHTTPClient(force_instance=True)

    def url(self, side: str, path: str) -> str:
        port = self.server.lambda_port if side == "lambda" else self.server.debugger_port
        return "%s://127.0.0.1:%d%s" % (self.scheme, port, path)

    async def connect(self, side: str, path: str, token=None, headers=None, **request_options):
        request = HTTPRequest(self.url(side, path), headers=headers or bearer(token), **request_options)
        conn = await asyncio.wait_for(websocket_connect(request), 5)
        self.clients.append(conn)
        return conn

    async def debugger(self, function_id="fn", token=DEBUGGER_TOKEN, **options):
        return await self.connect("debug", "/debug/" + function_id, token, **options)

    async def lambda_(self, function_id="fn", request_id="req-1", token=LAMBDA_TOKEN, options=None, **invocation):
        conn = await self.connect("lambda", "/lambda/" + function_id, token, **(options or {}))
        invocation.setdefault("deadline_ms", deadline_ms())
        invocation.setdefault("wait_ms", 60_000)
        await conn.write_message(encode(Invocation(request_id=request_id, **invocation)))
        return conn

    async def fetch(self, side: str, path: str, headers=None, **options):
        return await self.http.fetch(
            self.url(side, path).replace("ws", "http", 1), headers=headers, raise_error=False, **options
        )

    async def pair(self, function_id="fn", request_id="req-1"):
        """Return a paired (lambda, debugger) whose Paired messages were read."""
        dbg = await self.debugger(function_id)
        assert_armed(await control(dbg), function_id)
        lam = await self.lambda_(function_id, request_id)
        assert (await control(lam)).request_id == request_id
        assert (await control(dbg)).request_id == request_id
        return lam, dbg

    async def close(self) -> None:
        for conn in self.clients:
            conn.close()
        self.http.close()
        await self.server.aclose()


def run_with_broker(test, config=None, scheme="ws") -> None:
    """Run ``await test(broker)`` against a fresh broker on a fresh loop."""

    async def main_():
        server = BrokerServer(config or make_config())
        server.start()
        broker = Broker(server, scheme)
        try:
            await asyncio.wait_for(test(broker), 30)
        finally:
            await broker.close()

    asyncio.run(main_())


def with_broker(**overrides):
    """Decorate ``async def test_x(broker)`` into a test with its own broker."""

    def decorate(test):
        def run():
            run_with_broker(test, make_config(**overrides))

        run.__name__ = test.__name__
        run.__doc__ = test.__doc__
        return run

    return decorate


async def read(conn, timeout: float = 5):
    return await asyncio.wait_for(conn.read_message(), timeout)


async def control(conn):
    message = await read(conn)
    assert isinstance(message, str), "expected a control message, got %r" % (message,)
    return decode(message)


async def closed(conn, timeout: float = 5):
    """Wait until ``conn`` is closed; return (close_code, close_reason)."""
    while await read(conn, timeout) is not None:
        pass
    return conn.close_code, conn.close_reason


def assert_armed(message, function_id: str) -> None:
    """Check an ``Armed`` message, whose expiry is the pairing timeout from now."""
    assert isinstance(message, Armed), message
    assert message.function_id == function_id
    expected_ms = (time.time() + BrokerConfig.pairing_timeout_s) * 1000
    assert abs(message.expires_ms - expected_ms) < 10_000


async def until(predicate, timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "condition not met in time"
        await asyncio.sleep(0.005)


def chunks(data: bytes, size: int):
    return [data[i : i + size] for i in range(0, len(data), size)]


async def send_frames(conn, frames) -> None:
    for frame in frames:
        await conn.write_message(frame, binary=True)


async def receive_frames(conn, count: int):
    return [await read(conn) for _ in range(count)]


# Pairing and relaying -----------------------------------------------------


@with_broker()
async def test_debugger_first_pairs_and_relays_both_ways(broker):
    dbg = await broker.debugger("my-fn")
    assert_armed(await control(dbg), "my-fn")
    deadline = deadline_ms()
    lam = await broker.lambda_(
        "my-fn", "req-1", deadline_ms=deadline, function_name="my-function", runtime="python3.12"
    )
    expected = Paired("my-fn", "req-1", deadline, "my-function", "python3.12")
    assert await control(lam) == expected
    assert await control(dbg) == expected

    small_frame, small_reply = b"\x00Content-Length: 2\r\n\r\n{}\xff", b"\x01back"
    await lam.write_message(small_frame, binary=True)
    assert await read(dbg) == small_frame
    await dbg.write_message(small_reply, binary=True)
    assert await read(lam) == small_reply

    # 1 MB each way in 64 KiB frames: every frame arrives intact and in order.
    to_debugger = chunks(os.urandom(1_000_000), 64 * 1024)
    to_lambda = chunks(os.urandom(1_000_000), 64 * 1024)
    await asyncio.gather(send_frames(lam, to_debugger), send_frames(dbg, to_lambda))
    assert await receive_frames(dbg, len(to_debugger)) == to_debugger
    assert await receive_frames(lam, len(to_lambda)) == to_lambda

    [entry] = broker.registry.snapshot()
    assert entry["state"] == "paired"
    assert entry["bytes_to_debugger"] == 1_000_000 + len(small_frame)
    assert entry["bytes_to_lambda"] == 1_000_000 + len(small_reply)

    lam.close(CloseCode.INVOCATION_DONE, "handler returned")
    assert await closed(dbg) == (CloseCode.INVOCATION_DONE, "invocation finished")
    await until(lambda: len(broker.registry) == 0)


@with_broker()
async def test_lambda_first_waits_then_pairs(broker):
    lam = await broker.lambda_("fn", "req-9")
    await until(lambda: broker.registry.snapshot() != [])
    assert broker.registry.snapshot()[0]["state"] == "waiting"
    dbg = await broker.debugger("fn")
    paired = await control(dbg)
    assert isinstance(paired, Paired) and paired.request_id == "req-9"
    assert await control(lam) == paired

    await dbg.write_message(b"ping", binary=True)
    assert await read(lam) == b"ping"
    await lam.write_message(b"pong", binary=True)
    assert await read(dbg) == b"pong"

    dbg.close()
    assert await control(lam) == Detached(reason="debugger disconnected")


@with_broker()
async def test_a_debugger_may_attach_again_after_the_first_left(broker):
    lam, dbg = await broker.pair("fn", "req-7")
    dbg.close()
    assert await control(lam) == Detached(reason="debugger disconnected")
    # Sent before the Lambda side learnt it: dropped, never shown to the next debugger.
    await lam.write_message(b"old stream", binary=True)
    await lam.write_message(encode(Detached(reason="debug stream ended")))
    await until(lambda: broker.registry.sessions()[0].stream_ended)
    assert broker.registry.sessions()[0].bytes_dropped == len(b"old stream")
    again = await broker.debugger("fn")
    paired = await control(again)
    assert isinstance(paired, Paired) and (paired.request_id, paired.attachment) == ("req-7", 2)
    assert await control(lam) == paired
    await lam.write_message(b"new stream", binary=True)
    assert await read(again) == b"new stream"
    await again.write_message(b"request", binary=True)
    assert await read(lam) == b"request"
    [entry] = broker.registry.snapshot()
    assert (entry["state"], entry["attachments"]) == ("paired", 2)
    lam.close(CloseCode.INVOCATION_DONE)
    assert (await closed(again))[0] == CloseCode.INVOCATION_DONE


@with_broker()
async def test_a_detached_message_while_paired_is_refused(broker):
    lam, dbg = await broker.pair()
    await lam.write_message(encode(Detached()))
    assert (await closed(lam))[0] == CloseCode.BAD_REQUEST
    assert await closed(dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")


@with_broker()
async def test_lambda_leaving_closes_the_debugger(broker):
    lam, dbg = await broker.pair()
    lam.close(CloseCode.NORMAL)
    assert await closed(dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")
    await until(lambda: len(broker.registry) == 0)


@with_broker()
async def test_two_invocations_of_one_function_are_separate_sessions(broker):
    lam1, dbg1 = await broker.pair("fn", "req-1")
    lam2, dbg2 = await broker.pair("fn", "req-2")
    await lam2.write_message(b"two", binary=True)
    await lam1.write_message(b"one", binary=True)
    assert await read(dbg1) == b"one"
    assert await read(dbg2) == b"two"
    # A third debugger arms: each invocation has one debugger only.
    dbg3 = await broker.debugger("fn")
    assert_armed(await control(dbg3), "fn")
    lam1.close(CloseCode.INVOCATION_DONE)
    assert (await closed(dbg1))[0] == CloseCode.INVOCATION_DONE
    await lam2.write_message(b"still here", binary=True)
    assert await read(dbg2) == b"still here"


@with_broker()
async def test_notices_are_relayed_other_control_messages_refused(broker):
    lam, dbg = await broker.pair()
    notice = encode(Notice("child started"))
    await lam.write_message(notice)
    assert await read(dbg) == notice
    await dbg.write_message(encode(Notice("hello from the IDE side")))
    assert await control(lam) == Notice("hello from the IDE side")
    await lam.write_message(encode(Invocation(request_id="again", deadline_ms=deadline_ms())))
    code, reason = await closed(lam)
    assert code == CloseCode.BAD_REQUEST
    assert "invocation" in reason
    assert await closed(dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")


@with_broker()
async def test_the_lambda_sides_ended_message_reaches_the_debugger_and_not_the_other_way(broker):
    lam, dbg = await broker.pair()
    ended = encode(Ended("the handler's process ended (exit status 3) before the handler returned", exit_code=3))
    await lam.write_message(ended)
    assert await read(dbg) == ended
    lam.close(CloseCode.INVOCATION_DONE)
    assert (await closed(dbg))[0] == CloseCode.INVOCATION_DONE
    lam, dbg = await broker.pair(request_id="req-2")
    await dbg.write_message(encode(Ended("a debugger cannot end an invocation")))
    code, reason = await closed(dbg)
    assert code == CloseCode.BAD_REQUEST and "unexpected ended message from the debugger side" in reason


# Refusals -------------------------------------------------------------------


@pytest.mark.parametrize(
    "side, token",
    [
        ("lambda", None),
        ("lambda", "wrong-token-value"),
        ("lambda", DEBUGGER_TOKEN),  # the debugger token does not open the Lambda port
        ("lambda", LAMBDA_TOKEN[:-1]),
        ("debug", None),
        ("debug", "wrong-token-value"),
        ("debug", LAMBDA_TOKEN),  # the Lambda token must never grant a debugger
        ("debug", DEBUGGER_TOKEN + "x"),
    ],
)
def test_wrong_or_missing_token_is_refused(side, token):
    async def test(broker):
        conn = await broker.connect(side, "/%s/fn" % side, token)
        assert await read(conn) is None  # closed, and never armed
        assert conn.close_code == CloseCode.UNAUTHORIZED
        assert conn.close_reason == "%s token missing or wrong" % ("lambda" if side == "lambda" else "debugger")
        assert len(broker.registry) == 0

    run_with_broker(test)


@with_broker()
async def test_basic_auth_does_not_open_websockets(broker):
    basic = "Basic " + base64.b64encode(b"me:" + DEBUGGER_TOKEN.encode()).decode()
    conn = await broker.connect("debug", "/debug/fn", headers={"Authorization": basic})
    assert (await closed(conn))[0] == CloseCode.UNAUTHORIZED


@pytest.mark.parametrize(
    "side, path",
    [
        ("lambda", "/lambda/"),
        ("lambda", "/lambda/has%20space"),
        ("lambda", "/lambda/a/b"),
        ("debug", "/debug/" + "x" * 129),
        ("debug", "/debug/%C3%A9t%C3%A9"),
    ],
)
def test_bad_function_id_is_refused(side, path):
    async def test(broker):
        conn = await broker.connect(side, path, LAMBDA_TOKEN if side == "lambda" else DEBUGGER_TOKEN)
        code, reason = await closed(conn)
        assert code == CloseCode.BAD_REQUEST
        assert FUNCTION_ID_PATTERN in reason
        assert len(broker.registry) == 0

    run_with_broker(test)


@pytest.mark.parametrize(
    "first_message, reason_part",
    [
        ("this is not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        ('{"type": "invocation", "deadline_ms": 1}', "lacks 'request_id'"),
        ('{"type": "invocation", "request_id": "r", "deadline_ms": 1, "protocol": 99}', "protocol version 99"),
        (encode(Notice("hi")), "first message must be an invocation"),
        (b"\x00raw bytes", "debug bytes before pairing"),
    ],
)
def test_malformed_first_message_is_refused(first_message, reason_part):
    async def test(broker):
        conn = await broker.connect("lambda", "/lambda/fn", LAMBDA_TOKEN)
        await conn.write_message(first_message, binary=isinstance(first_message, bytes))
        code, reason = await closed(conn)
        assert code == CloseCode.BAD_REQUEST
        assert reason_part in reason
        assert len(broker.registry) == 0

    run_with_broker(test)


@with_broker()
async def test_a_misbehaving_side_is_dropped_without_waiting_for_its_close(broker):
    """The partner learns at once, even if the offender never answers the close."""
    dbg = await broker.debugger()
    assert_armed(await control(dbg), "fn")
    lam = await asyncio.to_thread(
        websocket.create_connection,
        broker.url("lambda", "/lambda/fn"),
        header=["Authorization: Bearer " + LAMBDA_TOKEN],
    )
    try:
        await asyncio.to_thread(lam.send, encode(Invocation(request_id="req-1", deadline_ms=deadline_ms())))
        assert isinstance(decode(await asyncio.to_thread(lam.recv)), Paired)
        await asyncio.to_thread(lam.send, "garbage")  # and it reads nothing more
        started = time.monotonic()
        assert await closed(dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")
        assert time.monotonic() - started < 2  # Tornado waits 5 s for a close answer
    finally:
        lam.abort()
        lam.shutdown()


@with_broker(handshake_timeout_s=0.2)
async def test_lambda_that_does_not_announce_itself_is_closed(broker):
    conn = await broker.connect("lambda", "/lambda/fn", LAMBDA_TOKEN)
    started = time.monotonic()
    assert await closed(conn) == (CloseCode.BAD_REQUEST, "no invocation message within 0.2 s")
    assert 0.15 < time.monotonic() - started < 3


@with_broker()
async def test_debug_bytes_before_pairing_are_refused(broker):
    dbg = await broker.debugger()
    assert_armed(await control(dbg), "fn")
    await dbg.write_message(b"Content-Length: 2\r\n\r\n{}", binary=True)
    assert await closed(dbg) == (CloseCode.BAD_REQUEST, "debug bytes before pairing")
    await until(lambda: len(broker.registry) == 0)


@with_broker(max_frame_bytes=64 * 1024)
async def test_oversized_frame_closes_that_session_only(broker):
    lam, dbg = await broker.pair("fn", "req-1")
    other_lam, other_dbg = await broker.pair("other", "req-2")
    await lam.write_message(b"x" * (100 * 1024), binary=True)
    assert (await closed(lam))[0] == CloseCode.MESSAGE_TOO_BIG
    assert await closed(dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")
    await other_lam.write_message(b"y" * (64 * 1024), binary=True)
    assert await read(other_dbg) == b"y" * (64 * 1024)


@with_broker(max_sessions_per_function=1)
async def test_session_limit_refuses_with_a_reason(broker):
    await broker.lambda_("fn", "req-1")
    await until(lambda: len(broker.registry) == 1)
    refused = await broker.lambda_("fn", "req-2")
    code, reason = await closed(refused)
    assert code == CloseCode.TOO_MANY_SESSIONS
    assert "--max-sessions-per-function" in reason
    # A debugger pairs with the waiting invocation: no new session needed.
    dbg = await broker.debugger("fn")
    assert (await control(dbg)).request_id == "req-1"


def test_an_exception_in_one_connection_spares_the_others(monkeypatch):
    original = Session.record_relayed

    def explode_for_boom(session, *args):
        if session.function_id == "boom":
            raise RuntimeError("bug in the relay")
        original(session, *args)

    monkeypatch.setattr(Session, "record_relayed", explode_for_boom)

    async def test(broker):
        boom_lam, boom_dbg = await broker.pair("boom", "req-1")
        fine_lam, fine_dbg = await broker.pair("fine", "req-2")
        await boom_lam.write_message(b"trigger", binary=True)
        assert await read(boom_dbg) == b"trigger"  # relayed, then the callback raised
        assert await closed(boom_dbg) == (CloseCode.PEER_GONE, "lambda side disconnected")
        await fine_lam.write_message(b"unaffected", binary=True)
        assert await read(fine_dbg) == b"unaffected"
        assert (await broker.fetch("debug", "/healthz")).code == 200

    run_with_broker(test)


# Flow control and socket options --------------------------------------------


@with_broker()
async def test_slow_debugger_stops_the_broker_reading_the_lambda(broker):
    """A debugger that does not read must not make the broker buffer the stream."""
    small_buffer = ((socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024),)
    dbg = await asyncio.to_thread(
        websocket.create_connection,
        broker.url("debug", "/debug/fn"),
        header=["Authorization: Bearer " + DEBUGGER_TOKEN],
        sockopt=small_buffer,
        timeout=10,
    )
    try:
        assert_armed(decode(await asyncio.to_thread(dbg.recv)), "fn")
        lam = await broker.lambda_()
        assert isinstance(await control(lam), Paired)
        handler = next(c for c in broker.server._state.connections if isinstance(c, DebugSocket))

        frame_size = 256 * 1024
        # 64 MiB, more than the kernel buffers between the two clients hold.
        frames = (bytes([i % 251]) * frame_size for i in range(256))
        sent, stalled = 0, None
        for frame in frames:
            write = lam.write_message(frame, binary=True)
            try:
                await asyncio.wait_for(asyncio.shield(write), 0.5)
            except asyncio.TimeoutError:
                stalled = write
                break
            sent += 1
        assert stalled is not None, "the Lambda could write 64 MiB to a debugger that reads nothing"
        # What the broker holds for the debugger is at most the frame in flight.
        assert len(handler._stream._write_buffer) <= frame_size + 16

        # Once the debugger reads, everything arrives, in order, and the
        # Lambda can write again.
        more = 4
        expected = sent + 1 + more

        def drain():
            sizes = []
            while len(sizes) < expected:
                opcode, data = dbg.recv_data()
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    assert data == bytes([len(sizes) % 251]) * frame_size
                    sizes.append(len(data))
            return sizes

        reader = asyncio.ensure_future(asyncio.to_thread(drain))
        await stalled
        for _ in range(more):
            await lam.write_message(next(frames), binary=True)
        assert await reader == [frame_size] * expected
    finally:
        await asyncio.to_thread(dbg.close)  # waits for the broker's answer


@with_broker()
async def test_connections_use_tcp_nodelay(broker):
    await broker.debugger()
    await until(lambda: broker.server._state.connections)
    [handler] = broker.server._state.connections
    assert handler._stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# Shutdown -------------------------------------------------------------------


@with_broker(handshake_timeout_s=30)
async def test_stop_closes_every_connection_with_going_away(broker):
    lam, dbg = await broker.pair()
    armed = await broker.debugger("other")
    assert_armed(await control(armed), "other")
    silent = await broker.connect("lambda", "/lambda/silent", LAMBDA_TOKEN)  # still in its handshake
    await until(lambda: len(broker.server._state.connections) == 4)
    await broker.server.aclose()
    for conn in (lam, dbg, armed, silent):
        assert await closed(conn) == (CloseCode.GOING_AWAY, "broker shutting down")
    assert len(broker.registry) == 0


def test_start_in_thread_and_stop_from_another_thread():
    server = BrokerServer(make_config()).start_in_thread()
    try:
        assert server.debugger_address == "ws://127.0.0.1:%d" % server.debugger_port
        ws = websocket.create_connection(
            server.debugger_address + "/debug/fn", header=["Authorization: Bearer " + DEBUGGER_TOKEN], timeout=5
        )
        assert_armed(decode(ws.recv()), "fn")
        stopper = threading.Thread(target=server.stop)
        stopper.start()
        opcode, frame = ws.recv_data_frame(control_frame=True)  # answers the close
        stopper.join(10)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack(">H", frame.data[:2])[0] == CloseCode.GOING_AWAY
        ws.shutdown()
        assert not server._thread.is_alive()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server.debugger_port), timeout=1).close()
    finally:
        server.stop()


def test_start_in_thread_reports_a_port_in_use():
    with socket.socket() as taken, warnings.catch_warnings():
        # tornado.netutil.bind_sockets leaves the socket that failed to bind
        # to the garbage collector.
        warnings.simplefilter("ignore", ResourceWarning)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = make_config(debugger_port=taken.getsockname()[1])
        with pytest.raises(OSError):
            BrokerServer(config).start_in_thread()
        gc.collect()


# HTTP -------------------------------------------------------------------------


@with_broker()
async def test_healthz_on_both_ports_needs_no_token(broker):
    for side in ("lambda", "debug"):
        response = await broker.fetch(side, "/healthz")
        assert response.code == 200
        assert json.loads(response.body) == {"status": "ok"}


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()}


@with_broker()
async def test_sessions_api_requires_the_debugger_token(broker):
    await broker.lambda_("fn", "req-api", function_name="my-function", runtime="python3.12")
    await until(lambda: len(broker.registry) == 1)

    for headers in (None, bearer(LAMBDA_TOKEN), basic("me", LAMBDA_TOKEN), basic(DEBUGGER_TOKEN, ""), bearer("nope")):
        response = await broker.fetch("debug", "/api/sessions", headers)
        assert response.code == 401, headers
        assert response.headers["WWW-Authenticate"] == 'Basic realm="lambda-debugger"'
        assert not any(token.encode() in response.body for token in TOKENS)

    for headers in (bearer(DEBUGGER_TOKEN), basic("anyone", DEBUGGER_TOKEN)):
        response = await broker.fetch("debug", "/api/sessions", headers)
        assert response.code == 200, headers
        [entry] = json.loads(response.body)
        assert entry["state"] == "waiting"
        assert entry["request_id"] == "req-api"
        assert entry["function_id"] == "fn"
        assert entry["function_name"] == "my-function"
        assert entry["runtime"] == "python3.12"

    # Nothing about sessions on the Lambda-facing port.
    assert (await broker.fetch("lambda", "/api/sessions", bearer(DEBUGGER_TOKEN))).code == 404


@with_broker()
async def test_web_page_requires_the_debugger_token(broker):
    refused = await broker.fetch("debug", "/")
    assert refused.code == 401 and refused.headers["WWW-Authenticate"] == 'Basic realm="lambda-debugger"'
    assert b"refused the credentials (HTTP 401)" in refused.body  # what a cancelled login prompt shows
    response = await broker.fetch("debug", "/", basic("me", DEBUGGER_TOKEN))
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert b'src="ui/page.js"' in response.body and b"<script>" not in response.body
    for page in (refused, response):
        policy = page.headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    assert not any(token.encode() in response.body for token in TOKENS)


@with_broker()
async def test_the_pages_script_and_style_hold_no_data_and_need_no_token(broker):
    for name, kind in (("page.js", "text/javascript"), ("page.css", "text/css")):
        response = await broker.fetch("debug", "/ui/" + name)
        assert response.code == 200 and response.headers["Content-Type"].startswith(kind)
    assert (await broker.fetch("debug", "/ui/secrets.txt")).code == 404
    assert (await broker.fetch("debug", "/ui/..%2Fapp.py")).code == 404
    assert (await broker.fetch("debug", "/favicon.ico")).code == 204


@with_broker()
async def test_the_state_api_holds_what_the_page_shows(broker):
    for headers in (None, bearer(LAMBDA_TOKEN)):
        assert (await broker.fetch("debug", "/api/state", headers)).code == 401
    # The page's own calls are refused without a challenge (no login prompt over the page).
    quiet = await broker.fetch("debug", "/api/state", {"X-Lambda-Debugger-Page": "1"})
    assert quiet.code == 401 and "WWW-Authenticate" not in quiet.headers
    await broker.lambda_("fn", "req-state", function_name="my-function", runtime="python3.12")
    await until(lambda: len(broker.registry) == 1)
    before = time.time()
    state = json.loads((await broker.fetch("debug", "/api/state", bearer(DEBUGGER_TOKEN))).body)
    assert abs(state["now"] - before) < 5
    [session] = state["sessions"]
    assert session["request_id"] == "req-state" and session["wait_ends_ms"] > before * 1000
    assert state["ended"] == [] and state["control_connections_by_function"] == {}


def test_insecure_mode_without_tokens_accepts_anyone():
    async def test(broker):
        dbg = await broker.debugger(token=None)
        assert_armed(await control(dbg), "fn")
        lam = await broker.lambda_(token=None)
        assert isinstance(await control(lam), Paired)
        assert (await broker.fetch("debug", "/api/sessions")).code == 200

    run_with_broker(test, make_config(insecure=True, lambda_token=None, debugger_token=None))


def test_insecure_mode_still_checks_a_configured_token():
    async def test(broker):
        conn = await broker.debugger(token=None)
        assert (await closed(conn))[0] == CloseCode.UNAUTHORIZED
        lam = await broker.lambda_(token=None)  # no Lambda token configured
        await until(lambda: len(broker.registry) == 1)
        lam.close()

    run_with_broker(test, make_config(insecure=True, lambda_token=None))


def test_tls(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            key,
            "-out",
            cert,
        ],
        check=True,
        capture_output=True,
    )

    async def test(broker):
        assert broker.server.lambda_address.startswith("wss://")
        dbg = await broker.debugger(ca_certs=cert)
        assert_armed(await control(dbg), "fn")
        lam = await broker.lambda_(options=dict(ca_certs=cert))
        assert isinstance(await control(lam), Paired)
        response = await broker.http.fetch(broker.url("lambda", "/healthz").replace("wss", "https"), ca_certs=cert)
        assert json.loads(response.body) == {"status": "ok"}

    run_with_broker(test, make_config(certfile=cert, keyfile=key), scheme="wss")


# Logging --------------------------------------------------------------------


def test_log_lines_name_the_session_and_never_a_token(caplog):
    caplog.set_level(logging.DEBUG)
    marker = b"PAYLOAD-MARKER-1234"

    async def test(broker):
        refused = await broker.debugger(token="wrong-token-value")
        await closed(refused)
        lam = await broker.lambda_("fn", "req-log")
        await until(lambda: len(broker.registry) == 1)
        dbg = await broker.debugger()
        await control(dbg)
        await lam.write_message(marker, binary=True)
        assert await read(dbg) == marker
        await dbg.write_message(encode(Notice("NOTICE-MARKER")))
        lam.close(CloseCode.INVOCATION_DONE)
        await closed(dbg)
        await until(lambda: len(broker.registry) == 0)

    run_with_broker(test)
    lines = [record.getMessage() for record in caplog.records]
    text = "\n".join(lines)
    for secret in TOKENS + ("wrong-token-value", "Bearer", "Authorization", marker.decode(), "NOTICE-MARKER"):
        assert secret not in text
    broker_lines = [r.getMessage() for r in caplog.records if r.name == "broker_server"]
    events = {line.split()[0]: line for line in broker_lines}
    for event in ("lambda_waiting", "paired", "session_closed"):
        line = events["event=" + event]
        assert "function_id=fn" in line and "request_id=req-log" in line, line
    assert "bytes_to_debugger=%d" % len(marker) in events["event=session_closed"]
    assert "code=4001" in events["event=connection_refused"]
    assert "peer=127.0.0.1" in events["event=connection_accepted"]


# Configuration and command line ------------------------------------------------


def test_config_from_environ_and_validation(tmp_path):
    environ = {"BROKER_LAMBDA_TOKEN": "l-secret", "BROKER_DEBUGGER_TOKEN": "d-secret"}
    config = BrokerConfig.from_environ(environ, lambda_port=0, certfile=None)
    assert (config.lambda_token, config.debugger_token, config.lambda_port) == ("l-secret", "d-secret", 0)
    assert config.debugger_port == 9229 and config.max_frame_bytes == 1024 * 1024
    assert "secret" not in repr(config)
    assert config.validate() is config
    with pytest.raises(TypeError):
        BrokerConfig.from_environ(environ, no_such_setting=1)

    with pytest.raises(ConfigError, match="BROKER_LAMBDA_TOKEN and BROKER_DEBUGGER_TOKEN must be set"):
        BrokerConfig.from_environ({}).validate()
    with pytest.raises(ConfigError, match="BROKER_DEBUGGER_TOKEN must be set"):
        BrokerConfig.from_environ({"BROKER_LAMBDA_TOKEN": "x"}).validate()
    BrokerConfig.from_environ({}, insecure=True).validate()
    with pytest.raises(ConfigError, match="must differ"):
        BrokerConfig.from_environ(
            {"BROKER_LAMBDA_TOKEN": "same", "BROKER_DEBUGGER_TOKEN": "same"}, insecure=True
        ).validate()

    cert = tmp_path / "cert.pem"
    cert.write_text("not really")
    with pytest.raises(ConfigError, match="go together"):
        BrokerConfig.from_environ(environ, certfile=str(cert)).validate()
    with pytest.raises(ConfigError, match="no such file"):
        BrokerConfig.from_environ(environ, certfile=str(cert), keyfile=str(tmp_path / "missing.pem")).validate()
    with pytest.raises(ConfigError, match="max sessions"):
        BrokerConfig.from_environ(environ, max_sessions=0).validate()


def test_main_refuses_to_start_without_both_tokens(capsys):
    for environ in ({}, {"BROKER_DEBUGGER_TOKEN": "only-this-one"}):
        with pytest.raises(SystemExit) as exit_info:
            main(["--lambda-port", "0", "--debugger-port", "0"], environ=environ, prog="lambda-debugger broker")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("usage: lambda-debugger broker")
        assert "BROKER_LAMBDA_TOKEN" in err and "--insecure" in err
        assert "only-this-one" not in err


def test_main_refuses_equal_tokens(capsys):
    environ = {"BROKER_LAMBDA_TOKEN": "same-secret-value", "BROKER_DEBUGGER_TOKEN": "same-secret-value"}
    with pytest.raises(SystemExit) as exit_info:
        main(["--lambda-port", "0", "--debugger-port", "0"], environ=environ)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "must differ" in err
    assert "same-secret-value" not in err


def test_insecure_warning_is_louder_off_loopback():
    local = _insecure_warning(make_config(insecure=True, lambda_token=None, debugger_token=None, host="127.0.0.1"))
    exposed = _insecure_warning(make_config(insecure=True, lambda_token=None, debugger_token=None, host="0.0.0.0"))
    assert "IAM role" in local and "WITHOUT A TOKEN" in local
    assert "NOT ONLY ON LOOPBACK" not in local
    assert "NOT ONLY ON LOOPBACK" in exposed and "0.0.0.0" in exposed
    assert "still required" in _insecure_warning(make_config(insecure=True))


def test_module_runs_announces_and_stops_on_sigterm():
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("BROKER_LAMBDA_TOKEN", None)
    env.pop("BROKER_DEBUGGER_TOKEN", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "broker_server",
            "--insecure",
            "--host",
            "127.0.0.1",
            "--lambda-port",
            "0",
            "--debugger-port",
            "0",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        assert line.startswith("broker listening: lambda ws://127.0.0.1:"), line
        assert "/lambda/<function_id>, debugger ws://127.0.0.1:" in line
        port = int(line.split("debugger ws://127.0.0.1:")[1].split("/")[0])
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        process.terminate()
        assert process.wait(10) == 0
        assert "WITHOUT A TOKEN" in process.stderr.read()
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()
