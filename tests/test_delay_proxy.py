"""The WAN bench's delay proxy: it must really delay, in order, losing no byte."""

import os
import socket
import sys
import threading
import time

import pytest

from tests.support.chain import REPO

sys.path.insert(0, os.path.join(REPO, "bench"))
from delay_proxy import DelayProxy

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def echo_port():
    server = socket.create_server(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def round_trip(port, payload):
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        sock.sendall(payload)
        received = b""
        while len(received) < len(payload):
            received += sock.recv(65536)
        return time.perf_counter() - start, received


def test_every_byte_comes_back_in_order_a_round_trip_later(echo_port):
    proxy = DelayProxy(echo_port, 40)
    try:
        payload = os.urandom(1024 * 1024)
        elapsed, received = round_trip(proxy.port, payload)
        assert received == payload
        assert elapsed >= 0.080  # 40 ms each way, never less
        small, _ = round_trip(proxy.port, b"ping")
        assert 0.080 <= small < 1.0
    finally:
        proxy.stop()


def test_a_bandwidth_cap_slows_a_large_transfer(echo_port):
    proxy = DelayProxy(echo_port, 0, mbit=40)  # 5 MB/s each way
    try:
        payload = os.urandom(1024 * 1024)
        elapsed, received = round_trip(proxy.port, payload)
        assert received == payload
        assert elapsed >= 0.2  # 1 MiB at 5 MB/s
    finally:
        proxy.stop()
