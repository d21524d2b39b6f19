"""Replaying captures through the lab: which host sends which frame, tcpreplay timing, and what
compressing time does to the features the controller computes.

A capture (a whole-home capture, or one the project generates) is split by sender: each
device's own frames go to that device's host, which sends them under the device's own MAC
and addresses; frames from the gateway (the router and the internet behind it) go to the
gateway host, in one stream per device they are for (and one for group-addressed frames).
Each stream is replayed by its own ``tcpreplay -x K`` (K = the speed-up) in its host, started
``(first frame - t0) / K`` seconds after a common start, so that the hosts keep the capture's
timeline, K times faster.

**Time compression.** K times faster, a 300 s segment of the capture lasts 300/K s, and a
60 s session idle timeout 60/K s. The controller's ``--time-scale K`` stretches the times it
gives the classifier back (t0 + (t - t0)·K), so segments and sessions are cut in the capture's
own time; what remains is the replay's timing error, multiplied by K: a frame sent 2 ms late
is seen 2·K ms late in capture time. Near a segment boundary it can change segment (moving one
packet from one segment's counts and length statistics to the next), and a gap close to the
idle timeout can split or join a session. The mirror meter is in real time: at K times the
speed a device reaches its packets-per-second cap K times sooner, so the harness raises
``--mirror-rate-pps`` K times to keep the cap where it is in capture time.
:func:`measure_effects` measures all of this on a replay (timing error, segment and session
differences, per device) from a capture taken on the gateway host.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifier.capture.reader import read_frames
from classifier.capture.decode import decode
from classifier.features.devices import is_unicast, split_devices
from classifier.features.identity import IdentityRecords, extract
from classifier.errors import IotClassError
from classifier.capture.labels import LabelledCapture, load_labels
from classifier.capture.packets import Packets, mac_to_int, mac_to_str
from classifier.capture.writer import Record, write_pcap
from classifier.engine.replay import DECIDE_MIN_PACKETS, replay_decisions
from classifier.features.segments import segment_features
from classifier.features.sessions import session_table

SEC = 1_000_000_000
PAPER = ("n_user", "len_user_mean", "len_user_max", "n_control", "len_control_mean", "len_control_max")


class ReplayError(IotClassError):
    pass


@dataclass
class ReplayHost:
    name: str              #: Mininet host name
    mac: str
    device: str = ""       #: name in devices.csv
    category: str = ""     #: true category ('' for the gateway)
    packets: int = 0       #: frames this host sends


@dataclass
class ReplayStream:
    """One tcpreplay process: frames one host sends, in one file."""

    host: str
    label: str
    pcap: Path
    packets: int
    first_ns: int          #: capture time of its first frame


@dataclass
class ReplayPlan:
    source: str
    gateway: ReplayHost
    devices: list[ReplayHost]
    t0_ns: int             #: capture time the replay starts at
    end_ns: int            #: capture time of the last frame replayed
    streams: list[ReplayStream] = field(default_factory=list)
    packets: Packets = field(default=None, repr=False)     #: every frame replayed, decoded (capture time)
    frames: list = field(default_factory=list, repr=False)  #: their bytes
    stream_of: np.ndarray = field(default=None, repr=False)  #: per frame: index into ``streams``
    identity: IdentityRecords = field(default=None, repr=False)  #: what the replayed frames say of their senders

    def hosts(self) -> list[ReplayHost]:
        return [*self.devices, self.gateway]

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.t0_ns) / SEC

    def ip_of(self, mac: str) -> str | None:
        """The IPv4 address ``mac`` sends from most often in the replay (None if it sends no IPv4)."""
        pk = self.packets
        sel = (pk.eth_src == mac_to_int(mac)) & (pk.ip_version == 4)
        if not sel.any():
            return None
        lo = pk.src_ip[sel][:, 1].astype(np.uint64) & np.uint64(0xFFFFFFFF)
        vals, counts = np.unique(lo, return_counts=True)
        return str(ipaddress.IPv4Address(int(vals[counts.argmax()])))

    def gateway_ip(self) -> str | None:
        """The gateway's own LAN address: the private IPv4 address devices send to most often
        through the gateway's MAC (its DNS, typically)."""
        pk = self.packets
        sel = (pk.eth_dst == mac_to_int(self.gateway.mac)) & (pk.ip_version == 4)
        lo = pk.dst_ip[sel][:, 1].astype(np.uint64) & np.uint64(0xFFFFFFFF)
        vals, counts = np.unique(lo, return_counts=True)
        for v in vals[np.argsort(-counts, kind="stable")].tolist():
            a = ipaddress.IPv4Address(int(v))
            if a.is_private:
                return str(a)
        return None

    def device_by_host(self, host: str) -> ReplayHost:
        for d in self.devices:
            if d.name == host:
                return d
        raise KeyError(host)

    def device(self, mac: str) -> ReplayHost:
        for d in self.devices:
            if d.mac == mac:
                return d
        raise KeyError(mac)


def plan_capture(path: str | Path, labels_csv: str | Path, workdir: str | Path, start_s: float = 0.0,
                 duration_s: float | None = None, macs: list[str] | None = None,
                 host_names: dict | None = None) -> ReplayPlan:
    """Split ``path`` (frames from ``start_s`` to ``start_s + duration_s`` after its first
    frame) into replay streams (one pcap each) in ``workdir``.

    Devices: those labelled in ``labels_csv`` (any category but ``gateway``) that send or
    receive a frame in the window, or only ``macs``. Replayed: every frame a device sends, and
    every frame the gateway sends to a device or to a group address; frames from any other
    address are sent from the gateway host too (it stands for everything beyond the LAN)."""
    path = str(path)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    labels = load_labels(str(labels_csv))
    # (a by-file devices.csv yields one labelled capture per row: merge those of this file)
    mine = [c for c in labels.captures if os.path.realpath(c.path) == os.path.realpath(path)]
    if not mine:
        raise ReplayError(f"{labels_csv}: labels nothing in {path}")
    cap = LabelledCapture(path, mine[0].dataset)
    for c in mine:
        cap.devices.update(c.devices)
        cap.gateways |= c.gateways
    if not cap.gateways:
        raise ReplayError(f"{labels_csv}: no device of category gateway (the router the replay's gateway host "
                          f"stands for)")
    gw_mac = min(cap.gateways)
    frames = read_frames(path)
    pk = decode(frames)
    if len(pk) == 0:
        raise ReplayError(f"{path}: no packets")
    cut = frames.caplen < frames.wirelen
    if cut.any():
        raise ReplayError(f"{path}: {int(cut.sum())} of {len(pk)} frames were captured cut short (e.g. "
                          f"{int(frames.caplen[cut][0])} of {int(frames.wirelen[cut][0])} bytes): a replay would send "
                          f"the cut frames, not the devices' traffic")
    t_first = int(pk.ts_ns.min())
    lo = t_first + int(start_s * SEC)
    hi = lo + int(duration_s * SEC) if duration_s is not None else int(pk.ts_ns.max()) + 1
    in_window = (pk.ts_ns >= lo) & (pk.ts_ns < hi)
    labelled = {m: d for m, d in cap.devices.items() if d.category != "gateway"}
    wanted = {mac_to_int(m) for m in macs} if macs is not None else set(labelled)
    missing = wanted - set(labelled)
    if missing:
        raise ReplayError(f"{labels_csv}: {', '.join(mac_to_str(m) for m in sorted(missing))} not labelled for {path}")
    src, dst = pk.eth_src, pk.eth_dst
    present = set(np.unique(np.concatenate([src[in_window], dst[in_window]])).tolist())
    devs = sorted(m for m in wanted if m in present)
    if not devs:
        raise ReplayError(f"{path}: none of the devices sends or receives a frame in the window")
    dev_arr = np.array(devs, dtype=np.uint64)
    from_dev = np.isin(src, dev_arr)
    to_dev = np.isin(dst, dev_arr)
    group = ~is_unicast(dst)
    keep = in_window & (from_dev | ((src == np.uint64(gw_mac)) & (to_dev | group)) | (~from_dev & to_dev))
    idx = np.flatnonzero(keep)
    order = {m: i for i, m in enumerate(devs)}
    host_names = host_names or {}
    devices = [ReplayHost(host_names.get(mac_to_str(m), f"h{i + 1}"), mac_to_str(m), labelled[m].name,
                          labelled[m].category) for i, m in enumerate(devs)]
    gateway = ReplayHost("gw", mac_to_str(gw_mac), "gateway", "")
    # Streams: each device host sends its own frames; the gateway host sends, in one stream per
    # device, the frames for that device (so both directions of a device keep the same timeline
    # and no single tcpreplay carries the whole home), plus one stream of group-addressed frames.
    labels_of = [(d, d.name) for d in devices] + [(gateway, f"gw-{d.name}") for d in devices]
    labels_of.append((gateway, "gw-group"))
    n = len(devices)
    stream_of = np.empty(len(idx), dtype=np.int64)
    for j, (sm, dm) in enumerate(zip(src[idx].tolist(), dst[idx].tolist())):
        stream_of[j] = order[sm] if sm in order else (n + order[dm] if dm in order else 2 * n)
    data = [bytes(frames.buf[int(frames.offset[r]):int(frames.offset[r]) + int(frames.caplen[r])]) for r in idx.tolist()]
    ts = frames.ts_ns[idx]
    streams = []
    stream_index = np.full(len(idx), -1, dtype=np.int64)
    for k, (host, label) in enumerate(labels_of):
        pos = np.flatnonzero(stream_of == k)
        if not len(pos):
            continue
        stream_index[pos] = len(streams)
        host.packets += len(pos)
        pcap = workdir / f"{label}.pcap"
        with open(pcap, "wb") as fh:
            write_pcap(fh, (Record(int(ts[j]), data[j]) for j in pos.tolist()), nano=True)
        streams.append(ReplayStream(host.name, label, pcap, len(pos), int(ts[pos[0]])))
    replayed = pk.take(idx)
    identity = extract(frames.buf, frames.offset, frames.caplen, frames.wirelen, pk, path, warnings=[])
    identity = identity.take(np.flatnonzero(np.isin(identity.row, idx)))
    return ReplayPlan(path, gateway, devices, int(replayed.ts_ns.min()), int(replayed.ts_ns.max()), streams, replayed,
                      data, stream_index, identity)


def plan_synthetic(workdir: str | Path, duration_s: float = 1800.0, categories: list[str] | None = None,
                   seed: int = 3, identity: bool = False) -> tuple[ReplayPlan, Path]:
    """A capture the project generates (:mod:`testing.synth`, one device per category) and
    its plan; ``identity``: the light, the hub and the sensor also name themselves (a DHCP host name and
    HomeKit mDNS announcements, :data:`testing.synth.IDENTITY`). Returns (plan, devices.csv)."""
    from testing.synth import default_network, write_devices_csv, write_network_capture
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    net = default_network(categories, identity=identity)
    capture = workdir / "synthetic.pcap"
    labels = workdir / "devices.csv"
    write_network_capture(str(capture), net, duration_s, seed=seed)
    write_devices_csv(str(labels), net)
    return plan_capture(capture, labels, workdir / "hosts"), labels


# ------------------------------------------------------------------ running a replay


@dataclass
class ReplayRun:
    speedup: float
    start_ns: int                  #: wall-clock time (time.time_ns) that capture time t0 maps to
    procs: dict = field(default_factory=dict)     # stream label -> Popen
    outputs: dict = field(default_factory=dict)   # stream label -> tcpreplay's report
    errors: list = field(default_factory=list)
    realtime: bool = False         #: tcpreplay ran under the real-time scheduler
    _scheduler: threading.Thread | None = field(default=None, repr=False)

    def running(self) -> bool:
        return bool(self._scheduler and self._scheduler.is_alive()) or any(p.poll() is None
                                                                          for p in self.procs.values())

    def wall_ns(self, capture_ns: int, t0_ns: int) -> int:
        return self.start_ns + int((capture_ns - t0_ns) / self.speedup)

    def capture_ns(self, wall_ns, t0_ns: int):
        return t0_ns + (np.asarray(wall_ns, dtype=np.float64) - self.start_ns) * self.speedup


def start_replay(lab, plan: ReplayPlan, speedup: float, lead_s: float = 0.5, rt_priority: int | None = 10,
                 startup_s: float = 0.07) -> ReplayRun:
    """Start every stream's tcpreplay on the plan's timeline, ``speedup`` times faster, from a
    scheduler thread (returns at once; :func:`wait_replay` waits for the end).

    tcpreplay's multiplier mode sleeps from one packet to the next, so every late wake-up adds
    up over a stream; under the real-time scheduler (``chrt -f``) a wake-up is a few tens of
    microseconds late instead of a few hundred (``rt_priority=None``: normal scheduling).
    tcpreplay needs about ``startup_s`` from its launch to its first frame (measured here:
    65 ms idle, 100-150 ms under load), so each stream is launched that much early;
    :func:`measure_effects` reports how late the first frames still were."""
    if speedup <= 0:
        raise ReplayError(f"speed-up {speedup!r}: must be positive")
    prefix = ["chrt", "-f", str(rt_priority)] if rt_priority else []
    if prefix and plan.streams:
        # without CAP_SYS_NICE (some containers) the real-time scheduler is refused: go without
        probe = subprocess.run(lab.host_cmd(plan.streams[0].host, [*prefix, "true"]), capture_output=True)
        if probe.returncode != 0:
            prefix = []
    run = ReplayRun(speedup, time.time_ns() + int(max(lead_s, startup_s) * SEC))
    run.realtime = bool(prefix)
    todo = sorted(plan.streams, key=lambda st: st.first_ns)

    def launch():
        for st in todo:
            at = run.wall_ns(st.first_ns, plan.t0_ns) - int(startup_s * SEC)
            delay = (at - time.time_ns()) / SEC
            if delay > 0:
                time.sleep(delay)
            cmd = [*prefix, "tcpreplay", "-q", "-T", "nano", "-K", "-x", f"{speedup:g}", "-i", lab.intf(st.host),
                   str(st.pcap)]
            try:
                run.procs[st.label] = lab.popen(st.host, cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                text=True)
            except Exception as exc:  # noqa: BLE001 - reported by wait_replay
                run.errors.append(f"{st.label}: {exc}")

    t = threading.Thread(target=launch, name="replay-scheduler", daemon=True)
    t.start()
    run._scheduler = t
    return run


def wait_replay(run: ReplayRun, timeout: float) -> dict:
    """Wait for every tcpreplay; returns stream -> frames sent. ReplayError if one failed."""
    deadline = time.monotonic() + timeout
    if run._scheduler is not None:
        run._scheduler.join(max(0.0, deadline - time.monotonic()))
    sent = {}
    for name, p in run.procs.items():
        try:
            out, _ = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            run.errors.append(f"{name}: tcpreplay still running after {timeout:g} s")
        run.outputs[name] = out
        if p.returncode != 0:
            run.errors.append(f"{name}: tcpreplay exit {p.returncode}: {out.strip()[-300:]}")
        sent[name] = _sent(out)
    if run.errors:
        raise ReplayError("; ".join(run.errors))
    return sent


def _sent(report: str) -> int:
    for line in report.splitlines():
        line = line.strip()
        if line.startswith("Successful packets:"):
            return int(line.split(":")[1])
    return -1


# ------------------------------------------------------------------ what compression does


def effect_text(speedup: float, mirror_rate_pps: int, interval_s: float = 300.0, idle_s: float = 60.0) -> str:
    """What a speed-up of K does, in words (see the module docstring)."""
    k = speedup
    return (f"speed-up {k:g}: a {interval_s:g} s segment lasts {interval_s / k:.2f} s of replay and a {idle_s:g} s "
            f"session idle timeout {idle_s / k:.2f} s; with --time-scale {k:g} the classifier sees capture time "
            f"again, but every millisecond of replay timing error becomes {k:g} ms of capture time (a packet near a "
            f"segment boundary can change segment; a gap near the idle timeout can split or join a session); "
            f"mirror meter {mirror_rate_pps} packets/s real = {mirror_rate_pps / k:g} packets/s of capture time")


def observed_at_gateway(plan: ReplayPlan) -> np.ndarray:
    """Which replayed frames a capture on the gateway host sees: those it sends, those sent
    to it, and group-addressed ones (flooded)."""
    pk = plan.packets
    gw = np.uint64(mac_to_int(plan.gateway.mac))
    return (pk.eth_src == gw) | (pk.eth_dst == gw) | ~is_unicast(pk.eth_dst)


def _occurrence_keys(datas) -> list:
    """(bytes, n-th time these bytes occur): identifies a frame of a replay."""
    seen: dict = {}
    out = []
    for d in datas:
        k = seen.get(d, 0)
        seen[d] = k + 1
        out.append((d, k))
    return out


def measure_effects(plan: ReplayPlan, run: ReplayRun, gateway_capture: str | Path, interval_s: float = 300.0,
                    idle_s: float = 60.0) -> dict:
    """Compare, device by device, the frames a capture on the gateway host saw (times mapped
    back to capture time: t0 + (t - start)·K) with the same frames in the original capture.

    Frames are matched by their bytes (and how many times those bytes occurred before), so a
    frame the policy dropped is counted as not delivered and does not disturb the others. Over
    the matched frames: timing error, frames that changed segment, the paper's six segment
    features (each stream cut from its own first frame, as the controller does) and sessions."""
    fr = read_frames(str(gateway_capture))
    seen_pk = decode(fr)
    seen_ts = np.rint(run.capture_ns(seen_pk.ts_ns, plan.t0_ns)).astype(np.int64)
    seen_data = [bytes(fr.buf[int(fr.offset[i]):int(fr.offset[i]) + int(fr.caplen[i])]) for i in range(len(fr.offset))]
    at_gw = np.flatnonzero(observed_at_gateway(plan))
    pos = {key: i for i, key in enumerate(_occurrence_keys(seen_data))}
    orig_keys = _occurrence_keys(plan.frames)
    match = np.full(len(plan.frames), -1, dtype=np.int64)
    for i in at_gw.tolist():
        match[i] = pos.get(orig_keys[i], -1)
    pk = plan.packets
    gw = mac_to_int(plan.gateway.mac)
    step = int(interval_s * SEC)
    out = {"speedup": run.speedup, "devices": {}}
    errors_all = []
    for dev in plan.devices:
        mac = mac_to_int(dev.mac)
        mine = at_gw[((pk.eth_src[at_gw] == mac) | (pk.eth_dst[at_gw] == mac))]
        got = mine[match[mine] >= 0]
        row = {"packets": len(mine), "seen": len(got), "not_delivered": len(mine) - len(got)}
        if len(got):
            t_orig = pk.ts_ns[got]
            t_seen = seen_ts[match[got]]
            err = (t_seen - t_orig) / SEC
            errors_all.append(err)
            row["timing_error_s"] = {"median": float(np.median(np.abs(err))),
                                     "p99": float(np.percentile(np.abs(err), 99)), "max": float(np.abs(err).max())}
            t_first = int(pk.ts_ns[mine].min())
            row["packets_moved_segment"] = int(((t_orig - t_first) // step != (t_seen - t_first) // step).sum())
            o = pk.take(got)
            s = pk.take(got)
            order = np.argsort(t_seen, kind="stable")
            s = s.take(order)
            s.ts_ns = t_seen[order]
            fo = segment_features(o, split_devices(o, gateways=[gw], devices=[mac]), interval_s)
            fs = segment_features(s, split_devices(s, gateways=[gw], devices=[mac]), interval_s)
            n = min(len(fo.start_ns), len(fs.start_ns))
            ok = fo.complete[:n] & fs.complete[:n] & (fo.values[:n, fo.names.index("n_total")] > 0)
            row["segments"] = int(ok.sum())
            if ok.any():
                cols = [fo.names.index(name) for name in PAPER]
                a, b = fo.values[:n][ok][:, cols], fs.values[:n][ok][:, cols]
                r = (np.abs(a - b) / np.maximum(np.abs(a), 1e-9)).ravel()
                row["paper_features_rel_diff"] = {"median": float(np.median(r)), "max": float(r.max())}
            so = session_table(o, split_devices(o, gateways=[gw], devices=[mac]), idle_s)
            ss = session_table(s, split_devices(s, gateways=[gw], devices=[mac]), idle_s)
            row["sessions"] = {"original": len(so), "seen": len(ss)}
        out["devices"][dev.mac] = row
    # how late each stream's first frame was (real seconds): tcpreplay's start-up
    starts = []
    for k in range(len(plan.streams)):
        first = np.flatnonzero(plan.stream_of == k)[:1]
        if len(first) and match[first[0]] >= 0:
            starts.append((seen_ts[match[first[0]]] - pk.ts_ns[first[0]]) / SEC / run.speedup)
    if starts:
        out["start_late_real_s"] = {"median": float(np.median(starts)), "max": float(np.max(starts))}
    allerr = np.abs(np.concatenate(errors_all)) if errors_all else np.zeros(0)
    if len(allerr):
        out["timing_error_s"] = {"median": float(np.median(allerr)), "p99": float(np.percentile(allerr, 99)),
                                 "max": float(allerr.max())}
    rows = list(out["devices"].values())
    for key in ("packets", "seen", "not_delivered", "packets_moved_segment"):
        out[key] = sum(r.get(key, 0) for r in rows)
    out["sessions_original"] = sum(r.get("sessions", {}).get("original", 0) for r in rows)
    out["sessions_seen"] = sum(r.get("sessions", {}).get("seen", 0) for r in rows)
    out["segments"] = sum(r.get("segments", 0) for r in rows)
    meds = [r["paper_features_rel_diff"]["median"] for r in rows if "paper_features_rel_diff" in r]
    maxs = [r["paper_features_rel_diff"]["max"] for r in rows if "paper_features_rel_diff" in r]
    if meds:
        out["paper_features_rel_diff"] = {"median_of_devices": float(np.median(meds)), "max": float(max(maxs))}
    return out


def format_effects(eff: dict) -> str:
    t = eff.get("timing_error_s", {})
    f = eff.get("paper_features_rel_diff", {})
    return (f"measured at speed-up {eff['speedup']:g} on the gateway host: {eff['seen']} of {eff['packets']} device "
            f"frames seen there ({eff['not_delivered']} not delivered: blocked, rate-limited or lost); timing error in capture time median {t.get('median', float('nan')):.3f} s, "
            f"p99 {t.get('p99', float('nan')):.3f} s, max {t.get('max', float('nan')):.3f} s; "
            f"{eff['packets_moved_segment']} frames changed 300 s segment; "
            + (f"over {eff['segments']} complete segments the paper's six segment features differ by "
               f"{100 * f['median_of_devices']:.2f}% (median over devices), {100 * f['max']:.1f}% at most; "
               if f else "no complete segment to compare; ")
            + f"sessions {eff['sessions_seen']} seen vs {eff['sessions_original']} in the capture")


def simulate_decisions(plan: ReplayPlan, step_s: float, engine=None, min_packets: int = DECIDE_MIN_PACKETS) -> dict:
    """What the classifier decides on each device's traffic, as the controller asks it
    (:func:`classifier.engine.replay.replay_decisions`): every ``step_s`` of capture time (the
    decision interval times the speed-up) from the device's ``min_packets``-th packet on, only
    after new packets, until its first confirmed or unknown decision, which is final (mirroring
    stops there); with a perfect replay, and the identity records the replayed frames carry (as
    the controller reads them from the mirrored packets). Returns MAC -> {"final": (category,
    stage) of the final decision, else of the last one, or None; "replay": the
    :class:`~classifier.engine.replay.Replay`}."""
    from classifier.engine.engine import load_engine
    engine = engine or load_engine()
    out = {}
    for dev in plan.devices:
        rep = replay_decisions(engine, plan.packets, mac_to_int(dev.mac), step_s, min_packets, end_ns=plan.end_ns,
                               identity=plan.identity)
        d = rep.final or rep.last
        out[dev.mac] = {"final": (d.category, d.stage) if d is not None else None, "replay": rep}
    return out
