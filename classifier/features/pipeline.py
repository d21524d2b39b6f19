"""Captures -> packets -> device streams -> features, for one or many files.

This is the one path every offline tool takes (CLI, training, evaluation); the controller
feeds the same feature functions with mirrored packets (see ``controller_app.core``).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from classifier.capture.decode import decode
from classifier.capture.labels import Dataset
from classifier.capture.reader import capture_paths, read_frames
from classifier.features.identity import IdentityRecords, extract
from classifier.capture.packets import Packets
from classifier.features.devices import DeviceView, as_mac_ints, split_devices


@dataclass
class LoadedCapture:
    """One capture, decoded and split by device, with the identity evidence its devices sent
    (read from the frames while they are at hand: no capture is parsed twice)."""

    path: str
    packets: Packets
    view: DeviceView
    warnings: list = field(default_factory=list)
    identity: IdentityRecords = field(default_factory=IdentityRecords.empty)


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "file"):
    """A progress bar on a terminal (stderr), nothing otherwise."""
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=None, leave=False, file=sys.stderr)


def load_captures(paths: Iterable[str], gateways: Iterable[int | str] = (), labels: Dataset | None = None,
                  desc: str = "reading") -> Iterator[LoadedCapture]:
    """Read, decode and split each capture; gateway MACs from labels are excluded too."""
    paths = capture_paths(paths)
    for path in progress(paths, total=len(paths), desc=desc):
        yield load_capture(path, gateways, labels)


def load_capture(path: str, gateways: Iterable[int | str] = (), labels: Dataset | None = None) -> LoadedCapture:
    """Read, decode and split one capture (its warnings issued, and kept in the result)."""
    frames = read_frames(path)
    warns: list = list(frames.warnings)
    pk = decode(frames)
    identity = extract(frames.buf, frames.offset, frames.caplen, frames.wirelen, pk, frames.source, warns)
    del frames
    for w in warns:
        warnings.warn(w, stacklevel=3)
    gw = set(as_mac_ints(list(gateways)).tolist())
    if labels is not None:
        cap = labels.for_path(path)
        if cap is not None:
            gw |= cap.gateways
    return LoadedCapture(path, pk, split_devices(pk, gateways=sorted(gw)), warns, identity)


def device_summary(pk: Packets, view: DeviceView, n_sessions: np.ndarray) -> dict[int, dict]:
    """Per device: packets, bytes, first and last timestamp (ns), sessions."""
    out = {}
    lengths = pk.wire_len[view.pkt].astype(np.int64)
    ts = pk.ts_ns[view.pkt]
    for d, mac in enumerate(view.macs.tolist()):
        sl = view.entries(d)
        out[mac] = {
            "packets": sl.stop - sl.start,
            "bytes": int(lengths[sl].sum()),
            "first_ns": int(ts[sl].min()),
            "last_ns": int(ts[sl].max()),
            "sessions": int(n_sessions[d]) if d < len(n_sessions) else 0,
        }
    return out
