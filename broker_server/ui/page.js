// The broker's web page: polls /api/state every second, ticks the
// countdowns every second, and offers the attach command and the VS Code
// configuration of each function ID. Every value is written as text.
"use strict";

(() => {
  const POLL_MS = 1000;
  const REFUSED_POLL_MS = 5000;
  const SHORT_S = 30; // a countdown below this is highlighted
  // Built from the origin, never from location.href: a page opened as
  // http://user:token@host/ would otherwise hand fetch() a URL with
  // credentials, which it refuses. The browser sends the credentials it
  // logged in with by itself.
  const API = new URL("api/state", location.origin + location.pathname);

  let state = null;
  let clockOffset = 0; // the broker's clock minus ours, in ms
  let failingSince = 0;
  let attachKey = "";

  const byId = (id) => document.getElementById(id);

  function brokerAddress() {
    const secure = location.protocol === "https:";
    const port = location.port || (secure ? "443" : "80");
    return (secure ? "wss://" : "") + location.hostname + ":" + port;
  }

  function attachCommand(functionId) {
    return "lambda-debugger attach " + functionId + " --broker " + brokerAddress();
  }

  function launchConfiguration(functionId) {
    return JSON.stringify(
      {
        name: "Attach to Lambda (" + functionId + ")",
        type: "debugpy",
        request: "attach",
        connect: { host: "127.0.0.1", port: 5678 },
        pathMappings: [{ localRoot: "${workspaceFolder}", remoteRoot: "/var/task" }],
        justMyCode: true,
      },
      null,
      2
    );
  }

  function secondsUntil(ms) {
    return Math.max(0, Math.floor((ms - (Date.now() + clockOffset)) / 1000));
  }

  function duration(seconds) {
    if (seconds >= 3600) return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
    if (seconds >= 60) return Math.floor(seconds / 60) + " min " + (seconds % 60) + " s";
    return seconds + " s";
  }

  function clock(unixSeconds) {
    return new Date(unixSeconds * 1000).toLocaleTimeString();
  }

  function bytes(n) {
    if (n >= 1048576) return (n / 1048576).toFixed(1) + " MiB";
    if (n >= 1024) return (n / 1024).toFixed(1) + " KiB";
    return n + " B";
  }

  function cell(row, text, className) {
    const td = row.insertCell();
    td.textContent = text === null || text === undefined || text === "" ? "-" : String(text);
    if (className) td.className = className;
    return td;
  }

  // A cell that counts down to ``untilMs`` (Unix ms); tick() updates it.
  function countdown(row, untilMs) {
    const td = cell(row, "", "n countdown");
    td.dataset.until = untilMs === null || untilMs === undefined ? "" : String(untilMs);
    showCountdown(td);
    return td;
  }

  function showCountdown(td) {
    if (!td.dataset.until) {
      td.textContent = "-";
      return;
    }
    const left = secondsUntil(Number(td.dataset.until));
    const short = left < SHORT_S;
    td.textContent = duration(left) + (short ? " (short)" : "");
    td.classList.toggle("short", short);
  }

  function tick() {
    for (const td of document.querySelectorAll("td.countdown")) showCountdown(td);
    if (failingSince) showFailure();
  }

  function matches(functionId) {
    const wanted = byId("filter").value.trim().toLowerCase();
    return !wanted || functionId.toLowerCase().includes(wanted);
  }

  function fill(tableId, items, columns, emptyText) {
    const body = byId(tableId).tBodies[0];
    body.textContent = "";
    const shown = items.filter((item) => matches(item.function_id));
    for (const item of shown) {
      const row = body.insertRow();
      columns(row, item);
      cell(row, item.broker, "broker"); // shown when the page covers a fleet
    }
    if (!shown.length) {
      const td = cell(body.insertRow(), items.length ? "none match the filter" : emptyText, "empty");
      td.colSpan = byId(tableId).tHead.rows[0].cells.length;
    }
  }

  function render() {
    if (!state) return;
    const sessions = state.sessions;
    fill("waiting", sessions.filter((s) => s.state === "waiting"), (row, s) => {
      cell(row, s.function_id, "id");
      cell(row, s.function_name);
      cell(row, s.runtime);
      cell(row, s.request_id, "id");
      countdown(row, s.wait_ends_ms);
      countdown(row, s.deadline_ms);
    }, "no invocation is waiting");
    fill("armed", sessions.filter((s) => s.state === "armed"), (row, s) => {
      cell(row, s.function_id, "id");
      cell(row, clock(s.since));
      cell(row, s.when, "id");
      countdown(row, s.expires_ms);
    }, "no debugger is armed");
    fill("active", sessions.filter((s) => s.state === "paired" || s.state === "detached"), (row, s) => {
      cell(row, s.function_id, "id");
      cell(row, s.request_id, "id");
      cell(row, s.state === "paired" ? "attached" : "detached (the handler runs; attach again)");
      countdown(row, s.deadline_ms);
      cell(row, bytes(s.bytes_to_debugger), "n");
      cell(row, bytes(s.bytes_to_lambda), "n");
      cell(row, s.attachments, "n");
      cell(row, s.when, "id");
    }, "no session is active");
    fill("ended", state.ended, (row, e) => {
      cell(row, e.function_id, "id");
      cell(row, e.request_id, "id");
      cell(row, clock(e.ended));
      cell(row, e.outcome, "outcome");
      cell(row, e.detail);
      cell(row, e.attachments, "n");
    }, "nothing ended yet");
    renderAttach();
  }

  function functionIds() {
    const ids = new Set(Object.keys(state.control_connections_by_function || {}));
    for (const s of state.sessions) ids.add(s.function_id);
    for (const e of state.ended) ids.add(e.function_id);
    return [...ids].filter(matches).sort();
  }

  // Rebuilt only when the function IDs change, so that a focused copy
  // button keeps its focus while the tables refresh.
  function renderAttach() {
    const ids = functionIds();
    const counts = state.control_connections_by_function || {};
    const key = ids.map((id) => id + " " + (counts[id] || 0)).join("\n") + "\n" + brokerAddress();
    if (key === attachKey) return;
    attachKey = key;
    const box = byId("attach");
    box.textContent = "";
    if (!ids.length) {
      const p = document.createElement("p");
      p.className = "hint";
      p.textContent = "No function ID yet: one appears here when an invocation, a debugger or a warm container of it reaches the broker.";
      box.append(p);
      return;
    }
    for (const id of ids) {
      const article = document.createElement("article");
      const title = document.createElement("h3");
      title.textContent = id;
      const containers = (state.control_connections_by_function || {})[id];
      article.append(title);
      if (containers) {
        const p = document.createElement("p");
        p.className = "hint";
        p.textContent = containers + " warm container" + (containers === 1 ? "" : "s") + " watching (always on)";
        article.append(p);
      }
      article.append(copyable("Command", attachCommand(id), "Copy command", "Copy the attach command for " + id));
      article.append(copyable("VS Code configuration (launch.json)", launchConfiguration(id), "Copy configuration",
        "Copy the VS Code configuration for " + id, true));
      box.append(article);
    }
  }

  // A caption, the text and its copy button; ``folded`` text is shown on
  // demand (a <details>), its button stays in view.
  function copyable(label, text, buttonText, buttonLabel, folded) {
    const wrap = document.createElement("div");
    const caption = document.createElement(folded ? "summary" : "div");
    caption.textContent = label;
    const pre = document.createElement("pre");
    pre.textContent = text;
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = buttonText;
    button.setAttribute("aria-label", buttonLabel);
    const done = document.createElement("span");
    done.className = "copied";
    done.setAttribute("role", "status");
    button.addEventListener("click", async () => {
      const ok = await copy(text);
      done.textContent = ok ? "Copied" : "Select the text and copy it (the browser did not allow copying)";
      setTimeout(() => (done.textContent = ""), 3000);
    });
    if (folded) {
      const details = document.createElement("details");
      details.append(caption, pre);
      wrap.append(details, button, done);
    } else {
      wrap.append(caption, pre, button, done);
    }
    return wrap;
  }

  async function copy(text) {
    try {
      if (navigator.clipboard && window.isSecureContext) {
        await navigator.clipboard.writeText(text);
        return true;
      }
    } catch (error) {
      // fall back to a selection below
    }
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand("copy");
    } catch (error) {
      ok = false;
    }
    area.remove();
    return ok;
  }

  function setStatus(kind, text) {
    const status = byId("status");
    status.className = kind;
    status.textContent = text;
  }

  function showFailure() {
    const seconds = Math.floor((Date.now() - failingSince) / 1000);
    setStatus("error", "Cannot reach the broker at " + location.host + " (for " + duration(seconds) +
      "); retrying every second. The tables show what it said last.");
  }

  function summary() {
    const count = (name) => state.sessions.filter((s) => s.state === name).length;
    let text = "Live: " + count("waiting") + " waiting, " + count("armed") + " armed, " +
      (count("paired") + count("detached")) + " active";
    const brokers = state.brokers || [];
    if (brokers.length > 1) {
      const down = brokers.filter((b) => !b.ok).map((b) => b.broker + " (" + b.problem + ")");
      text += " across " + brokers.length + " brokers" + (down.length ? "; not answering: " + down.join(", ") : "");
    }
    return text + "; updated " + new Date().toLocaleTimeString();
  }

  async function poll() {
    let next = POLL_MS;
    try {
      const response = await fetch(API, {
        cache: "no-store",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-Lambda-Debugger-Page": "1" },
      });
      if (response.status === 401) {
        failingSince = 0;
        document.body.classList.add("stale");
        setStatus("error", "The broker refused the credentials (HTTP 401): its debugger token changed, or the login " +
          "expired. Open this page again and log in with any user name and the debugger token as the password.");
        next = REFUSED_POLL_MS;
      } else if (!response.ok) {
        throw new Error("HTTP " + response.status);
      } else {
        const body = await response.json();
        clockOffset = body.now * 1000 - Date.now();
        state = body;
        failingSince = 0;
        document.body.classList.remove("stale");
        document.body.classList.toggle("fleet", (body.brokers || []).length > 1);
        render();
        setStatus("live", summary());
      }
    } catch (error) {
      if (!failingSince) failingSince = Date.now();
      document.body.classList.add("stale");
      showFailure();
    }
    setTimeout(poll, next);
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("filter").addEventListener("input", () => {
      attachKey = "";
      render();
    });
    setInterval(tick, 1000);
    poll();
  });
})();
