"""Debuggers' ``--when`` filters: checked by the bridge and the broker,
evaluated against the invocation's event by the Lambda side.

A filter is a JMESPath expression (what the AWS CLI's ``--query`` speaks).
It matches when its result is truthy as JMESPath defines it: anything but
``null``, ``false``, an empty string, an empty list and an empty object
(so ``0`` matches). An expression that fails on an event counts as no
match; the function's log says so once per expression.

``jmespath`` is imported only when a filtered debugger is armed.
"""

import logging
from typing import Any, Dict, Iterable, Optional, Set

from lambda_debugger.wire.protocol import MAX_WHEN_CHARS

log = logging.getLogger("lambda_debugger")

#: Filters whose failure was already logged in this process.
_reported: Set[str] = set()

_compiled: Dict[str, Any] = {}


def truthy(value: Any) -> bool:
    """JMESPath's truthiness: ``0`` is true, empty containers are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (str, list, dict)):
        return bool(value)
    return True


def matches(when: str, event: Any) -> bool:
    """Whether ``event`` matches the filter ``when``; never raises."""
    try:
        expression = _compiled.get(when)
        if expression is None:
            import jmespath

            expression = jmespath.compile(when)
            if len(_compiled) < 256:
                _compiled[when] = expression
        return truthy(expression.search(event))
    except Exception as exc:  # a parse error, a type error on this event, no jmespath
        if when not in _reported:
            _reported.add(when)
            log.warning(
                "lambda_debugger: the debugger filter %r failed on an event (%s: %s); "
                "counted as no match (logged once)",
                when[:200],
                type(exc).__name__,
                str(exc).splitlines()[0][:160] if str(exc) else "",
            )
        return False


def evaluate(filters: Iterable[str], event: Any) -> Dict[str, bool]:
    """The result of each filter on ``event``."""
    return {when: matches(when, event) for when in filters}


def problem(when: str) -> Optional[str]:
    """Why ``when`` cannot be a filter, in the parser's words, or None."""
    if not when.strip():
        return "the expression is empty"
    if len(when) > MAX_WHEN_CHARS:
        return "the expression is longer than %d characters" % MAX_WHEN_CHARS
    if any(ord(c) < 32 and c not in " \t\n\r" for c in when):
        return "the expression holds control characters"
    import jmespath

    try:
        jmespath.compile(when)
    except jmespath.exceptions.JMESPathError as exc:
        return "not a valid JMESPath expression: %s" % " ".join(str(exc).split())
    except RecursionError:
        return "not a valid JMESPath expression: nested too deeply"
    except Exception as exc:  # the parser's own faults count as invalid too
        return "not a valid JMESPath expression: %s" % type(exc).__name__
    return None
