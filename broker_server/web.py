"""HTTP on the debugger port: health check, APIs and the web page.

``/healthz`` is open (on both ports) and says nothing but "ok". The APIs and
the page need the debugger token, as a Bearer token or as the password of
HTTP Basic so that a browser can log in; the page then calls the API with the
credentials the browser keeps. The page's script and style sheet
(``/ui/...``) hold no data and are served to anyone, so that a page that
failed to log in can still say why.
"""

import asyncio
import base64
import binascii
import json
import logging
import os
import time
from typing import Optional

from tornado.httpclient import AsyncHTTPClient
from tornado.web import RequestHandler

from lambda_debugger.wire.protocol import DEFAULT_DEBUGGER_PORT, bearer, broker_url, token_from_header

from .handlers import BrokerState, token_accepted
from .logfmt import log_event
from .registry import RECENT_ENDED

BASIC_REALM = 'Basic realm="lambda-debugger"'

#: How long the page's broker waits for each ``--peer`` broker's state.
PEER_TIMEOUT_S = 2.0

#: Sent by the web page with its API calls.
PAGE_HEADER = "X-Lambda-Debugger-Page"


def basic_password(header: Optional[str]) -> Optional[str]:
    """Return the password of an ``Authorization: Basic`` header value."""
    scheme, _, value = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    _, colon, password = decoded.partition(":")
    return password if colon and password else None


class HealthHandler(RequestHandler):
    """``GET /healthz``: for load balancers; says nothing about sessions."""

    def get(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.write({"status": "ok"})


class _DebuggerTokenRequired(RequestHandler):
    """Requires the debugger token as a Bearer token or a Basic password.

    Basic lets a browser log in to the web page (any user name); the browser
    then sends it again with the page's API calls.
    """

    def initialize(self, state: BrokerState) -> None:
        self.state = state

    def prepare(self) -> None:
        header = self.request.headers.get("Authorization")
        presented = token_from_header(header) or basic_password(header)
        config = self.state.config
        if not token_accepted(config.debugger_token, presented, config.insecure):
            log_event("http_refused", logging.WARNING, path=self.request.path, peer=self.request.remote_ip, status=401)
            self.set_status(401)
            # The page's own calls get no challenge: the browser would put
            # up its login prompt over the page, which says what to do.
            if not self.request.headers.get(PAGE_HEADER):
                self.set_header("WWW-Authenticate", BASIC_REALM)
            if self.request.path == "/":
                # What a browser shows when the login was cancelled or wrong.
                _page_headers(self)
                self.finish(REFUSED_HTML)
                return
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("debugger token missing or wrong\n")
            return
        self.set_header("Cache-Control", "no-store")


class SessionsApi(_DebuggerTokenRequired):
    """``GET /api/sessions``: the registry's snapshot, a JSON list."""

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(self.state.registry.snapshot(), separators=(",", ":")))


class StatusApi(_DebuggerTokenRequired):
    """``GET /api/status``: counts of what the broker holds, including the
    warm containers' control connections per function ID."""

    def get(self) -> None:
        registry = self.state.registry
        self.set_header("Content-Type", "application/json; charset=utf-8")
        body = {
            "broker": self.state.name,
            "sessions": len(registry),
            "control_connections": registry.watcher_count(),
            "control_connections_by_function": registry.watchers_by_function(),
        }
        self.finish(json.dumps(body, separators=(",", ":")))


class StateApi(_DebuggerTokenRequired):
    """``GET /api/state``: everything the web page shows, in one answer:
    the broker's clock, open sessions, the last invocations that ended and
    the control connections per function ID. With ``--peer`` brokers, what
    they hold too (asked at once, each within ``PEER_TIMEOUT_S``), every
    session and ended invocation naming its ``broker``; ``?local=1`` asks
    for this broker's alone (what peers ask each other)."""

    async def get(self) -> None:
        body = self._local()
        peers = self.state.config.peers
        if peers and not self.get_query_argument("local", None):
            answers = await asyncio.gather(*(self._ask(peer) for peer in peers))
            body["brokers"] = [{"broker": body["broker"], "ok": True}]
            for peer, (state, problem) in zip(peers, answers, strict=True):
                if state is None:
                    body["brokers"].append({"broker": peer, "ok": False, "problem": problem})
                    continue
                body["brokers"].append({"broker": state.get("broker") or peer, "ok": True})
                body["sessions"] += state.get("sessions", [])
                body["ended"] += state.get("ended", [])
                for function_id, count in state.get("control_connections_by_function", {}).items():
                    counts = body["control_connections_by_function"]
                    counts[function_id] = counts.get(function_id, 0) + count
            body["sessions"].sort(key=lambda s: s.get("since") or 0)
            body["ended"].sort(key=lambda e: e.get("ended") or 0, reverse=True)
            del body["ended"][RECENT_ENDED:]
        body["now"] = time.time()  # after the peers: the page sets its clock by it
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body, separators=(",", ":")))

    def _local(self) -> dict:
        registry, name = self.state.registry, self.state.name
        return {
            "broker": name,
            "now": time.time(),
            "sessions": [dict(s, broker=name) for s in registry.snapshot()],
            "ended": [dict(e, broker=name) for e in registry.recent],
            "control_connections_by_function": registry.watchers_by_function(),
        }

    async def _ask(self, peer: str):
        """A peer's own state, or None and why not."""
        url = "http" + broker_url(peer, DEFAULT_DEBUGGER_PORT, "/api/state?local=1")[2:]
        try:
            response = await AsyncHTTPClient().fetch(
                url, headers=bearer(self.state.config.debugger_token), request_timeout=PEER_TIMEOUT_S
            )
            state = json.loads(response.body)
            if not isinstance(state, dict) or not isinstance(state.get("sessions"), list):
                return None, "not a broker's answer"
            return state, None
        except Exception as exc:
            log_event("peer_unreachable", logging.WARNING, peer=peer, error=type(exc).__name__)
            return None, str(exc)[:120] or type(exc).__name__


class IndexPage(_DebuggerTokenRequired):
    """``GET /``: the live page (``broker_server/ui``)."""

    def get(self) -> None:
        _page_headers(self)
        self.finish(INDEX_HTML)


UI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ui")
UI_FILES = {"page.js": "text/javascript; charset=utf-8", "page.css": "text/css; charset=utf-8"}


class NoIcon(RequestHandler):
    """``GET /favicon.ico``: nothing, said briefly (browsers ask for it)."""

    def get(self) -> None:
        self.set_status(204)
        self.finish()


class UiFile(RequestHandler):
    """``GET /ui/page.js`` and ``/ui/page.css``: the page's own script and
    style, the only things it loads."""

    def get(self, name: str) -> None:
        kind = UI_FILES.get(name)
        if kind is None:
            self.send_error(404)
            return
        with open(os.path.join(UI_DIR, name), "rb") as source:
            body = source.read()
        self.set_header("Content-Type", kind)
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(body)


#: Only this origin's own script, style and API; no inline code, no frames,
#: no forms, nothing from elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def _page_headers(handler: RequestHandler) -> None:
    handler.set_header("Content-Type", "text/html; charset=utf-8")
    handler.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    handler.set_header("X-Content-Type-Options", "nosniff")
    handler.set_header("Referrer-Policy", "no-referrer")
    handler.set_header("Cache-Control", "no-store")


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lambda-debugger broker</title>
<link rel="stylesheet" href="ui/page.css">
<script src="ui/page.js" defer></script>
</head>
<body>
<header>
<h1>lambda-debugger broker</h1>
<p><span id="status" role="status" aria-live="polite">loading...</span> <span id="updated" class="hint"></span></p>
<p><label for="filter">Filter by function ID</label>
<input id="filter" type="search" autocomplete="off" spellcheck="false" placeholder="e.g. orders"></p>
</header>
<main>
<section aria-labelledby="waiting-title"><h2 id="waiting-title">Waiting invocations</h2>
<p class="hint">An invocation waits this long for a debugger, then runs without one.</p>
<div class="scroll"><table id="waiting"><thead><tr>
<th scope="col">Function ID</th><th scope="col">Function</th><th scope="col">Runtime</th>
<th scope="col">Request ID</th><th scope="col">Waits</th><th scope="col">Time left</th>
<th scope="col" class="broker">Broker</th>
</tr></thead><tbody></tbody></table></div></section>
<section aria-labelledby="armed-title"><h2 id="armed-title">Armed debuggers</h2>
<div class="scroll"><table id="armed"><thead><tr>
<th scope="col">Function ID</th><th scope="col">Armed since</th><th scope="col">Filter (--when)</th>
<th scope="col">Gives up in</th>
<th scope="col" class="broker">Broker</th>
</tr></thead><tbody></tbody></table></div></section>
<section aria-labelledby="active-title"><h2 id="active-title">Active sessions</h2>
<div class="scroll"><table id="active"><thead><tr>
<th scope="col">Function ID</th><th scope="col">Request ID</th><th scope="col">State</th>
<th scope="col">Time left</th><th scope="col">To debugger</th><th scope="col">To Lambda</th>
<th scope="col">Debuggers</th><th scope="col">Filter (--when)</th>
<th scope="col" class="broker">Broker</th>
</tr></thead><tbody></tbody></table></div></section>
<section aria-labelledby="ended-title"><h2 id="ended-title">Recently ended</h2>
<div class="scroll"><table id="ended"><thead><tr>
<th scope="col">Function ID</th><th scope="col">Request ID</th><th scope="col">Ended</th>
<th scope="col">How</th><th scope="col">Detail</th><th scope="col">Debuggers</th>
<th scope="col" class="broker">Broker</th>
</tr></thead><tbody></tbody></table></div></section>
<section aria-labelledby="attach-title"><h2 id="attach-title">Attach</h2>
<p class="hint">For each function ID the broker knows: the command to run on your machine
(it reads the debugger token from <code>$BROKER_DEBUGGER_TOKEN</code>), and the VS Code
configuration that attaches to it. Add <code>--when EXPR</code> to take only your own invocations.</p>
<div id="attach"></div></section>
</main>
</body></html>
"""

REFUSED_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lambda-debugger broker: login needed</title>
<link rel="stylesheet" href="ui/page.css">
</head>
<body><main>
<h1>lambda-debugger broker</h1>
<p id="refused" class="error">The broker refused the credentials (HTTP 401). Log in with any user name and the
broker's debugger token (<code>BROKER_DEBUGGER_TOKEN</code>) as the password, or reach this page through a
proxy that sends <code>Authorization: Bearer &lt;debugger token&gt;</code>.</p>
</main></body></html>
"""
