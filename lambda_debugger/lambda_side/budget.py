"""The time arithmetic of one invocation's debug attempt, without I/O.

An invocation arrives with some time left. The wait for a debugger never
takes more than ``DEBUGGER_WAIT_MAX`` and always leaves the handler the
larger of 1 s and 10 % of that time; connecting, waiting and closing the
broker connection all fit before the handler's latest start.
"""

from dataclasses import dataclass

from lambda_debugger.lambda_side.config import handler_reserve_ms, wait_budget_ms

#: Time left for closing the broker connection before the handler must start.
CLOSE_ALLOWANCE_S = 0.2

#: A paired debugger has at least this long to finish attaching (initialize,
#: attach, breakpoints, configurationDone), within the handler's share.
ATTACH_S = 30.0


@dataclass(frozen=True)
class WaitBudget:
    """When each step of a debug attempt must be over, as ``time.monotonic()``
    values.

    Attributes:
        arrived: when the invocation reached the proxy.
        remaining_ms: the time the invocation had then.
        wait_ms: how long it may wait for a debugger (0: it pairs only with
            a debugger already armed), as announced to the broker.
        latest_start: the handler starts by then, whatever happens.
        wait_end: the wait for a debugger ends then.
    """

    arrived: float
    remaining_ms: int
    wait_ms: int
    latest_start: float
    wait_end: float

    @classmethod
    def plan(cls, *, arrived: float, remaining_ms: int, wait_max_ms: int, connect_timeout_s: float) -> "WaitBudget":
        """The budget of an invocation that arrived at ``arrived`` with
        ``remaining_ms`` left. Without a wait the broker still gets one
        connect timeout to answer."""
        wait_ms = wait_budget_ms(wait_max_ms, remaining_ms)
        latest_start = arrived + (remaining_ms - handler_reserve_ms(remaining_ms)) / 1000.0
        wait_end = min(
            arrived + (wait_ms / 1000.0 if wait_ms else connect_timeout_s),
            latest_start - CLOSE_ALLOWANCE_S,
        )
        return cls(arrived, remaining_ms, wait_ms, latest_start, wait_end)

    @property
    def possible(self) -> bool:
        """Whether any time is left to look for a debugger at all."""
        return self.wait_end > self.arrived

    def connect_timeout(self, now: float, connect_timeout_s: float) -> float:
        """How long dialling the broker may take from ``now``."""
        return max(0.05, min(connect_timeout_s, self.wait_end - now))

    def attach_by(self, now: float) -> float:
        """When a debugger paired at ``now`` must have finished attaching: a
        fair time, never past the handler's latest start."""
        return min(self.latest_start, max(self.wait_end, now + ATTACH_S))
