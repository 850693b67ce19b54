"""HTTP on the debugger port: health check, sessions API and web page.

``/healthz`` is open (on both ports) and says nothing but "ok". The API and
the page need the debugger token, as a Bearer token or as the password of
HTTP Basic so that a browser can log in; the page then calls the API with the
credentials the browser keeps.
"""

import base64
import binascii
import json
import logging
from typing import Optional

from tornado.web import RequestHandler

from lambda_debugger.wire.protocol import token_from_header

from .handlers import BrokerState, token_accepted
from .logfmt import log_event

BASIC_REALM = 'Basic realm="lambda-debugger"'


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
            self.set_header("WWW-Authenticate", BASIC_REALM)
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
            "sessions": len(registry),
            "control_connections": registry.watcher_count(),
            "control_connections_by_function": registry.watchers_by_function(),
        }
        self.finish(json.dumps(body, separators=(",", ":")))


class IndexPage(_DebuggerTokenRequired):
    """``GET /``: a page that lists the sessions, refreshed every 2 s."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        # Inline script only; nothing is loaded from elsewhere.
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; "
            "style-src 'unsafe-inline'; frame-ancestors 'none'",
        )
        self.finish(INDEX_HTML)


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>lambda-debugger broker</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 2em; }
table { border-collapse: collapse; }
th, td { padding: .3em .8em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
#status { color: #777; }
</style></head>
<body>
<h1>lambda-debugger broker</h1>
<p id="status">loading...</p>
<table><thead><tr>
<th>function ID</th><th>state</th><th>request ID</th><th>function</th><th>runtime</th>
<th>since</th><th>time left</th><th>debuggers</th><th>when</th><th>bytes to debugger</th><th>bytes to Lambda</th>
</tr></thead><tbody id="rows"></tbody></table>
<script>
"use strict";
function cell(row, text, numeric) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (numeric) td.className = "n";
}
async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("api/sessions", {cache: "no-store", credentials: "same-origin"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    const sessions = await response.json();
    const rows = document.getElementById("rows");
    rows.textContent = "";
    const now = Date.now();
    for (const s of sessions) {
      const row = rows.insertRow();
      cell(row, s.function_id); cell(row, s.state); cell(row, s.request_id);
      cell(row, s.function_name); cell(row, s.runtime);
      cell(row, new Date(s.since * 1000).toLocaleTimeString());
      cell(row, s.deadline_ms ? Math.max(0, Math.round((s.deadline_ms - now) / 1000)) + " s" : "", true);
      cell(row, s.attachments, true); cell(row, s.when);
      cell(row, s.bytes_to_debugger, true); cell(row, s.bytes_to_lambda, true);
    }
    status.textContent = sessions.length + " session(s), updated " + new Date().toLocaleTimeString();
  } catch (error) {
    status.textContent = "cannot load sessions: " + error.message;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body></html>
"""
