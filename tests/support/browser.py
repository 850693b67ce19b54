"""A real browser for the web page's tests: Debian's Chromium driven by
Selenium through Debian's chromedriver (``.ci/run`` installs both with
apt-get); nothing is downloaded at run time.

Also a scene for the page: a broker holding a waiting invocation (the real
runtime client), invocations and debuggers of raw protocol clients in each
state, and ended sessions. ``python -m tests.support.browser OUT.png`` takes
the screenshot of the page that the docs show.
"""

import json
import os
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import websocket

from lambda_debugger.wire import protocol
from tests.support.chain import DEBUGGER_TOKEN, LAMBDA_TOKEN, BrokerProcess, Function, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

#: The Chromium flags a closed network needs: no background connections,
#: no sync, no component updates (see the machine's notes).
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
)


def start_chromium(width=1280, height=1000, bidi=False):
    """A headless Chromium under Selenium, with a profile of its own."""
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must not look for downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="lambda-debugger-chromium-")
    for flag in FLAGS + ("--user-data-dir=" + profile, "--window-size=%d,%d" % (width, height)):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    if bidi:
        options.enable_bidi = True
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.profile_dir = profile
    return driver


def stop_chromium(driver):
    try:
        driver.quit()
    finally:
        shutil.rmtree(getattr(driver, "profile_dir", ""), ignore_errors=True)


class LoginPrompt:
    """Answers the browser's HTTP login prompt as a person would: types
    ``user`` and ``password`` the first ``tries`` times it comes up, then
    cancels it. Through the DevTools protocol's Fetch domain, on a
    connection of its own to the browser's page.

    Attributes:
        asked: how many times the prompt came up.
    """

    def __init__(self, driver, user, password, tries=1):
        import threading

        address = driver.capabilities["goog:chromeOptions"]["debuggerAddress"]
        with urllib.request.urlopen("http://%s/json" % address, timeout=5) as response:
            target = next(t for t in json.loads(response.read()) if t["type"] == "page")
        self.ws = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=10, suppress_origin=True)
        self.user, self.password, self.tries, self.asked = user, password, tries, 0
        self._seq = 0
        self._send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]})
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, method, params):
        self._seq += 1
        self.ws.send(json.dumps({"id": self._seq, "method": method, "params": params}))

    def _serve(self):
        while True:
            try:
                message = json.loads(self.ws.recv())
            except Exception:
                return
            method, params = message.get("method"), message.get("params", {})
            if method == "Fetch.requestPaused":
                self._send("Fetch.continueRequest", {"requestId": params["requestId"]})
            elif method == "Fetch.authRequired":
                self.asked += 1
                answer = {"response": "ProvideCredentials", "username": self.user, "password": self.password}
                if self.asked > self.tries:
                    answer = {"response": "CancelAuth"}
                reply = {"requestId": params["requestId"], "authChallengeResponse": answer}
                self._send("Fetch.continueWithAuth", reply)

    def close(self):
        try:
            self._send("Fetch.disable", {})
        finally:
            self.ws.close()


def page_url(broker, password=DEBUGGER_TOKEN, user="dev"):
    """The page's address, with credentials in it (a bookmark many people make)."""
    if password is None:
        return "http://127.0.0.1:%d/" % broker.debugger_port
    return "http://%s:%s@127.0.0.1:%d/" % (user, urllib.parse.quote(password, safe=""), broker.debugger_port)


def wait_for_text(driver, css, text, timeout=10):
    from selenium.webdriver.common.by import By

    def found():
        elements = driver.find_elements(By.CSS_SELECTOR, css)
        return any(text in e.text for e in elements)

    return wait_until(found, timeout, "%r in %s" % (text, css))


class Scene:
    """What the page should show: raw protocol clients in every state, and
    optionally a real function waiting for a debugger."""

    def __init__(self, broker: BrokerProcess):
        self.broker = broker
        self.sockets = []

    def _lambda(self, function_id, request_id, *, wait_ms, deadline_s, name="orders-fn", runtime="python3.12"):
        ws = websocket.create_connection(
            "ws://127.0.0.1:%d/lambda/%s" % (self.broker.lambda_port, function_id),
            header=protocol.bearer(LAMBDA_TOKEN),
            timeout=10,
        )
        deadline_ms = int((time.time() + deadline_s) * 1000)
        ws.send(protocol.encode(protocol.Invocation(request_id, deadline_ms, name, runtime, wait_ms, matches={})))
        self.sockets.append(ws)
        return ws

    def _debugger(self, function_id, when=None):
        url = "ws://127.0.0.1:%d/debug/%s" % (self.broker.debugger_port, function_id)
        if when is not None:
            url += "?when=" + urllib.parse.quote(when)
        ws = websocket.create_connection(url, header=protocol.bearer(DEBUGGER_TOKEN), timeout=10)
        self.sockets.append(ws)
        return ws

    def build(self):
        # Ended: one debugged invocation whose handler's process died, one
        # that ran without a debugger.
        crashed = self._lambda("billing", "req-crashed-0001", wait_ms=30000, deadline_s=300, name="billing-fn")
        debugger = self._debugger("billing")
        assert json.loads(debugger.recv())["type"] == "paired"
        assert json.loads(crashed.recv())["type"] == "paired"
        crashed.send(protocol.encode(protocol.Ended("the handler's process ended (exit status 3)", exit_code=3)))
        assert json.loads(debugger.recv())["type"] == "ended"
        crashed.close(protocol.CloseCode.INVOCATION_DONE, "invocation finished")
        normal = self._lambda("billing", "req-normal-0002", wait_ms=30000, deadline_s=300, name="billing-fn")
        self.broker.wait_for_state("waiting")
        normal.close(protocol.CloseCode.NOT_WAITING, "no debugger attached in time")
        # Active: a paired session with debug bytes both ways.
        lam = self._lambda("orders", "req-active-0003", wait_ms=30000, deadline_s=600)
        dbg = self._debugger("orders")
        for ws in (lam, dbg):
            assert json.loads(ws.recv())["type"] == "paired"
        dbg.send_binary(b"x" * 1024)
        assert lam.recv() == b"x" * 1024
        lam.send_binary(b"y" * 2048)
        assert dbg.recv() == b"y" * 2048
        # Waiting: one with little time left, highlighted on the page.
        self._lambda("orders", "req-short-0004", wait_ms=20000, deadline_s=25)
        # Armed: a debugger with a filter.
        armed = self._debugger("checkout", when="user == 'alice'")
        assert json.loads(armed.recv())["type"] == "armed"
        wait_until(lambda: len(self.broker.sessions()) == 3, 10, "the scene")
        return self

    def close(self):
        for ws in self.sockets:
            try:
                ws.close()
            except Exception:
                pass


def main(out):
    """Take the docs' screenshot: the scene plus a real function waiting."""
    with tempfile.TemporaryDirectory() as tmp:
        broker = BrokerProcess(os.path.join(tmp, "broker.log"))
        function = driver = scene = None
        try:
            scene = Scene(broker).build()
            os.makedirs(os.path.join(tmp, "task"))
            function = Function(os.path.join(tmp, "task"), broker=broker, function_id="orders")
            function.invoke_async()
            broker.wait_for_state("waiting", count=2)
            driver = start_chromium(width=1200, height=1260)
            driver.get(page_url(broker))
            wait_for_text(driver, "#status", "Live")
            time.sleep(1.2)
            driver.save_screenshot(out)
        finally:
            if driver is not None:
                stop_chromium(driver)
            if scene is not None:
                scene.close()
            if function is not None:
                function.close()
            broker.stop()
    print("wrote " + out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/broker-page.png")
