"""End to end on Mininet and Open vSwitch: a device that lies about itself gets no more than an
unknown device would.

The device, a lab host, says it is a camera: a DHCP request with the host name ``porch-camera``
and a HomeKit accessory announced over mDNS with ``ci=17`` (IP camera; python-zeroconf, an
independent responder). The policy gives cameras a priority queue and DSCP EF, unknown devices
256 kbps. The controller decides ``camera`` on those claims alone, and the device's traffic to
the other lab host, offered at three times 256 kbps, is held to the unknown rate limit (the
tolerance of ``test_e2e``'s rate test: 10%) and not marked. The same policy with
``trust_claims: [camera]`` (reloaded live) gives the same decision the camera's own action: the
traffic is neither limited nor left unmarked.

The engine is the shipped one: the claims name the device's category with knowledge hits from two
kinds of record, so the identity voter confirms it alone, and no behaviour model agrees on the few
sessions it has (a behaviour model counts as agreeing only on the full behaviour evidence).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab_required import ROOT, require_lab  # noqa: E402

require_lab()
pytest.importorskip("zeroconf", reason="the liar's mDNS announcements need python-zeroconf (make install: test extras)")

from topologies.harness import Controller, Lab, free_port  # noqa: E402
from topologies.scenario import GatewayTap, steady_kbps, write_probe  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LIAR_MAC = "00:00:5e:00:53:42"          # globally administered (IANA's documentation block): not a phone's
GW_MAC = "02:00:00:00:09:fe"
LIAR_IP, GW_IP = "10.0.9.2", "10.0.9.1"
LIMIT_KBPS = 256
POLICY = ("# end-to-end claims test: cameras get a queue and DSCP EF, unknown devices 256 kbps\n"
          "version: 1\nenforce_on: confirmed\nmin_confidence: 0.5\ndefault: allow\n"
          f"unknown: {{rate_limit_kbps: {LIMIT_KBPS}}}\ncategories:\n  camera: {{priority: 1, dscp: 46}}\n")
TRUSTED = POLICY + "trust_claims: [camera]\n"
DHCP = ("import socket, sys\n"
        "from testing.synth import dhcp_request\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind((sys.argv[1], 0))\n"
        f"s.send(dhcp_request({LIAR_MAC!r}, 'porch-camera'))\n")
SENDER = ("import socket, time\n"
          "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
          "while True:\n"
          f"    s.sendto(b'x' * 60, ({GW_IP!r}, 9000)); time.sleep(0.5)\n")
SECONDS = 10


def offer(lab: Lab, pcap: Path, work: Path, name: str) -> tuple[dict, dict, int]:
    """The liar's probe frames replayed at three times the limit for SECONDS: what the other lab
    host got from it (timestamps and lengths; DSCP of each IPv4 frame) and how many were sent."""
    tap = GatewayTap(lab, work / f"{name}.pcapng", [LIAR_MAC])
    out = subprocess.run(lab.host_cmd("liar", ["tcpreplay", "-q", "-K", "--mbps", f"{3 * LIMIT_KBPS / 1000:g}",
                                               "--loop", "0", "--duration", str(SECONDS), "-i", lab.intf("liar"),
                                               str(pcap)]), capture_output=True, text=True, timeout=SECONDS + 30)
    tap.stop()
    said = out.stdout + out.stderr
    sent = int(said.split("Successful packets:")[1].split()[0]) if "Successful packets:" in said else 0
    return tap.frames()[LIAR_MAC], tap.ipv4_dscp()[LIAR_MAC], sent


def test_a_device_that_claims_to_be_a_camera_gets_the_unknown_limit_unless_its_claims_are_trusted(tmp_path,
                                                                                                   request):
    of_port = free_port()
    spec = {"topology": "single", "devices": [["liar", LIAR_MAC]], "gateway_mac": GW_MAC, "prefix": "iotcl",
            "controller": ["127.0.0.1", of_port]}
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    pcap = write_probe(tmp_path / "offer.pcap", LIAR_MAC, LIAR_IP, GW_MAC, GW_IP, 50)
    ctl = Controller(tmp_path / "ctl", policy, ["--gateway-macs", GW_MAC, "--decide-interval", "2"], of_port=of_port)
    with Lab(spec, tmp_path / "lab") as lab:
        intf = lab.intf("liar")
        lab.run("liar", ["ip", "addr", "add", f"{LIAR_IP}/24", "dev", intf])
        lab.run("liar", ["ip", "neigh", "replace", GW_IP, "lladdr", GW_MAC, "dev", intf])
        ctl.start()
        try:
            ctl.wait_switches(1, 60)
            t0 = time.monotonic()
            assert lab.popen("liar", [sys.executable, "-c", DHCP, intf], cwd=str(ROOT)).wait(30) == 0
            time.sleep(1.0)                  # learned from its DHCP request, mirrored: now its announcements
            resp = lab.popen("liar", [sys.executable, "-m", "testing.mdns_responder", LIAR_IP, "Porch Camera", "17"],
                             cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            line = resp.stdout.readline()
            assert line.strip() == "registered", f"the responder did not start: {line}{resp.stdout.read()[-600:]}"
            lab.popen("liar", [sys.executable, "-c", SENDER], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

            def tightened():
                d = ctl.devices().get(LIAR_MAC) or {}
                return d if d.get("stage") == "confirmed" and d.get("enforced") else None
            dev = ctl.wait(tightened, 60, "a confirmed decision on the liar, enforced")
            decided_s = time.monotonic() - t0
            assert (dev["category"], dev["claims_only"], dev["action_tightened"]) == ("camera", True, True), dev
            assert dev["action_basis"] == "intersection of camera and unknown", dev
            assert dev["enforced"] == f"rate_limit_kbps={LIMIT_KBPS}", dev
            hist = ctl.get(f"/devices/{LIAR_MAC}")["history"]
            last = hist[-1]
            assert last["vouching"] == ["identity"] and "ci=17" in last["explanation"], last

            (ts, ln), dscp, sent = offer(lab, pcap, tmp_path, "claims")
            assert len(ts) > 10 and sent, f"{len(ts)} frames delivered of {sent} sent"
            rate = steady_kbps(ts, ln)
            assert abs(rate - LIMIT_KBPS) <= 0.1 * LIMIT_KBPS, f"delivered {rate:.1f} kbps, limit {LIMIT_KBPS} kbps"
            assert set(dscp) == {0}, f"claims alone, yet marked: DSCP {sorted(set(dscp))}"

            policy.write_text(TRUSTED)       # the site trusts cameras' claims: the camera's own action
            dev = ctl.wait(lambda: (ctl.devices().get(LIAR_MAC) or {}).get("enforced") == "priority=1 dscp=46"
                           and ctl.devices()[LIAR_MAC], 30, "the camera's action once its claims are trusted")
            assert dev["action_basis"] == "camera (claims trusted: trust_claims)" and not dev["action_tightened"], dev
            (ts2, ln2), dscp2, sent2 = offer(lab, pcap, tmp_path, "trusted")
            rate2 = steady_kbps(ts2, ln2)
            probe = int((ln2 == 1000).sum())            # the offered frames (the rest: its stream, mDNS)
            assert rate2 > 2 * LIMIT_KBPS, f"trusted: delivered {rate2:.1f} kbps, still limited"
            assert probe == sent2 and set(dscp2) == {46}, (probe, sent2, sorted(set(dscp2)))
        finally:
            ctl.stop()
    request.config.e2e_figures.append(("claims only", (
        f"a liar (DHCP host name 'porch-camera', HomeKit ci=17 via python-zeroconf) decided {last['category']} "
        f"{last['stage']} on identity alone {decided_s:.1f} s after its DHCP request ({last['evidence']}); "
        f"enforced rate_limit_kbps={LIMIT_KBPS} (camera's priority=1 dscp=46 intersected with unknown): offered "
        f"{3 * LIMIT_KBPS} kbps for {SECONDS} s, delivered {rate:.1f} kbps in steady state "
        f"({100 * (rate - LIMIT_KBPS) / LIMIT_KBPS:+.1f}%), DSCP 0; with trust_claims: [camera] reloaded: "
        f"{rate2:.1f} kbps, {probe} of {sent2} offered frames delivered, every frame marked DSCP 46")))
