"""The operator page end to end, as a person uses it: headless Chromium on the page of a
controller that a real Open vSwitch (Mininet) is connected to, while a capture is replayed
through it (the shared whole-home capture; a generated one where ../shared is absent).

The page is loaded during the replay, then checked against the controller's own /devices once
the replay is over (every replayed device listed, with its category and stage); a device's page
is opened; its category is pinned (``camera``, which the test policy blocks) and the switch's
entries for it change (``ovs-ofctl dump-flows``) while the policy file gains the override and
nothing else; the pin is released and the entries and the file come back. Screenshots of each
page are kept (the "test artefacts" at the end of the run), with the measured figures."""

from __future__ import annotations

import secrets
import time

import pytest

from lab_required import require_lab  # noqa: E402

require_lab()

from browser import Browser, why_no_browser  # noqa: E402

if why_no_browser():
    pytest.skip(why_no_browser(), allow_module_level=True)

from classifier.capture.packets import mac_to_int  # noqa: E402
from classifier.shared import datasets_root  # noqa: E402
from controller_app.intents import Table  # noqa: E402
from controller_app.policy import Override, load_policy  # noqa: E402
from topologies import ovs  # noqa: E402
from topologies.replay import plan_capture, plan_synthetic  # noqa: E402
from topologies.scenario import Scenario, policy_flows  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
BLOCK = f"goto_table:{int(Table.MIRROR)}"        # a blocked device's entries: to the mirror table, not forwarded

SPEEDUP = 60.0
HOME_CAPTURE = "home/training_2023-5-26_1_13_9.pcapng.gz"
# every category's claims are trusted: the page test pins and reads whatever the engine decides,
# also on a device's own claims (claims alone only tightening is tested in test_e2e_claims.py)
POLICY = """# end-to-end page test: cameras blocked, plugs rate-limited, lights marked, unknown devices limited
version: 1
enforce_on: confirmed
min_confidence: 0.8
default: allow
unknown: {rate_limit_kbps: 1024}
trust_claims: [camera, plug, hub, sensor, light, speaker, lock, appliance, non-iot]
categories:
  camera: block
  plug: {rate_limit_kbps: 256}
  light: {priority: 1, dscp: 46}
overrides: {}
"""


def report(request, key: str, value) -> None:
    request.config.e2e_figures.append((key, value))


def wait_for(pred, timeout: float, what: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


def page_rows(b) -> dict:
    """MAC -> the device table's cells, as the page shows them."""
    return b.table("#devices")


def switch_entries(sc, mac: str) -> set:
    """The device's policy entries on the switch: (table, priority, actions)."""
    return {(f.table, f.priority, f.actions) for f in policy_flows(ovs.dump_flows(sc.lab.bridge(1)), mac)}


@pytest.fixture(scope="module")
def site(request, tmp_path_factory):
    work = tmp_path_factory.mktemp("e2e-web")
    root = datasets_root()
    if root is not None and (root / HOME_CAPTURE).exists():
        plan = plan_capture(root / HOME_CAPTURE, root / "home" / "devices.csv", work / "streams", duration_s=2700.0)
        source = f"shared capture {HOME_CAPTURE}, first 2700 s"
    else:
        # the light, hub and sensor name themselves (a DHCP host name, HomeKit): generated traffic is
        # no vendor's the shipped engine knows, so without a name nothing would be accepted
        plan, _ = plan_synthetic(work / "synthetic", duration_s=1800.0, identity=True)
        source = "generated capture (../shared absent), 1800 s"
    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    token = secrets.token_urlsafe(24)
    tokens = work / "tokens"
    tokens.write_text(f"e2e-operator:{token}\n")
    tokens.chmod(0o600)
    sc = Scenario(plan, work, policy, speedup=SPEEDUP, prefix="iotweb", decide_interval=2.0,
                  controller_args=["--web-pins", "--web-token-file", str(tokens), "--traffic-interval", "2"])
    sc.source, sc.policy_path, sc.token = source, policy, token
    b = Browser(request.config)
    sc.browser = b
    sc.during = None
    try:
        with sc:
            base = f"http://127.0.0.1:{sc.controller.http_port}"
            sc.base = base

            def look(s):
                # once a few devices are there, the page is loaded (once) in the middle of the replay
                if sc.during is None and len(s.last_devices) >= 3:
                    b.get(base + "/ui/")
                    b.wait(lambda d: len(page_rows(b)) >= 3, what="the devices during the replay")
                    sc.during = {"rows": page_rows(b), "devices": dict(s.last_devices),
                                 "shot": b.screenshot("e2e-01-devices-during-replay")}
            t = time.monotonic()
            sc.replay(on_poll=look)
            sc.replay_s = time.monotonic() - t
            report(request, "page e2e: source", f"{source}; {len(plan.devices)} devices, speed-up {SPEEDUP:g}, "
                                                f"replay {sc.replay_s:.0f} s")
            yield sc
    finally:
        b.quit()


def test_page_during_and_after_the_replay_lists_every_device_with_its_category(site, request):
    b = site.browser
    assert site.during is not None, "the page was never loaded during the replay"
    during = site.during
    assert set(during["rows"]) <= set(site.devices()), "the page listed a device the controller does not know"
    b.get(site.base + "/ui/")
    want = site.devices()
    b.wait(lambda d: set(page_rows(b)) == set(want), what="every device the controller knows, on the page")
    rows = page_rows(b)
    for d in site.plan.devices:
        assert d.mac in rows, f"{d.mac} ({d.device}) was replayed but is not on the page"
    decided = 0
    for mac, cells in rows.items():
        dev = site.devices()[mac]
        # (cells: device, IP address, vendor, switch · port, category, confidence, stage, action, ...)
        if dev["gateway"]:
            assert cells[4] == "gateway"
            continue
        assert cells[4] == (dev["category"] or "undecided"), (mac, cells, dev)
        assert cells[6].split("\n")[0] == (dev["stage"] or "learning"), (mac, cells, dev)   # (then how far it is)
        assert cells[7] == (dev["enforced"] or "none yet"), (mac, cells, dev)
        decided += dev["category"] is not None
    assert decided >= 3, f"only {decided} devices decided: {rows}"
    b.screenshot("e2e-02-devices-after-replay")
    report(request, "page e2e: devices page", f"{len(during['rows'])} devices on the page during the replay, "
                                              f"{len(rows)} after it ({decided} with a category), each with the "
                                              f"controller's category, stage and action")


def test_pin_a_category_from_the_device_page_changes_the_switch_and_the_policy_file(site, request):
    from selenium.webdriver.support.ui import Select
    b = site.browser
    devs = site.devices()
    # a device the policy lets through (allowed or marked), with a decision, to pin as a camera
    cands = [m for m, d in devs.items() if not d["gateway"] and d["category"] and d["category"] != "camera"
             and d["enforced"] and d["enforced"] != "block" and d["dpid"]]
    assert cands, f"no decided, unblocked device to pin: {devs}"
    mac = sorted(cands, key=lambda m: (devs[m]["enforced"] != "allow", m))[0]
    before = switch_entries(site, mac)
    assert before and not any(a == BLOCK for _, _, a in before), before
    b.get(site.base + "/ui/")
    b.wait(lambda d: mac in page_rows(b), what="the device's row")
    b.click(f'#devices tr[data-mac="{mac}"] a.mac')
    b.wait(lambda d: b.css("body[data-loaded]") and b.text("#history") and
           b.css("#rules tbody tr"), what="the device's page")
    history = b.text("#history")
    assert devs[mac]["category"] in history
    inv_expl = [h["explanation"] for h in site.controller.get(f"/devices/{mac}")["history"]]
    if any((e or "").startswith("sessions: ") for e in inv_expl):   # (in its folded details: textContent)
        folded = b.driver.execute_script("return document.getElementById('history').textContent")
        assert "The connections that counted most" in folded, folded
    page_entries = {(int(r[1].split()[0]), int(r[2])) for r in b.texts("#rules tbody tr")}
    assert page_entries == {(t, p) for t, p, _ in before}, (page_entries, before)
    b.wait(lambda d: b.css("#traffic svg.plot"), timeout=30, what="the traffic plot")
    b.screenshot("e2e-03-device")

    b.one("#token").send_keys(site.token)
    b.click("#signin-btn")
    b.wait(lambda d: "signed in as e2e-operator" in b.text("#operator"), what="signed in")
    Select(b.one("#pin-cat")).select_by_value("camera")
    t = time.monotonic()
    b.click("#pin-cat-btn")
    b.wait(lambda d: "pinned category=camera by e2e-operator; in force" in b.text("#pin-msg"), what="the pin")
    blocked = wait_for(lambda: (lambda e: e if e and all(a == BLOCK for _, _, a in e) else None)(
        switch_entries(site, mac)), 30, "the switch's block entries")
    pin_s = time.monotonic() - t
    assert {(t_, p) for t_, p, _ in blocked} == {(0, 100), (1, 100)}, blocked
    assert load_policy(str(site.policy_path)).overrides == {mac_to_int(mac): Override(category="camera")}
    assert site.policy_path.read_text() == POLICY.replace("overrides: {}", f'overrides: {{"{mac}": {{category: camera}}}}')
    b.wait(lambda d: b.text("#enforced") == "block", what="block on the page")
    b.wait(lambda d: "e2e-operator" in b.text("#audit tbody"), what="the pin history")
    b.wait(lambda d: [r[4] for r in b.texts("#rules tbody tr")] == [BLOCK, BLOCK],
           what="the block entries on the page")
    b.screenshot("e2e-04-device-pinned")
    assert site.controller.devices()[mac]["enforced"] == "block"

    b.click("#release-btn")
    b.wait(lambda d: "pin released by e2e-operator" in b.text("#pin-msg"), what="the release")
    wait_for(lambda: switch_entries(site, mac) == before, 30, "the device's entries as they were")
    assert site.policy_path.read_text() == POLICY
    assert not b.console_errors(), b.console_errors()
    events = site.controller.log_events("pin") + site.controller.log_events("release")
    assert [(e["event"], e["who"], e["mac"]) for e in events] == [("pin", "e2e-operator", mac),
                                                                  ("release", "e2e-operator", mac)]
    report(request, "page e2e: pin", f"{mac} ({devs[mac]['category']}, {devs[mac]['enforced']}) pinned as a camera "
                                     f"from its page: block entries on the switch {pin_s:.1f} s after the click "
                                     f"(file written, hot reload, flow-mods); released: entries and file as before")
