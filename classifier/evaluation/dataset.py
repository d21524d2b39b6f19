"""From labelled captures to model instances.

A :class:`Stream` is one labelled device in one capture: its segment features, its
sessions (with IP pools) and its CCIT window features. Instances are cut from streams and
never cross a capture's boundary:

* segment windows (Bai et al.): ``t`` consecutive complete segments, sliding by
  ``t - overlap``; a stream with fewer than ``t`` complete segments (short set-up captures)
  gives one window of all its segments, padded with empty segments; windows in which the
  device sent and received nothing are skipped (no evidence to classify);
* session sequences (Chen et al.): up to ``n`` consecutive sessions, sliding by ``n // 2``;
  a stream with fewer sessions gives one shorter sequence;
* CCIT windows: the CCIT features over non-overlapping windows of ``t * T`` seconds.

Every instance carries the stream's labels (category, device type, device) and the keys
that splits use: device *group* (devices that must stay on the same side of an unseen-device
split: units of one type, and captures carrying the same MAC), capture file, dataset, time.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from classifier.capture.labels import Dataset, Device
from classifier.features.instances import SESSION_NUMERIC, Instances, session_numeric
from classifier.features.pipeline import LoadedCapture, load_captures
from classifier.features.segments import CCIT_NAMES, FEATURE_NAMES, ccit_features, segment_features
from classifier.features.sessions import DEFAULT_IDLE_TIMEOUT, Sessions, session_table

_UNIT = re.compile(r"\s*\(unit \d+\)")


def device_type(dev: Device) -> str:
    """A device's type: its name without a "(unit N)" suffix (two units are one type)."""
    return _UNIT.sub("", dev.name)


@dataclass
class Stream:
    capture: str
    dataset: str
    device: str            # Device.key
    type: str
    category: str
    group: str
    mac: int
    t0_ns: int
    end_ns: int
    interval: float
    seg: np.ndarray        # (segments, len(FEATURE_NAMES)) float32
    seg_complete: np.ndarray
    sessions: Sessions     # this device's sessions, pools filled
    ccit: np.ndarray       # (windows, len(CCIT_NAMES)) float32
    ccit_window: float

    def label(self, level: str) -> str:
        return {"category": self.category, "type": f"{self.dataset}/{self.type}", "device": self.device}[level]


def _groups(dataset: Dataset) -> dict[str, str]:
    """Device key -> split group: union of devices sharing a type or a MAC (per dataset)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for dev in dataset.devices():
        union(dev.key, f"type:{dev.dataset}/{device_type(dev)}")
        union(dev.key, f"mac:{dev.dataset}/{dev.mac}")
    out = {}
    for dev in dataset.devices():
        root = find(dev.key)
        members = sorted(k for k in parent if find(k) == root and not k.startswith(("type:", "mac:")))
        out[dev.key] = members[0]
    return out


class CaptureCache:
    """Decoded captures kept in memory, so that several feature settings reuse one decode."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self._caps: dict[str, LoadedCapture] = {}

    def get(self, paths: list[str], desc: str = "decoding") -> list[LoadedCapture]:
        todo = [p for p in paths if p not in self._caps]
        for cap in load_captures(todo, labels=self.dataset, desc=desc):
            self._caps[cap.path] = cap
        return [self._caps[p] for p in paths]


def build_streams(dataset: Dataset, interval: float = 300.0, idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                  ccit_window: float | None = None, pools: Callable[[Sessions], object] | None = None,
                  cache: CaptureCache | None = None) -> list[Stream]:
    """One :class:`Stream` per labelled device per capture of ``dataset``.

    ``pools`` fills a session table's pool column (default: :func:`classifier.pools.resolver.fill_pools`
    in offline mode); ``ccit_window`` defaults to ``interval``.
    """
    if pools is None:
        from classifier.pools.resolver import PoolResolver, fill_pools
        resolver = PoolResolver(mode="offline")
        pools = lambda sess: fill_pools(sess, resolver)  # noqa: E731 - one resolver for every capture
    cache = cache or CaptureCache(dataset)
    groups = _groups(dataset)
    ccit_window = ccit_window or interval
    streams: list[Stream] = []
    paths = [c.path for c in dataset.captures]
    for lc in cache.get(paths):
        labelled = dataset.for_path(lc.path)
        macs = [m for m in labelled.devices if m in set(lc.view.macs.tolist())]
        if not macs:
            continue
        end = int(lc.packets.ts_ns.max())
        seg = segment_features(lc.packets, lc.view, interval, end_ns=end)
        cc = ccit_features(lc.packets, lc.view, ccit_window, end_ns=end)
        sess = session_table(lc.packets, lc.view, idle_timeout)
        pools(sess)
        for mac in macs:
            dev = labelled.devices[mac]
            rows = seg.macs == mac
            ses = sess.take(np.flatnonzero(sess.mac == mac))
            streams.append(Stream(
                capture=lc.path, dataset=dev.dataset, device=dev.key, type=device_type(dev),
                category=dev.category, group=groups[dev.key], mac=mac,
                t0_ns=int(seg.start_ns[rows][0]), end_ns=end, interval=interval,
                seg=seg.values[rows].astype(np.float32), seg_complete=seg.complete[rows],
                sessions=ses, ccit=cc.values[cc.macs == mac].astype(np.float32), ccit_window=ccit_window))
    return streams


# --------------------------------------------------------------------------- instances


def segment_windows(streams: list[Stream], t: int = 6, overlap: int = 3) -> Instances:
    """Windows of ``t`` segments (see the module docstring). ``X["seg"]``: (N, t, every
    segment feature); models pick the columns they read."""
    if not 0 <= overlap < t:
        raise ValueError(f"overlap must be in [0, t), got overlap={overlap}, t={t}")
    total = FEATURE_NAMES.index("n_total")
    stride = t - overlap
    xs, sid, starts = [], [], []
    for i, s in enumerate(streams):
        seg = s.seg
        n_complete = int(s.seg_complete.sum())
        if n_complete >= t:
            seg = seg[:n_complete]
            begins = range(0, n_complete - t + 1, stride)
        else:
            begins = [0]
        for b in begins:
            w = seg[b:b + t]
            if w[:, total].sum() == 0:
                continue
            if len(w) < t:
                w = np.vstack([w, np.zeros((t - len(w), seg.shape[1]), np.float32)])
            xs.append(w)
            sid.append(i)
            starts.append(s.t0_ns + int(b * s.interval * 1e9))
    X = np.stack(xs).astype(np.float32) if xs else np.zeros((0, t, len(FEATURE_NAMES)), np.float32)
    return Instances({"seg": X}, np.asarray(sid, np.int64), np.asarray(starts, np.int64), streams)


def session_sequences(streams: list[Stream], n: int = 16, stride: int | None = None,
                      prefixes: tuple[int, ...] = ()) -> Instances:
    """Sequences of up to ``n`` sessions. ``X["pool"]``: (N, n) pool names ('' = padding),
    ``X["num"]``: (N, n, len(SESSION_NUMERIC)), ``X["length"]``: (N,). ``prefixes`` adds, per stream, its first
    k sessions for each k given (what the controller sees early on)."""
    stride = stride or max(1, n // 2)
    pools, nums, lengths, sid, starts = [], [], [], [], []
    for i, st in enumerate(streams):
        s = st.sessions
        m = len(s)
        if m == 0:
            continue
        num = session_numeric(s, SESSION_NUMERIC)
        begins = list(range(0, m - n + 1, stride)) if m >= n else [0]
        spans = [(b, min(b + n, m)) for b in begins] + [(0, k) for k in prefixes if k < min(n, m)]
        for b, e in spans:
            p = np.full(n, "", dtype=object)
            p[: e - b] = s.pool[b:e]
            x = np.zeros((n, num.shape[1]), np.float32)
            x[: e - b] = num[b:e]
            pools.append(p)
            nums.append(x)
            lengths.append(e - b)
            sid.append(i)
            starts.append(int(s.start_ns[b]))
    X = {
        "pool": np.stack(pools) if pools else np.zeros((0, n), dtype=object),
        "num": np.stack(nums) if nums else np.zeros((0, n, len(SESSION_NUMERIC)), np.float32),
        "length": np.asarray(lengths, np.int64),
    }
    return Instances(X, np.asarray(sid, np.int64), np.asarray(starts, np.int64), streams)


def ccit_windows(streams: list[Stream]) -> Instances:
    """CCIT feature rows with traffic. ``X["ccit"]``: (N, 11)."""
    xs, sid, starts = [], [], []
    for i, s in enumerate(streams):
        for k, row in enumerate(s.ccit):
            if row[CCIT_NAMES.index("avg_packet_size")] <= 0:
                continue
            xs.append(row)
            sid.append(i)
            starts.append(s.t0_ns + int(k * s.ccit_window * 1e9))
    X = np.stack(xs).astype(np.float32) if xs else np.zeros((0, len(CCIT_NAMES)), np.float32)
    return Instances({"ccit": X}, np.asarray(sid, np.int64), np.asarray(starts, np.int64), streams)


def capture_name(path: str) -> str:
    return os.path.basename(path)
