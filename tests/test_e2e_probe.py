"""End to end on Mininet and Open vSwitch: a device that was already running when the
controller met it, and says nothing of itself unasked, tells the controller what it is when the
controller asks (an identity probe: an mDNS / DNS-SD query out of its edge port).

The device is a lab host running python-zeroconf (an independent mDNS responder) publishing a
HomeKit lightbulb; its registration announcements go out before any controller is connected (the
switch drops them), then it only sends a small UDP stream to the gateway and answers queries. The
same device is met twice, by a controller with probes off and then by one with the default
probes: only the second hears its mDNS records, and its decision names them."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_required import ROOT, require_lab  # noqa: E402

require_lab()
pytest.importorskip("zeroconf", reason="the probe's end-to-end test needs python-zeroconf (make install: test extras)")

from controller_app.policy import default_policy_path  # noqa: E402
from topologies.harness import Controller, Lab, free_port, stop_process  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEV_MAC = "02:00:00:00:07:01"
GW_MAC = "02:00:00:00:07:fe"
DEV_IP, GW_IP = "10.0.7.2", "10.0.7.1"
SENDER = ("import socket, time\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "while True:\n"
          f"    s.sendto(b'x' * 60, ({GW_IP!r}, 9000)); time.sleep(0.5)\n")
WATCH_S = 40.0                  # probes off: at most this long ...
OFF_PACKETS = 44                # ... or until a decision on this many of its packets: twice what the
                                # probing controller confirms it on (22: 11 s of its stream)
FINAL_S = 60.0                  # the goal: a final decision within a minute


def _meet(work: Path, of_port: int, name: str, extra: list[str], seconds: float, packets: int | None = None):
    """A controller (``extra`` flags) meets the device for up to ``seconds`` after its switch
    connects (or until a decision on ``packets`` of its packets), then stops: what :func:`_watch`
    saw, and the controller's counters."""
    ctl = Controller(work / name, default_policy_path(), ["--gateway-macs", GW_MAC, "--decide-interval", "2",
                                                          *extra], of_port=of_port)
    ctl.start()
    try:
        return (*_watch(ctl, seconds, packets), ctl.get("/status")["counters"])
    finally:
        ctl.stop()


def _decided_on(hist: list) -> int:
    """The most packets of the device a decision of its history was made on."""
    return max([int((h.get("evidence") or {}).get("packets", 0)) for h in hist] or [0])


def _watch(ctl: Controller, seconds: float, packets: int | None = None) -> tuple[dict | None, float | None,
                                                                                  float | None]:
    """Poll the device for up to ``seconds`` after the switch connects, until its first final
    decision (confirmed or unknown) or, with ``packets``, a decision on that many of its packets:
    (its record with history, seconds from the switch's connection to the first decision naming
    HomeKit ci=5, and to its first final decision)."""
    ctl.wait_switches(1, 60)
    t0 = time.monotonic()
    named = final = None
    rec = None
    while time.monotonic() - t0 < seconds and final is None and not (
            packets is not None and _decided_on((rec or {}).get("history", [])) >= packets):
        try:
            rec = ctl.get(f"/devices/{DEV_MAC}")
        except OSError:
            rec = None
        hist = (rec or {}).get("history", [])
        if named is None and any("ci=5" in (h.get("explanation") or "") for h in hist):
            named = time.monotonic() - t0
        if any(h.get("stage") in ("confirmed", "unknown") for h in hist):
            final = time.monotonic() - t0
        time.sleep(0.5)
    return rec, named, final


def test_a_silent_running_device_names_itself_when_the_controller_asks(tmp_path, request):
    of_port = free_port()
    spec = {"topology": "single", "devices": [["bulb", DEV_MAC]], "gateway_mac": GW_MAC, "prefix": "iotpr",
            "controller": ["127.0.0.1", of_port]}
    with Lab(spec, tmp_path / "lab") as lab:
        intf = lab.intf("bulb")
        lab.run("bulb", ["ip", "addr", "add", f"{DEV_IP}/24", "dev", intf])
        lab.run("bulb", ["ip", "neigh", "replace", GW_IP, "lladdr", GW_MAC, "dev", intf])
        resp = lab.popen("bulb", [sys.executable, "-m", "testing.mdns_responder", DEV_IP, "Porch Light", "5"],
                         cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        line = resp.stdout.readline()
        assert line.strip() == "registered", f"the responder did not start: {line}{resp.stdout.read()[-600:]}"
        time.sleep(2.0)                      # its announcements are over (and were dropped: no controller yet)
        lab.popen("bulb", [sys.executable, "-c", SENDER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        t_off = time.monotonic()
        rec_off, named_off, _, counters_off = _meet(tmp_path, of_port, "off", ["--identity-probes", "0"], WATCH_S,
                                                    OFF_PACKETS)
        t_off = time.monotonic() - t_off
        assert rec_off is not None, "probes off: the device was never learned"
        assert named_off is None and counters_off.get("identity_probes_sent", 0) == 0, rec_off
        assert counters_off.get("identity_records", 0) == 0, counters_off    # it said nothing of itself

        rec_on, named_on, final_on, counters_on = _meet(tmp_path, of_port, "on", [], FINAL_S)
        stop_process(resp)
    assert counters_on.get("identity_probes_sent", 0) >= 1, counters_on
    assert named_on is not None, (f"probes on: no decision named the device's HomeKit record within {FINAL_S:g} s: "
                                  f"{rec_on}")
    first = next(h for h in rec_on["history"] if "ci=5" in (h.get("explanation") or ""))
    assert first["category"] == "light", first
    assert final_on is not None, f"probes on: no final decision within {FINAL_S:g} s: {rec_on}"
    last = next(h for h in rec_on["history"] if h.get("stage") in ("confirmed", "unknown"))
    assert (last["category"], last["stage"]) == ("light", "confirmed"), last
    ident = next((p for p in last["explanation"].split("; ") if p.startswith("identity: ")), last["explanation"])
    request.config.e2e_figures.append(("identity probe",
               f"silent running HomeKit bulb (python-zeroconf): probes off, nothing of itself in {t_off:.0f} s "
               f"(the controller's start included), "
               f"decided on up to {_decided_on(rec_off.get('history', []))} of its packets "
               f"({rec_off.get('category')} {rec_off.get('stage')}); probes on: {counters_on['identity_probes_sent']} "
               f"probe(s), {counters_on.get('identity_records', 0)} identity records, first decision naming it "
               f"{named_on:.1f} s after the switch connected ({first['category']} {first['stage']}), confirmed "
               f"{final_on:.1f} s after: {last['category']} {last['confidence']:.2f} on "
               f"{last['evidence'].get('packets', '?')} packets, {ident}"))
