"""The callable that takes the handler's place.

This module's file name matters: the Lambda runtime drops the leading
traceback entries whose file ends in ``/bootstrap.py`` (its own) before it
reports ``stackTrace``. Every frame of ours that an exception can pass
through lives here, so an error reaches the runtime with exactly the
handler's frames, as it would without this package.
"""

import functools
import logging

log = logging.getLogger("lambda_debugger")


def make_proxy(handler, config):
    """Wrap ``handler`` so that each invocation may be debugged.

    The proxy keeps the handler's name and docstring, and exposes the
    original as ``__wrapped__``.
    """

    @functools.wraps(handler)
    def lambda_debugger_proxy(event, context):
        session, outcome = _debug(config, handler, event, context)
        if outcome is None:
            return handler(event, context)
        # OutcomeKind values, compared as the strings they equal: importing
        # the proxy here would load it on every cold start.
        if outcome.kind == "value":
            return outcome.value
        if outcome.kind == "json":
            return _raw_json(outcome.value)
        from lambda_debugger.lambda_side import errors

        if outcome.kind == "error":
            raise errors.rebuild(outcome.error)
        raise errors.exit_error(session.request_id, outcome.exitcode)

    lambda_debugger_proxy.lambda_debugger_config = config  # type: ignore[attr-defined]
    return lambda_debugger_proxy


def _debug(config, handler, event, context):
    """Run the debug session; any fault of ours means "run it here"."""
    from lambda_debugger.lambda_side.proxy import DebugSession

    session = None
    try:
        session = DebugSession(config, handler, event, context)
        return session, session.run()
    except Exception:
        if session is not None and session.started:
            # Never run the handler twice: its outcome comes from the child.
            log.exception("debug session failed after the handler started; waiting for its outcome")
            return session, session.wait_without_relay()
        log.exception("debug session failed; the handler runs normally")
        return session, None


def _raw_json(text):
    """A value the runtime's JSON encoder writes out verbatim."""
    try:
        from simplejson import RawJSON
    except ImportError:
        import json

        return json.loads(text)
    return RawJSON(text)
