"""The time arithmetic of a debug attempt, alone."""

import pytest

from lambda_debugger.lambda_side.budget import ATTACH_S, CLOSE_ALLOWANCE_S, WaitBudget

pytestmark = pytest.mark.timeout(10)


def plan(remaining_ms, wait_max_ms=60000, connect_timeout_s=1.0):
    return WaitBudget.plan(
        arrived=100.0, remaining_ms=remaining_ms, wait_max_ms=wait_max_ms, connect_timeout_s=connect_timeout_s
    )


def test_a_long_invocation_waits_its_full_wait_and_keeps_ten_percent():
    budget = plan(300_000)
    assert budget.wait_ms == 60000
    assert budget.latest_start == 100.0 + 270.0  # 10 % of 300 s kept for the handler
    assert budget.wait_end == 160.0
    assert budget.possible


def test_the_wait_is_cut_so_that_the_handler_keeps_its_share():
    budget = plan(60_000)
    assert budget.wait_ms == 54000
    assert budget.latest_start == 154.0
    assert budget.wait_end == pytest.approx(154.0 - CLOSE_ALLOWANCE_S)  # the broker is closed before it


def test_without_a_wait_the_broker_gets_one_connect_timeout():
    budget = plan(300_000, wait_max_ms=0)
    assert budget.wait_ms == 0
    assert budget.wait_end == 101.0
    assert budget.connect_timeout(100.5, 1.0) == pytest.approx(0.5)
    assert budget.connect_timeout(101.5, 1.0) == 0.05  # never zero: the dial still gets a chance


@pytest.mark.parametrize("remaining_ms", [1000, 900, 0])
def test_one_second_or_less_is_the_handlers_alone(remaining_ms):
    assert not plan(remaining_ms).possible


def test_a_paired_debugger_gets_a_fair_attach_time_never_past_the_latest_start():
    long = plan(300_000)
    assert long.attach_by(140.0) == 140.0 + ATTACH_S
    assert long.attach_by(100.0) == long.wait_end  # paired early: the wait's end is later
    short = plan(10_000)
    assert short.attach_by(101.0) == short.latest_start == 109.0
