// The broker's web page: polls /api/state every second, ticks the
// countdowns every second, and offers the attach command and the VS Code
// configuration of each function ID. Every value is written as text.
"use strict";

(() => {
  const POLL_MS = 1000;
  const REFUSED_POLL_MS = 5000;
  const ANSWER_TIMEOUT_MS = 5000; // a broker that keeps a request longer counts as gone
  const SHORT_S = 30; // a countdown below this is highlighted
  // Built from the origin, never from location.href: a page opened as
  // http://user:token@host/ would otherwise hand fetch() a URL with
  // credentials, which it refuses. The browser sends the credentials it
  // logged in with by itself.
  const API = new URL("api/state", location.origin + location.pathname);

  let state = null;
  let clockOffset = 0; // the broker's clock minus ours, in ms
  let failingSince = 0;
  let failure = ""; // why the last poll failed
  let attachKey = "";
  const tableKeys = {}; // what each table shows, to rebuild it only on a change

  const byId = (id) => document.getElementById(id);

  function brokerAddress() {
    const secure = location.protocol === "https:";
    const port = location.port || (secure ? "443" : "80");
    return (secure ? "wss://" : "") + location.hostname + ":" + port;
  }

  function attachCommand(functionId) {
    // "--" keeps an ID that starts with "-" from reading as an option.
    const id = functionId.startsWith("-") ? "-- " + functionId : functionId;
    return "lambda-debugger attach --broker " + brokerAddress() + " " + id;
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

  // Rebuilt only when what it shows changed (countdowns tick by
  // themselves), so that a selection or a screen reader's place survives.
  function fill(tableId, items, columns, emptyText) {
    const body = byId(tableId).tBodies[0];
    const shown = items.filter((item) => matches(item.function_id));
    const key = JSON.stringify([shown, byId("filter").value, shown.length ? "" : items.length]);
    if (tableKeys[tableId] === key) return;
    tableKeys[tableId] = key;
    body.textContent = "";
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
    const key = ids.join("\n") + "\n" + brokerAddress();
    if (key === attachKey) {
      showWatching();
      return;
    }
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
      const watching = document.createElement("p");
      watching.className = "hint watching";
      watching.dataset.functionId = id;
      article.append(title, watching);
      article.append(copyable("Command", attachCommand(id), "Copy command", "Copy the attach command for " + id));
      article.append(copyable("VS Code configuration (launch.json)", launchConfiguration(id), "Copy configuration",
        "Copy the VS Code configuration for " + id, true));
      box.append(article);
    }
    showWatching();
  }

  // How many warm containers of each function keep a control connection;
  // updated in place, as it changes often.
  function showWatching() {
    const counts = state.control_connections_by_function || {};
    for (const p of document.querySelectorAll("#attach .watching")) {
      const n = counts[p.dataset.functionId] || 0;
      const text = n ? n + " warm container" + (n === 1 ? "" : "s") + " watching (always on)" : "";
      if (p.textContent !== text) p.textContent = text;
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
    let timer = 0;
    button.addEventListener("click", async () => {
      const ok = await copy(text);
      button.focus(); // the fallback's selection took it
      done.textContent = ok ? "Copied" : "Select the text and copy it (the browser did not allow copying)";
      clearTimeout(timer);
      timer = setTimeout(() => (done.textContent = ""), 3000);
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

  // The status line is a live region: it changes (and is read out) only
  // when its message does; the time of the last update sits beside it.
  function setStatus(kind, text, detail) {
    const status = byId("status");
    if (status.className !== kind) status.className = kind;
    if (status.textContent !== text) status.textContent = text;
    byId("updated").textContent = detail || "";
  }

  function showFailure() {
    const seconds = Math.floor((Date.now() - failingSince) / 1000);
    setStatus("error", "Cannot reach the broker at " + location.host + " (" + failure + "); retrying every " +
      "second. The tables show what it said last.", "for " + duration(seconds));
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
    return text;
  }

  async function poll() {
    let next = POLL_MS;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), ANSWER_TIMEOUT_MS);
    try {
      const response = await fetch(API, {
        cache: "no-store",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-Lambda-Debugger-Page": "1" },
        signal: abort.signal,
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
        let body;
        try {
          body = await response.json();
        } catch (error) {
          throw new Error("its answer is not the broker's: is a proxy in the way?");
        }
        clockOffset = body.now * 1000 - Date.now();
        state = body;
        failingSince = 0;
        document.body.classList.remove("stale");
        document.body.classList.toggle("fleet", (body.brokers || []).length > 1);
        try {
          render();
        } catch (error) {
          setStatus("error", "The page could not show the broker's answer: " + error.message);
          return setTimeout(poll, next);
        }
        setStatus("live", summary(), "updated " + new Date().toLocaleTimeString());
      }
    } catch (error) {
      if (!failingSince) failingSince = Date.now();
      failure = error.name === "AbortError" ? "no answer within " + ANSWER_TIMEOUT_MS / 1000 + " s" : error.message;
      document.body.classList.add("stale");
      showFailure();
    } finally {
      clearTimeout(timer);
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
