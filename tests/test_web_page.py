"""The broker's web page in a real browser (Debian's Chromium under
Selenium), against a real broker holding sessions in every state."""

import json
import shlex
import sys
import time
import urllib.request

import pytest

from lambda_debugger.developer.cli import main as cli_main
from lambda_debugger.developer.vscode import launch_config
from tests.support.browser import LoginPrompt, Scene, page_url, start_chromium, stop_chromium, wait_for_text
from tests.support.chain import DEBUGGER_TOKEN, wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture(scope="module")
def scene_broker(tmp_path_factory):
    from tests.support.chain import BrokerProcess

    # No pings: the scene's raw clients read nothing while the browser looks.
    broker = BrokerProcess(str(tmp_path_factory.mktemp("page") / "broker.log"), "--ping-interval", "0")
    yield broker
    broker.stop()


@pytest.fixture
def scene(scene_broker):
    """Sessions in every state, afresh for each test (one runs short)."""
    built = Scene(scene_broker).build()
    yield built
    built.close()
    wait_until(lambda: scene_broker.sessions() == [], 10, "the scene to end")


@pytest.fixture(scope="module")
def browser():
    driver = start_chromium()
    yield driver
    stop_chromium(driver)


@pytest.fixture
def page(browser, scene_broker, scene):
    browser.set_window_size(1280, 1000)
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
    browser.get(page_url(scene_broker))
    wait_for_text(browser, "#status", "Live")
    return browser


def rows(driver, table):
    """The text of each cell of each body row of a table."""
    return driver.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent))",
        table,
    )


def test_the_page_shows_what_the_broker_holds(page, scene_broker):
    assert page.find_element("id", "status").text.startswith("Live: 1 waiting, 1 armed, 1 active")
    assert page.find_element("id", "updated").text.startswith("updated ")
    (waiting,) = rows(page, "waiting")
    assert waiting[:4] == ["orders", "orders-fn", "python3.12", "req-short-0004"]
    (armed,) = rows(page, "armed")
    assert armed[0] == "checkout" and armed[2] == "user == 'alice'"
    assert "min" in armed[3]  # gives up in about 15 minutes
    (active,) = rows(page, "active")
    assert active[:3] == ["orders", "req-active-0003", "attached"]
    assert active[4:7] == ["2.0 KiB", "1.0 KiB", "1"]
    ended = {row[1]: row for row in reversed(rows(page, "ended"))}  # the newest of each (scenes repeat IDs)
    assert ended["req-crashed-0001"][3:6] == ["crashed", "the handler's process ended (exit status 3)", "1"]
    assert ended["req-normal-0002"][3] == "ran normally"


def test_countdowns_tick_every_second_and_short_ones_stand_out(page):
    def cell(selector):
        # Read at once: the rows are rebuilt at each poll.
        return page.execute_script(
            "const c = document.querySelector(arguments[0]); return [c.textContent, c.className]", selector
        )

    first, classes = cell("#waiting tbody tr td:nth-child(6)")
    assert "short" in classes and first.endswith("(short)")
    seconds = int(first.split()[0])
    wait_until(
        lambda: int(cell("#waiting tbody tr td:nth-child(6)")[0].split()[0]) <= seconds - 2, 5, "the countdown to tick"
    )
    text, classes = cell("#active tbody tr td:nth-child(4)")
    assert "short" not in classes and "min" in text


def test_copy_buttons_work_from_the_keyboard_and_copy_a_command_that_runs(page, scene_broker, capsys):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    origin = "http://127.0.0.1:%d" % scene_broker.debugger_port
    page.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": origin, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    wanted = "Copy the attach command for orders"
    page.find_element("id", "filter").click()
    for _ in range(40):  # Tab through the page as a keyboard user would
        ActionChains(page).send_keys(Keys.TAB).perform()
        if page.execute_script("return document.activeElement.getAttribute('aria-label')") == wanted:
            break
    else:
        raise AssertionError("the copy button cannot be reached with Tab")
    ActionChains(page).send_keys(Keys.ENTER).perform()
    wait_for_text(page, "#attach .copied", "Copied")
    command = page.execute_async_script("navigator.clipboard.readText().then(arguments[0])")
    assert command == "lambda-debugger attach --broker 127.0.0.1:%d orders" % scene_broker.debugger_port
    # The command is one the CLI takes as it is.
    argv = shlex.split(command)[1:] + ["--print-vscode-config"]
    assert cli_main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed[".vscode/tasks.json"]["tasks"][0]["args"][:4] == ["attach", "orders", "--broker", argv[2]]
    # The configuration is the one the CLI writes, without the task that starts the bridge.
    page.find_element("css selector", "[aria-label='Copy the VS Code configuration for orders']").click()
    copied = json.loads(page.execute_async_script("navigator.clipboard.readText().then(arguments[0])"))
    expected = launch_config(function_id="orders")["configurations"][0]
    expected.pop("preLaunchTask")
    assert copied == expected


def test_the_filter_box_narrows_every_section(page):
    box = page.find_element("id", "filter")
    box.send_keys("bill")
    wait_until(lambda: rows(page, "waiting") == [["none match the filter"]], 5, "the filter")
    assert {row[0] for row in rows(page, "ended")} == {"billing"}
    titles = [e.text for e in page.find_elements("css selector", "#attach h3")]
    assert titles == ["billing"]


def test_a_bearer_token_from_a_proxy_is_enough(browser, scene_broker, scene):
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Bearer " + DEBUGGER_TOKEN}})
    try:
        browser.get(page_url(scene_broker, password=None))
        wait_for_text(browser, "#status", "Live")
        assert rows(browser, "active")[0][1] == "req-active-0003"
    finally:
        browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def test_the_login_prompt_answered_with_the_token_logs_in(scene_broker, scene):
    driver = start_chromium()  # a fresh profile: no login remembered
    prompt = LoginPrompt(driver, "dev", DEBUGGER_TOKEN)
    try:
        driver.get(page_url(scene_broker, password=None))
        wait_for_text(driver, "#status", "Live")
        assert prompt.asked == 1  # once; the page's own requests reuse the login
        time.sleep(2.5)
        assert prompt.asked == 1 and "Live" in driver.find_element("id", "status").text
    finally:
        prompt.close()
        stop_chromium(driver)


def test_a_wrong_password_then_a_cancelled_prompt_get_a_page_that_says_what_to_do(scene_broker):
    driver = start_chromium()  # a fresh profile: no login remembered
    prompt = LoginPrompt(driver, "dev", "not-the-token", tries=1)
    try:
        driver.get(page_url(scene_broker, password=None))
        wait_for_text(driver, "#refused", "refused the credentials (HTTP 401)")
        assert prompt.asked == 2  # the wrong password, then cancelled
        assert "debugger token" in driver.find_element("id", "refused").text
    finally:
        prompt.close()
        stop_chromium(driver)


def test_broker_gone_then_back_then_with_another_token(own_broker, browser):
    broker = own_broker()
    ports = (broker.lambda_port, broker.debugger_port)
    browser.get(page_url(broker))
    wait_for_text(browser, "#status", "Live")
    broker.process.kill()
    broker.process.wait(5)
    wait_for_text(browser, "#status", "Cannot reach the broker", timeout=5)
    assert "stale" in browser.find_element("tag name", "body").get_attribute("class")
    back = own_broker(ports=ports)
    wait_for_text(browser, "#status", "Live", timeout=10)
    assert "stale" not in browser.find_element("tag name", "body").get_attribute("class")
    # The token was rotated while the page stayed open.
    back.process.kill()
    back.process.wait(5)
    own_broker(ports=ports, env={"BROKER_LAMBDA_TOKEN": "lt-rotated-123", "BROKER_DEBUGGER_TOKEN": "dt-rotated-456"})
    wait_for_text(browser, "#status", "refused the credentials (HTTP 401)", timeout=15)


def test_a_narrow_window_reads_without_sideways_scrolling(page):
    page.set_window_size(380, 900)
    time.sleep(0.3)
    overflow = page.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    # Wide tables scroll inside their own box instead.
    assert page.execute_script("return getComputedStyle(document.querySelector('.scroll')).overflowX") == "auto"


def test_nothing_is_loaded_from_elsewhere_and_the_policy_holds(page, scene_broker):
    origin = "http://127.0.0.1:%d" % scene_broker.debugger_port
    loaded = page.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert loaded and set(loaded) == {origin}
    request = urllib.request.Request(origin + "/", headers={"Authorization": "Bearer " + DEBUGGER_TOKEN})
    with urllib.request.urlopen(request, timeout=5) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "unsafe-inline" not in policy
    problems = [entry["message"] for entry in page.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
    assert not [p for p in problems if "Content Security Policy" in p or "page.js" in p]


def test_the_page_is_usable_with_assistive_technology(page):
    checks = page.execute_script(
        """
        return {
          headersWithoutScope: [...document.querySelectorAll('th')].filter(th => th.scope !== 'col').length,
          filterLabelled: !!document.querySelector('label[for=filter]'),
          unnamedButtons: [...document.querySelectorAll('button')].filter(b => !b.getAttribute('aria-label')).length,
          buttons: document.querySelectorAll('button').length,
          statusRole: document.getElementById('status').getAttribute('role'),
          lang: document.documentElement.lang,
        };
        """
    )
    assert checks == {
        "headersWithoutScope": 0,
        "filterLabelled": True,
        "unnamedButtons": 0,
        "buttons": checks["buttons"],
        "statusRole": "status",
        "lang": "en",
    }
    assert checks["buttons"] >= 6  # two per function ID


def test_an_invocation_of_the_real_runtime_shows_while_it_waits(page, scene_broker, make_function):
    function = make_function(broker=scene_broker, function_id="orders")
    future = function.invoke_async()
    scene_broker.wait_for_state("waiting", count=2)
    [real] = [s for s in scene_broker.sessions() if s["state"] == "waiting" and s["function_name"] == "local-function"]

    def shown():
        return [row for row in rows(page, "waiting") if row[3] == real["request_id"]]

    [row] = wait_until(shown, 5, "the invocation on the page")
    assert row[:3] == ["orders", "local-function", "python%d.%d" % sys.version_info[:2]]
    function.close()  # the sandbox goes: the invocation leaves the page
    wait_until(lambda: not shown(), 10, "the invocation to leave the page")
    future.cancel()
