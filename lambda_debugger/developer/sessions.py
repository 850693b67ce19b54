"""``lambda-debugger sessions``: what the broker (or a fleet of them) holds now."""

import json
import ssl
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Optional, Sequence, Tuple

from lambda_debugger.wire import protocol


class SessionsError(Exception):
    """The broker could not be asked; the message says why.

    Attributes:
        kind: what failed, one of the ``UNREACHABLE``, ``TLS``, ``TOKEN``
            and ``ANSWER`` constants of this module.
    """

    def __init__(self, message: str, kind: str = "answer"):
        super().__init__(message)
        self.kind = kind


#: What a :class:`SessionsError` says failed.
UNREACHABLE = "unreachable"  # no connection, or no answer in time
TLS = "tls"  # the broker's certificate does not verify
TOKEN = "token"  # the debugger token was refused
ANSWER = "answer"  # an answer that is not a session list


def api_url(broker: str, path: str = "/api/sessions") -> str:
    """The HTTP(S) URL of ``path`` on the broker's debugger port."""
    url = protocol.broker_url(broker, protocol.DEFAULT_DEBUGGER_PORT, path)
    return "http" + url[2:]  # ws:// -> http://, wss:// -> https://


def fetch_sessions(broker: str, token: Optional[str], *, timeout: float = 5.0, context=None) -> List[dict]:
    """Return the broker's session list.

    Raises:
        SessionsError: unreachable broker, refused token or a bad answer.
    """
    data = _get_json(broker, "/api/sessions", token, timeout, context)
    sessions = data.get("sessions", data) if isinstance(data, dict) else data
    if not isinstance(sessions, list):
        raise SessionsError("the broker's answer has no session list")
    return sessions


def fetch_status(broker: str, token: Optional[str], *, timeout: float = 5.0, context=None) -> dict:
    """The broker's ``/api/status`` (its name, and the warm containers'
    control connections per function ID); empty for a broker older than it."""
    try:
        data = _get_json(broker, "/api/status", token, timeout, context)
    except SessionsError:
        return {}
    return data if isinstance(data, dict) else {}


def fetch_fleet(
    brokers: Sequence[str], token: Optional[str], *, timeout: float = 5.0, context=None
) -> Tuple[List[dict], List[str], Dict[str, int]]:
    """Ask every broker at once; return their sessions merged (each with
    the ``broker`` that holds it), a line for each broker that failed, and
    the control connections per function ID over all of them."""

    def ask(broker: str) -> Tuple[List[dict], Optional[str], dict]:
        try:
            sessions = fetch_sessions(broker, token, timeout=timeout, context=context)
        except SessionsError as exc:
            return [], "%s: %s" % (broker, exc), {}
        status = fetch_status(broker, token, timeout=timeout, context=context)
        name = status.get("broker") if isinstance(status.get("broker"), str) and status.get("broker") else broker
        return [dict(session, broker=name) for session in sessions], None, status

    with ThreadPoolExecutor(max_workers=min(16, len(brokers)) or 1) as pool:
        answers = list(pool.map(ask, brokers))
    merged = [session for sessions, _, _ in answers for session in sessions]
    merged.sort(key=lambda session: session.get("since") or 0)
    watching: Dict[str, int] = {}
    for _, _, status in answers:
        for function_id, count in (status.get("control_connections_by_function") or {}).items():
            watching[function_id] = watching.get(function_id, 0) + count
    return merged, [problem for _, problem, _ in answers if problem], watching


def format_watching(watching: Dict[str, int]) -> str:
    """A line naming the function IDs whose warm containers keep a control
    connection (always on), or "" when none does."""
    if not watching:
        return ""
    return "always on, warm containers connected: " + ", ".join(
        "%s %d" % (function_id, count) for function_id, count in sorted(watching.items())
    )


def _get_json(broker: str, path: str, token: Optional[str], timeout: float, context):
    try:
        url = api_url(broker, path)
    except protocol.ProtocolError as exc:
        raise SessionsError(str(exc)) from None
    request = urllib.request.Request(url, headers=protocol.bearer(token))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise SessionsError("the broker refused the debugger token (HTTP 401)", TOKEN) from None
        raise SessionsError("the broker answered HTTP %d at %s" % (exc.code, url)) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise SessionsError(
                "the broker's TLS certificate does not verify (%s); give --ca-file with the CA"
                " that signed it" % (reason.verify_message or reason),
                TLS,
            ) from None
        if isinstance(reason, ssl.SSLError):
            raise SessionsError("TLS with the broker at %s failed: %s" % (url, reason), TLS) from None
        raise SessionsError("cannot reach the broker at %s: %s" % (url, reason), UNREACHABLE) from None
    except ValueError:
        raise SessionsError("the broker's answer is not JSON") from None


def format_sessions(sessions: List[dict], now: Optional[float] = None) -> str:
    """A table of sessions for the terminal; DEBUGGERS counts the debuggers
    paired with the invocation so far (more than 1 after a re-attach), WHEN
    is the ``--when`` filter of the debugger armed or attached."""
    if not sessions:
        return "no sessions"
    now = time.time() if now is None else now
    fleet = any("broker" in s for s in sessions)
    header: Tuple[str, ...] = ("FUNCTION ID", "STATE", "REQUEST ID", "FUNCTION", "AGE", "TIME LEFT", "DEBUGGERS")
    header += ("WHEN",)
    rows: List[Tuple[str, ...]] = [(("BROKER",) if fleet else ()) + header]
    for s in sessions:
        deadline = s.get("deadline_ms") or 0
        left = "%.0f s" % max(0, deadline / 1000.0 - now) if deadline else "-"
        age = "%.0f s" % max(0, now - s["since"]) if s.get("since") else "-"
        rows.append(
            ((str(s.get("broker") or "-"),) if fleet else ())
            + (
                str(s.get("function_id", "")),
                str(s.get("state", "")),
                str(s.get("request_id") or "-"),
                str(s.get("function_name") or "-"),
                age,
                left,
                str(s.get("attachments", 0)),
                str(s.get("when") or "-"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
