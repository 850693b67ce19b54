"""A fleet of three brokers behind a real nginx with the shipped
``deploy/nginx`` configuration: pairs meet on one broker, function IDs
spread, a dead broker ends only its own sessions, a reload moves only some
function IDs."""

import hashlib
import json
import os
import threading
import time
import urllib.request

import pytest
import websocket

from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, wait_until
from tests.support.fleet import Fleet

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

FUNCTION_IDS = ["fn-%02d" % i for i in range(30)]
CHUNK = 16 * 1024
END = b"END"  # shorter than any chunk


@pytest.fixture
def fleet(tmp_path):
    made = Fleet(tmp_path)
    yield made
    made.stop()


class Pair:
    """A debugger and an invocation of one function ID, paired through nginx."""

    def __init__(self, fleet, function_id):
        self.function_id = function_id
        self.debugger = websocket.create_connection(
            "ws://127.0.0.1:%d/debug/%s" % (fleet.nginx.debugger_port, function_id),
            header=protocol.bearer(DEBUGGER_TOKEN),
            timeout=10,
        )
        assert json.loads(self.debugger.recv())["type"] == "armed"
        self.function = websocket.create_connection(
            "ws://127.0.0.1:%d/lambda/%s" % (fleet.nginx.lambda_port, function_id),
            header=protocol.bearer(LAMBDA_TOKEN),
            timeout=10,
        )
        self.function.send(protocol.encode(protocol.Invocation("req-" + function_id, 4102444800000, wait_ms=60000)))
        for side in (self.debugger, self.function):
            paired = json.loads(side.recv())
            assert paired["type"] == "paired" and paired["function_id"] == function_id

    def stream(self, results, stop, chunks=None):
        """Send random chunks each way (``chunks`` of them, or until ``stop``
        is set), then an end mark; record whether both directions arrived
        byte-exact (True) or how the stream ended."""
        digests = {"sent": [hashlib.sha256(), hashlib.sha256()], "got": [hashlib.sha256(), hashlib.sha256()]}
        errors = []

        def send(ws, digest):
            try:
                count = 0
                while (chunks is None or count < chunks) and not stop.is_set():
                    data = os.urandom(CHUNK)
                    digest.update(data)
                    ws.send_binary(data)
                    count += 1
                ws.send_binary(END)  # text frames are the broker's control messages
            except Exception as exc:
                errors.append(type(exc).__name__)

        def receive(ws, digest):
            try:
                while True:
                    data = ws.recv()
                    if data == END:
                        return
                    digest.update(data)
            except Exception as exc:
                errors.append(type(exc).__name__)

        workers = [
            threading.Thread(target=send, args=(self.debugger, digests["sent"][0])),
            threading.Thread(target=send, args=(self.function, digests["sent"][1])),
            threading.Thread(target=receive, args=(self.function, digests["got"][0])),
            threading.Thread(target=receive, args=(self.debugger, digests["got"][1])),
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        exact = [d.hexdigest() for d in digests["sent"]] == [d.hexdigest() for d in digests["got"]]
        results[self.function_id] = errors[0] if errors else exact

    def close(self):
        for ws in (self.function, self.debugger):
            try:
                ws.close()
            except Exception:
                pass


def pair_all(fleet, function_ids):
    return {fid: Pair(fleet, fid) for fid in function_ids}


def placement(fleet, function_ids):
    where = fleet.where(function_ids)
    assert all(brokers is not None and len(brokers) == 1 for brokers in where.values()), where
    return {fid: next(iter(brokers)) for fid, brokers in where.items()}


def close_all(pairs):
    for pair in pairs.values():
        pair.close()


def test_pairs_meet_on_one_broker_spread_over_all_and_relay_byte_exact(fleet):
    pairs = pair_all(fleet, FUNCTION_IDS)
    try:
        placed = placement(fleet, FUNCTION_IDS)
        spread = {name: sum(1 for b in placed.values() if b == name) for name in set(placed.values())}
        assert set(spread) == {"broker-1", "broker-2", "broker-3"} and min(spread.values()) >= 3, spread
        results, stop = {}, threading.Event()
        threads = [threading.Thread(target=p.stream, args=(results, stop, 8)) for p in pairs.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert results == {fid: True for fid in FUNCTION_IDS}
    finally:
        close_all(pairs)


def test_a_dead_broker_ends_only_its_sessions_and_its_function_ids_move_on(fleet):
    pairs = pair_all(fleet, FUNCTION_IDS)
    try:
        placed = placement(fleet, FUNCTION_IDS)
        victim = fleet.brokers[1]
        doomed = {fid for fid, name in placed.items() if name == "broker-2"}
        assert doomed
        # Every pair streams; broker-2 dies in the middle.
        results, stop = {}, threading.Event()
        threads = [threading.Thread(target=p.stream, args=(results, stop)) for p in pairs.values()]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        victim.process.kill()
        victim.process.wait(5)
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(90)
        survivors = {fid: results.get(fid) for fid in FUNCTION_IDS if fid not in doomed}
        assert survivors == {fid: True for fid in survivors}, survivors
        assert all(results.get(fid) is not True for fid in doomed), {fid: results.get(fid) for fid in doomed}
    finally:
        close_all(pairs)
    wait_until(lambda: not any(b.sessions() for b in fleet.brokers if b is not victim), 10, "the old sessions to end")
    # New sessions of the dead broker's function IDs pair on the others.
    again = pair_all(fleet, sorted(doomed))
    try:
        moved = placement(fleet, sorted(doomed))
        assert set(moved.values()) <= {"broker-1", "broker-3"}
        results = {}
        for pair in again.values():
            pair.stream(results, threading.Event(), 2)
        assert results == {fid: True for fid in doomed}
    finally:
        close_all(again)


def test_a_fourth_broker_added_by_a_reload_takes_only_some_function_ids(fleet):
    pairs = pair_all(fleet, FUNCTION_IDS)
    before = placement(fleet, FUNCTION_IDS)
    close_all(pairs)
    wait_until(lambda: not any(b.sessions() for b in fleet.brokers), 10, "the sessions to end")
    fleet.brokers.append(fleet.add_broker())
    fleet.nginx.reload([b.lambda_port for b in fleet.brokers])
    pairs = pair_all(fleet, FUNCTION_IDS)
    try:
        after = placement(fleet, FUNCTION_IDS)
    finally:
        close_all(pairs)
    moved = {fid for fid in FUNCTION_IDS if before[fid] != after[fid]}
    # Consistent hashing: about a quarter move, and only to the new broker.
    assert 0 < len(moved) < len(FUNCTION_IDS) / 2, moved
    assert {after[fid] for fid in moved} == {"broker-4"}


def test_the_page_and_apis_answer_through_nginx(fleet):
    request = urllib.request.Request(
        "http://127.0.0.1:%d/api/status" % fleet.nginx.debugger_port,
        headers={"Authorization": "Bearer " + DEBUGGER_TOKEN},
    )
    answered = set()
    for _ in range(6):
        with urllib.request.urlopen(request, timeout=5) as response:
            answered.add(json.loads(response.read())["broker"])
    # Always the same broker (not round-robin): the page's tables hold still.
    assert len(answered) == 1 and answered <= {"broker-1", "broker-2", "broker-3"}
    # The Lambda-facing listener serves nothing of the developer side.
    for path in ("/api/status", "/", "/debug/fn-01"):
        try:
            urllib.request.urlopen("http://127.0.0.1:%d%s" % (fleet.nginx.lambda_port, path), timeout=5)
        except urllib.error.HTTPError as error:
            assert error.code == 404, path
        else:
            raise AssertionError(path + " answered on the Lambda side")


def test_sessions_across_the_fleet_names_the_broker_of_each(fleet, capsys):
    from lambda_debugger.developer.cli import main

    pairs = pair_all(fleet, FUNCTION_IDS[:9])
    try:
        placed = placement(fleet, FUNCTION_IDS[:9])
        brokers = ["127.0.0.1:%d" % b.debugger_port for b in fleet.brokers] + ["127.0.0.1:9"]  # one is gone
        argv = ["sessions", "--json", "--token", DEBUGGER_TOKEN]
        for address in brokers:
            argv += ["--broker", address]
        assert main(argv) == 1  # one broker did not answer
        captured = capsys.readouterr()
        listed = json.loads(captured.out)
        assert {s["function_id"]: s["broker"] for s in listed} == placed
        assert "127.0.0.1:9: cannot reach the broker" in captured.err
        assert main([a for a in argv[:-2] if a != "--json"]) == 0
        table = capsys.readouterr().out.splitlines()
        assert table[0].split()[:2] == ["BROKER", "FUNCTION"] and len(table) == 10
    finally:
        close_all(pairs)


def test_the_page_through_nginx_shows_every_brokers_sessions(tmp_path):
    from tests.support.browser import start_chromium, stop_chromium, wait_for_text

    fleet = Fleet(tmp_path, peers=True)
    driver = None
    pairs = {}
    try:
        pairs = pair_all(fleet, FUNCTION_IDS[:12])
        placed = placement(fleet, FUNCTION_IDS[:12])
        request = urllib.request.Request(
            "http://127.0.0.1:%d/api/state" % fleet.nginx.debugger_port,
            headers={"Authorization": "Bearer " + DEBUGGER_TOKEN},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            state = json.loads(response.read())
        assert {s["function_id"]: s["broker"] for s in state["sessions"]} == placed
        assert sorted(b["broker"] for b in state["brokers"]) == ["broker-1", "broker-2", "broker-3"]
        driver = start_chromium()
        driver.get("http://dev:%s@127.0.0.1:%d/" % (DEBUGGER_TOKEN, fleet.nginx.debugger_port))
        wait_for_text(driver, "#status", "across 3 brokers")
        shown = driver.execute_script(
            "return [...document.querySelectorAll('#active tbody tr')].map(r => [r.cells[0].textContent,"
            " r.cells[r.cells.length - 1].textContent, getComputedStyle(r.cells[r.cells.length - 1]).display])"
        )
        assert {fid: broker for fid, broker, _ in shown} == placed
        assert {display for _, _, display in shown} == {"table-cell"}
        # A broker that dies is named on the page; the others' sessions stay.
        fleet.brokers[2].process.kill()
        fleet.brokers[2].process.wait(5)
        wait_for_text(driver, "#status", "not answering: 127.0.0.1:%d" % fleet.brokers[2].debugger_port, timeout=10)
    finally:
        close_all(pairs)
        if driver is not None:
            stop_chromium(driver)
        fleet.stop()


def test_a_broker_merges_its_peers_state_and_names_the_silent_one():
    import socket

    from tests.support.chain import broker_in_thread

    silent = socket.socket()  # accepts, never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    other = broker_in_thread(name="other")
    own = broker_in_thread(
        name="own", peers=("127.0.0.1:%d" % other.debugger_port, "127.0.0.1:%d" % silent.getsockname()[1])
    )
    sockets = []
    try:
        for broker, function_id in ((own, "mine"), (other, "theirs")):
            ws = websocket.create_connection(
                "ws://127.0.0.1:%d/debug/%s" % (broker.debugger_port, function_id),
                header=protocol.bearer(DEBUGGER_TOKEN),
                timeout=10,
            )
            sockets.append(ws)
            assert json.loads(ws.recv())["type"] == "armed"

        def state(query=""):
            request = urllib.request.Request(
                "http://127.0.0.1:%d/api/state%s" % (own.debugger_port, query),
                headers={"Authorization": "Bearer " + DEBUGGER_TOKEN},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read()), time.time()

        merged, received = state()
        assert {s["function_id"]: s["broker"] for s in merged["sessions"]} == {"mine": "own", "theirs": "other"}
        brokers = {b["broker"]: b["ok"] for b in merged["brokers"]}
        assert brokers == {"own": True, "other": True, "127.0.0.1:%d" % silent.getsockname()[1]: False}
        assert received - merged["now"] < 0.5  # read after the 2 s the silent peer took
        local, _ = state("?local=1")  # what peers ask each other: no fan-out
        assert [s["function_id"] for s in local["sessions"]] == ["mine"] and "brokers" not in local
    finally:
        for ws in sockets:
            ws.close()
        own.stop()
        other.stop()
        silent.close()
