"""The registry's control connections and ``--when`` filters, with fake
peers and fake time."""

import pytest

from broker_server.registry import Registry, SessionState
from lambda_debugger.wire.protocol import Armed, CloseCode, Consider, Debuggers, Paired
from tests.test_registry import T0, FakePeer, invocation

pytestmark = pytest.mark.timeout(30)

ALICE = "user == 'alice'"
BOB = "user == 'bob'"


@pytest.fixture
def registry():
    return Registry(max_sessions=10, max_sessions_per_function=10, heartbeat_s=20, watcher_max_age_s=3600)


def armed_lists(peer):
    """The armed lists a control connection was sent, in order."""
    return [[entry["when"] for entry in m.armed] for m in peer.sent if isinstance(m, Debuggers)]


# Control connections --------------------------------------------------------


def test_a_watcher_hears_the_armed_debuggers_at_once_and_on_every_change(registry):
    registry.debugger_arrived(FakePeer("d-early"), "fn", T0, when=ALICE)
    watcher = FakePeer("container")
    assert registry.watcher_arrived(watcher, "fn", T0)
    assert armed_lists(watcher) == [[ALICE]]
    late = FakePeer("d-late")
    registry.debugger_arrived(late, "fn", T0 + 1)
    assert armed_lists(watcher)[-1] == [ALICE, None]
    # The unfiltered debugger pairs with an invocation: it is armed no more.
    registry.lambda_arrived(FakePeer("lambda"), "fn", invocation(matches={ALICE: False}), T0 + 2)
    assert armed_lists(watcher)[-1] == [ALICE]
    registry.peer_left(registry.sessions("fn")[0].debugger_peer)
    assert armed_lists(watcher)[-1] == []
    assert watcher.closed is None
    # Another function ID's debuggers are not this watcher's business.
    registry.debugger_arrived(FakePeer("other"), "other-fn", T0 + 3)
    assert armed_lists(watcher)[-1] == []


def test_a_watcher_hears_each_filter_once_named_by_its_oldest_debugger(registry):
    watcher = FakePeer("container")
    registry.watcher_arrived(watcher, "fn", T0)
    for name, when in (("d1", ALICE), ("d2", None), ("d3", ALICE), ("d4", None), ("d5", BOB)):
        registry.debugger_arrived(FakePeer(name), "fn", T0, when=when)
    last = [m for m in watcher.sent if isinstance(m, Debuggers)][-1]
    assert last.armed == [{"id": 1, "when": ALICE}, {"id": 2, "when": None}, {"id": 5, "when": BOB}]


def test_the_filters_of_one_function_id_are_bounded(registry):
    registry.max_sessions, registry.max_sessions_per_function = 1000, 1000
    for i in range(32):
        assert registry.debugger_arrived(FakePeer("d%d" % i), "fn", T0, when="user == '%d'" % i)
    assert registry.debugger_arrived(FakePeer("same"), "fn", T0, when="user == '0'")  # an armed filter: fine
    assert registry.debugger_arrived(FakePeer("anyone"), "fn", T0)  # no filter: fine
    refused = FakePeer("one-too-many")
    assert registry.debugger_arrived(refused, "fn", T0, when="user == 'x'") is None
    assert refused.closed[0] == CloseCode.TOO_MANY_SESSIONS and "--when filters" in refused.closed[1]
    # Few but long filters hit the size bound first (JSON escapes count).
    wide = Registry()
    long_filter = "user == '%s'" % ("é" * 490)  # 6 bytes each in JSON
    taken = 0
    while wide.debugger_arrived(FakePeer("w%d" % taken), "wide", T0, when=long_filter + str(taken)):
        taken += 1
    assert 1 <= taken < 8


def test_the_heartbeat_resends_and_renews_old_connections(registry):
    old, young = FakePeer("old"), FakePeer("young")
    registry.watcher_arrived(old, "fn", T0)
    registry.watcher_arrived(young, "fn", T0 + 3000)
    registry.heartbeat(T0 + 3000)
    assert len(old.sent) == 2 and len(young.sent) == 2
    registry.heartbeat(T0 + 3010)  # before the next heartbeat: nothing
    assert len(young.sent) == 2
    registry.heartbeat(T0 + 3600)
    assert old.closed[0] == CloseCode.NORMAL and "renewed" in old.closed[1]
    assert len(young.sent) == 3 and young.closed is None
    assert registry.watcher_count() == 1 and registry.watchers_by_function() == {"fn": 1}


def test_a_watcher_limit_refuses_with_a_reason(registry):
    registry.max_watchers = 2
    for name in ("a", "b"):
        assert registry.watcher_arrived(FakePeer(name), "fn", T0)
    refused = FakePeer("c")
    assert not registry.watcher_arrived(refused, "fn", T0)
    assert refused.closed[0] == CloseCode.TOO_MANY_SESSIONS and refused.sent == []
    assert registry.watcher_count() == 2


def test_watchers_leave_cleanly_and_are_closed_with_the_broker(registry):
    a, b = FakePeer("a"), FakePeer("b")
    registry.watcher_arrived(a, "fn", T0)
    registry.watcher_arrived(b, "fn", T0)
    registry.watcher_left(a)
    registry.watcher_left(a)  # twice: harmless
    assert registry.watchers_by_function() == {"fn": 1}
    registry.close_all(CloseCode.GOING_AWAY, "broker stopping")
    assert b.closed == (CloseCode.GOING_AWAY, "broker stopping")
    assert registry.watcher_count() == 0 and registry.watchers_by_function() == {}


# Filters ---------------------------------------------------------------------


def test_a_filtered_debugger_takes_only_an_invocation_that_matched(registry):
    debugger = FakePeer("debugger")
    registry.debugger_arrived(debugger, "fn", T0, when=ALICE)
    assert debugger.sent == [Armed(function_id="fn", expires_ms=int((T0 + 900) * 1000), when=ALICE)]
    bob = FakePeer("bob")
    assert registry.lambda_arrived(bob, "fn", invocation("r-bob", wait_ms=0, matches={ALICE: False}), T0) is None
    assert bob.closed[0] == CloseCode.NOT_WAITING
    alice = FakePeer("alice")
    session = registry.lambda_arrived(alice, "fn", invocation("r-alice", wait_ms=0, matches={ALICE: True}), T0)
    assert session.state is SessionState.PAIRED and session.when == ALICE
    paired = debugger.sent[-1]
    assert isinstance(paired, Paired) and paired.request_id == "r-alice" and paired.when == ALICE
    assert alice.sent == [paired]
    assert registry.snapshot()[0]["when"] == ALICE


def test_an_invocation_that_did_not_evaluate_a_filter_is_asked_while_it_waits(registry):
    alice = FakePeer("alice")
    registry.lambda_arrived(alice, "fn", invocation("r-alice", matches={}), T0)
    debugger = FakePeer("debugger")
    session = registry.debugger_arrived(debugger, "fn", T0 + 1, when=ALICE)
    assert session.state is SessionState.ARMED
    assert alice.sent == [Consider(when=ALICE)]
    # Asked once, however many debuggers share the filter.
    registry.debugger_arrived(FakePeer("twin"), "fn", T0 + 1, when=ALICE)
    assert alice.sent == [Consider(when=ALICE)]
    registry.lambda_considered(alice, ALICE, True, T0 + 2)
    waiting = registry.session_of(alice)
    assert waiting.state is SessionState.PAIRED and waiting.debugger_peer is debugger  # the oldest
    assert isinstance(debugger.sent[-1], Paired) and debugger.sent[-1].when == ALICE


def test_an_invocation_that_does_not_match_keeps_waiting_and_is_not_asked_again(registry):
    bob = FakePeer("bob")
    registry.lambda_arrived(bob, "fn", invocation("r-bob", matches={}), T0)
    registry.debugger_arrived(FakePeer("debugger"), "fn", T0, when=ALICE)
    registry.lambda_considered(bob, ALICE, False, T0 + 1)
    assert registry.session_of(bob).state is SessionState.WAITING
    registry.debugger_arrived(FakePeer("again"), "fn", T0 + 2, when=ALICE)
    assert bob.sent == [Consider(when=ALICE)]
    # An unfiltered debugger still takes it.
    anyone = FakePeer("anyone")
    assert registry.debugger_arrived(anyone, "fn", T0 + 3).state is SessionState.PAIRED


def test_a_lambda_side_older_than_filters_never_pairs_with_a_filtered_debugger(registry):
    old = FakePeer("old-lambda")
    registry.lambda_arrived(old, "fn", invocation("r-old"), T0)  # no matches field
    assert registry.debugger_arrived(FakePeer("filtered"), "fn", T0, when=ALICE).state is SessionState.ARMED
    assert old.sent == []  # never asked: it could not answer
    assert registry.debugger_arrived(FakePeer("anyone"), "fn", T0).state is SessionState.PAIRED


def test_debuggers_with_different_filters_each_get_their_own_invocations(registry):
    for name, when in (("d-alice", ALICE), ("d-bob", BOB), ("d-any", None)):
        registry.debugger_arrived(FakePeer(name), "fn", T0, when=when)
    both = {ALICE: False, BOB: True}
    bob = registry.lambda_arrived(FakePeer("bob"), "fn", invocation("r-bob", wait_ms=0, matches=both), T0 + 1)
    assert bob.debugger_peer.address == "d-bob"
    carol = registry.lambda_arrived(
        FakePeer("carol"), "fn", invocation("r-carol", wait_ms=0, matches={ALICE: False, BOB: False}), T0 + 2
    )
    assert carol.debugger_peer.address == "d-any"
    alice = registry.lambda_arrived(
        FakePeer("alice"), "fn", invocation("r-alice", wait_ms=0, matches={ALICE: True, BOB: False}), T0 + 3
    )
    assert alice.debugger_peer.address == "d-alice"


def test_a_late_answer_is_dropped(registry):
    alice = FakePeer("alice")
    registry.lambda_arrived(alice, "fn", invocation("r-alice", matches={}), T0)
    registry.debugger_arrived(FakePeer("filtered"), "fn", T0, when=ALICE)
    registry.debugger_arrived(FakePeer("anyone"), "fn", T0)  # pairs first
    registry.lambda_considered(alice, ALICE, True, T0 + 1)
    session = registry.session_of(alice)
    assert session.debugger_peer.address == "anyone" and session.attachments == 1
    # The filtered debugger still waits.
    assert [s.state for s in registry.sessions("fn")] == [SessionState.PAIRED, SessionState.ARMED]
    registry.lambda_considered(FakePeer("stranger"), ALICE, True, T0 + 1)  # unknown peer: ignored


def test_a_detached_invocation_is_reattached_only_by_a_debugger_that_wants_it(registry):
    lam, first = FakePeer("lambda"), FakePeer("first")
    registry.lambda_arrived(lam, "fn", invocation("r-1", matches={ALICE: False}), T0)
    registry.debugger_arrived(first, "fn", T0)
    registry.peer_left(first, now=T0 + 1)
    filtered = FakePeer("filtered")
    registry.debugger_arrived(filtered, "fn", T0 + 2, when=ALICE)
    assert registry.lambda_detached(lam, T0 + 3)
    assert registry.session_of(lam).state is SessionState.DETACHED
    assert registry.session_of(filtered).state is SessionState.ARMED
    keen = FakePeer("keen")
    registry.debugger_arrived(keen, "fn", T0 + 4, when=BOB)
    assert lam.sent[-1] == Consider(when=BOB)
    registry.lambda_considered(lam, BOB, True, T0 + 5)
    session = registry.session_of(lam)
    assert session.state is SessionState.PAIRED and session.debugger_peer is keen and session.attachments == 2


# What the web page shows of ended invocations ------------------------------------


def test_ended_invocations_are_remembered_with_how_they_ended(registry):
    # Debugged, and the handler returned.
    lam, dbg = FakePeer("l1"), FakePeer("d1")
    registry.lambda_arrived(lam, "fn", invocation("r-debugged"), T0)
    registry.debugger_arrived(dbg, "fn", T0)
    registry.handler_ended(lam, "the handler returned", 0)
    registry.peer_left(lam, CloseCode.INVOCATION_DONE, now=T0)
    # Debugged, and the handler's process died.
    lam2, dbg2 = FakePeer("l2"), FakePeer("d2")
    registry.lambda_arrived(lam2, "fn", invocation("r-crashed"), T0)
    registry.debugger_arrived(dbg2, "fn", T0)
    registry.handler_ended(dbg2, "a debugger cannot say this", 9)  # only the Lambda side may
    registry.handler_ended(lam2, "the handler's process ended (exit status 3)", 3)
    registry.peer_left(lam2, CloseCode.INVOCATION_DONE, now=T0)
    # Nobody came: it stopped waiting, or its sandbox went without a word.
    lam3 = FakePeer("l3")
    registry.lambda_arrived(lam3, "fn", invocation("r-normal"), T0)
    registry.peer_left(lam3, CloseCode.NOT_WAITING, now=T0)
    lam6 = FakePeer("l6")
    registry.lambda_arrived(lam6, "fn", invocation("r-lost"), T0)
    registry.peer_left(lam6, None, now=T0)
    # Its deadline passed under the debugger.
    lam4, dbg4 = FakePeer("l4"), FakePeer("d4")
    registry.lambda_arrived(lam4, "fn", invocation("r-late", deadline_ms=int(T0 * 1000)), T0 - 60)
    registry.debugger_arrived(dbg4, "fn", T0 - 60)
    registry.peer_left(lam4, now=T0)
    # An armed debugger that left is no invocation's story.
    registry.peer_left(registry.debugger_arrived(FakePeer("d5"), "fn", T0).debugger_peer)
    how = [(e["request_id"], e["outcome"], e["detail"]) for e in registry.recent]
    assert how == [
        ("r-late", "timed out", "the invocation reached its deadline"),
        ("r-lost", "lost", "its Lambda side went away without closing (sandbox stopped or network cut)"),
        ("r-normal", "ran normally", "no debugger attached; the handler ran without one"),
        ("r-crashed", "crashed", "the handler's process ended (exit status 3)"),
        ("r-debugged", "debugged", "the handler returned"),
    ]
    assert registry.recent[3]["attachments"] == 1 and registry.recent[2]["attachments"] == 0


def test_only_the_last_ended_invocations_are_kept(registry):
    for i in range(60):
        lam = FakePeer("l%d" % i)
        registry.lambda_arrived(lam, "fn", invocation("r-%d" % i), T0)
        registry.peer_left(lam, CloseCode.NOT_WAITING, now=T0)
    assert len(registry.recent) == 50 and registry.recent[0]["request_id"] == "r-59"
