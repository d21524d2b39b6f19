"""The operator page in a real browser (headless Chromium), against the real app driven by a fake
switch: the devices with their categories, sorting and filtering, a device's page, a pin refused
without a token and for bad input, a pin made (the switch gets the new rules, the policy file its
override, the pin history its row) and released. Screenshots of each page are kept (see the
"test artefacts" section at the end of the run). Skipped where Chromium is not installed."""

from __future__ import annotations

import time

import pytest

from browser import browser  # noqa: F401  (fixture)
from classifier.capture.packets import mac_to_int
from controller_app.intents import Table
from controller_app.policy import Override, load_policy
from testing.fakeswitch import T_METER_MOD
from web_app import A, B, C, GW, POLICY, WebApp

pytestmark = pytest.mark.slow


@pytest.fixture
def app(tmp_path):
    a = WebApp(tmp_path)
    try:
        a.populate()
        yield a
    finally:
        a.stop()


def rows(b) -> dict:
    """MAC -> the device table's cell texts."""
    return b.table("#devices")


def order(b) -> list:
    return list(b.table("#devices"))


def test_operator_page_lists_devices_and_pins_a_category(app, browser):  # noqa: F811
    from selenium.webdriver.support.ui import Select
    b = browser
    b.get(app.base + "/")                                  # a browser at / lands on the page
    b.wait(lambda d: len(rows(b)) == 4, what="the four devices")
    assert b.driver.current_url.endswith("/ui/")
    r = rows(b)
    # columns: device, IP, vendor, switch · port, category, confidence, stage, action, first seen, last seen
    assert r[A][4] == "camera" and r[A][6] == "confirmed" and r[A][7] == "block"
    assert r[B][4] == "plug" and r[B][5] == "0.70" and r[B][6] == "provisional"
    assert r[C][4] == "undecided" and r[C][6].startswith("learning")
    assert r[GW][4] == "gateway"
    assert r[A][2].startswith("02:00:00") and "randomised" in r[A][2]
    assert r[A][3] == "abcd · 1"
    assert "pins on" in b.text("#status") and "1 switch" in b.text("#status")
    b.screenshot("01-devices")

    # sort by category (ascending, undecided and the gateway's none last), then descending
    b.click('th[data-sort="category"]')
    b.wait(lambda d: order(b)[:2] == [A, B], what="sorted by category")
    b.click('th[data-sort="category"]')
    b.wait(lambda d: order(b)[:2] == [B, A], what="sorted by category, descending")
    assert b.one('th[data-sort="category"]').get_attribute("aria-sort") == "descending"
    # filter: text, then the category list
    b.one("#q").send_keys("camera")
    b.wait(lambda d: list(rows(b)) == [A], what="the filter to leave the camera")
    assert "1–1 of 1 (of 4)" in b.text("#range")
    b.one("#q").clear()
    b.one("#q").send_keys(" ")
    b.wait(lambda d: len(rows(b)) == 4, what="the filter cleared")
    Select(b.one("#f-category")).select_by_value("plug")
    b.wait(lambda d: list(rows(b)) == [B], what="the plug alone")
    Select(b.one("#f-category")).select_by_value("")
    b.wait(lambda d: len(rows(b)) == 4, what="every category again")

    # a device's page: its decision, explanation, entries, traffic
    b.click(f'#devices tr[data-mac="{A}"] a.mac')
    b.wait(lambda d: b.css("body[data-loaded]") and b.text("#history"), what="the device page")
    assert "camera" in b.text("#title") and "table says camera" in b.text("#history")
    assert "5 packets" in b.text("#history")
    entries = b.texts("#rules tbody tr")
    block = f"goto_table:{int(Table.MIRROR)}"       # a blocked device's frames go to the mirror table only
    assert [(e[1], e[2], e[4]) for e in entries] == [("0 POLICY_SRC", "100", block), ("1 POLICY_DST", "100", block)]
    b.wait(lambda d: len(b.css("#traffic svg polyline.tx")) == 1, what="the traffic plot")
    assert "from the device" in b.text("#traffic")
    assert "Read-only until you sign in" in b.text("#pin-note")
    b.screenshot("02-device-read-only")

    # without a token: nothing to click (the API refuses it too: tests/test_web.py), nothing preselected
    assert b.one("#pin-cat-btn").get_attribute("disabled") is not None
    assert b.one("#pin-cat").get_attribute("disabled") is not None
    assert Select(b.one("#pin-cat")).first_selected_option.get_attribute("value") == ""
    assert app.policy.read_text() == POLICY

    # sign in; a wrong token first
    b.one("#token").send_keys("not-the-token-at-all")
    b.click("#signin-btn")
    b.wait(lambda d: "unknown token" in b.text("#signin-msg"), what="the wrong token refused")
    b.one("#token").send_keys(app.token)
    b.click("#signin-btn")
    b.wait(lambda d: "signed in as alice" in b.text("#operator"), what="signed in")

    # signed in: still nothing preselected, the button waits for a choice
    b.wait(lambda d: b.one("#pin-cat").get_attribute("disabled") is None, what="the category list enabled")
    assert b.one("#pin-cat-btn").get_attribute("disabled") is not None
    # bad input: a clear message, nothing written
    Select(b.one("#pin-act")).select_by_value("custom")
    b.one("#pin-custom").send_keys("{rate_limit_kbps: -5}")
    b.click("#pin-act-btn")
    b.wait(lambda d: "Refused (400)" in b.text("#pin-msg"), what="the bad action refused")
    assert "rate_limit_kbps: expected an integer 1..100000000, got '-5'" in b.text("#pin-msg")
    assert app.policy.read_text() == POLICY

    # pin the camera as a plug: the switch gets a 77 kbps meter and metered entries
    meters_before = len(app.sw.messages(T_METER_MOD))
    Select(b.one("#pin-cat")).select_by_value("plug")
    b.click("#pin-cat-btn")
    b.wait(lambda d: "pinned category=plug by alice; in force" in b.text("#pin-msg"), what="the pin")
    app.sw.wait_for(lambda r: any(m.type == T_METER_MOD and m.parsed["bands"] and m.parsed["bands"][0][1] == 77
                                  for m in r[meters_before:] if m.parsed))
    assert load_policy(str(app.policy)).overrides == {mac_to_int(A): Override(category="plug")}
    assert app.policy.read_text() == POLICY.replace("overrides: {}", f'overrides: {{"{A}": {{category: plug}}}}')
    b.wait(lambda d: b.text("#enforced") == "rate_limit_kbps=77", what="the new action on the page")
    b.wait(lambda d: "alice" in b.text("#audit tbody") and "pinned category=plug" in b.text("#audit tbody"),
           what="the pin history")
    b.wait(lambda d: (lambda e: [x[1] for x in e] == ["0 POLICY_SRC", "1 POLICY_DST"]
                      and all("meter:" in x[4] for x in e))(b.texts("#rules tbody tr")), what="metered entries")
    assert "77 kbps" in b.text("#meters") and "pinned: category=plug" in b.text("#summary")
    b.screenshot("03-device-pinned")

    # the list shows the pin
    b.get(app.base + "/ui/?pinned=1")
    b.wait(lambda d: list(rows(b)) == [A] and "pinned" in rows(b)[A][0], what="the pinned device listed")
    b.screenshot("04-devices-pinned")

    # release: the policy file as it was, the camera blocked again
    b.get(app.base + f"/ui/device?mac={A}")
    b.wait(lambda d: b.css("body[data-loaded]") and not b.one("#pin-release").get_attribute("hidden"),
           what="the release button")
    b.click("#release-btn")
    b.wait(lambda d: "pin released by alice" in b.text("#pin-msg"), what="the release")
    assert app.policy.read_text() == POLICY
    b.wait(lambda d: b.text("#enforced") == "block", what="blocked again")
    assert not b.console_errors(), b.console_errors()


def test_page_is_read_only_when_pins_are_off(tmp_path, browser):  # noqa: F811
    app = WebApp(tmp_path, pins=False)
    try:
        app.populate()
        b = browser
        b.get(app.base + f"/ui/device?mac={A}")
        b.wait(lambda d: b.css("body[data-loaded]") and b.text("#history"), what="the device page")
        assert "Pinning is off" in b.text("#pin-note") and b.one("#pin-cat-btn").get_attribute("disabled")
        assert "read-only" in b.text("#signin") and "pins off" in b.text("#status")
        b.screenshot("05-device-pins-off")
        time.sleep(0.5)
        assert app.policy.read_text() == POLICY
    finally:
        app.stop()
