"""Labelled datasets: capture files -> device MAC -> device name -> category.

``devices.csv`` comes in three layouts, told apart by its header:

* by folder (``folder,mac,device,category``): each folder beside the CSV holds captures of
  one device (the IoT Sentinel layout);
* by file (``file,mac,device,category``): each row names one capture file;
* by MAC (``mac,device,category``): every capture beside the CSV holds all these devices
  (whole-network captures).

A row of category ``gateway`` names a router: its MAC is excluded from device streams.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from classifier.errors import IotClassError
from classifier.capture.packets import mac_to_int, mac_to_str

CATEGORIES = ("camera", "plug", "hub", "sensor", "light", "speaker", "lock", "appliance", "non-iot")
GATEWAY = "gateway"
CAPTURE_SUFFIXES = (".pcap", ".pcapng", ".cap")
COMPRESSED_SUFFIXES = ("", ".gz", ".xz", ".bz2")


class LabelError(IotClassError):
    pass


@dataclass(frozen=True)
class Device:
    """One labelled device. ``key`` identifies it across captures of its dataset."""

    dataset: str
    name: str
    mac: str
    category: str
    unit: str = ""  # the folder (by-folder layout), to tell two units of a type apart

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.unit or self.name}"


@dataclass
class LabelledCapture:
    path: str
    dataset: str
    devices: dict[int, Device] = field(default_factory=dict)
    gateways: set[int] = field(default_factory=set)


@dataclass
class Dataset:
    captures: list[LabelledCapture] = field(default_factory=list)

    def devices(self) -> list[Device]:
        seen: dict[str, Device] = {}
        for cap in self.captures:
            for dev in cap.devices.values():
                seen.setdefault(dev.key, dev)
        return list(seen.values())

    def gateways(self) -> set[int]:
        out: set[int] = set()
        for cap in self.captures:
            out |= cap.gateways
        return out

    def for_path(self, path: str) -> LabelledCapture | None:
        want = os.path.realpath(path)
        for cap in self.captures:
            if os.path.realpath(cap.path) == want:
                return cap
        return None

    def label(self, path: str, mac: int | str) -> Device | None:
        cap = self.for_path(path)
        if cap is None:
            return None
        m = mac if isinstance(mac, int) else mac_to_int(mac)
        return cap.devices.get(m)

    def __add__(self, other: "Dataset") -> "Dataset":
        return Dataset(self.captures + other.captures)


def is_capture_file(name: str) -> bool:
    lower = name.lower()
    return any(lower.endswith(s + c) for s in CAPTURE_SUFFIXES for c in COMPRESSED_SUFFIXES)


def capture_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and is_capture_file(p.name))


def load_labels(csv_path: str | os.PathLike, dataset: str | None = None) -> Dataset:
    """Read one ``devices.csv`` (any of the three layouts) into a :class:`Dataset`."""
    csv_path = Path(csv_path)
    root = csv_path.parent
    dataset = dataset or root.name
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
    except OSError as exc:
        raise LabelError(f"{csv_path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise LabelError(f"{csv_path}: empty, expected a header line")
    header = [h.strip().lower() for h in rows[0]]
    layout = "folder" if "folder" in header else "file" if "file" in header else "mac"
    need = {"folder": ["folder", "mac", "device", "category"], "file": ["file", "mac", "device", "category"],
            "mac": ["mac", "device", "category"]}[layout]
    missing = [c for c in need if c not in header]
    if missing:
        raise LabelError(f"{csv_path}: line 1: missing column(s) {', '.join(missing)}; "
                         "expected folder|file (optional),mac,device,category")
    col = {c: header.index(c) for c in need}

    entries = []  # (line, where, mac int, device name, category)
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < len(header):
            raise LabelError(f"{csv_path}: line {lineno}: {len(row)} fields, expected {len(header)}")
        get = lambda c: row[col[c]].strip()  # noqa: E731
        try:
            mac = mac_to_int(get("mac"))
        except ValueError:
            raise LabelError(f"{csv_path}: line {lineno}: key 'mac': not a MAC address: {get('mac')!r}") from None
        cat = get("category").lower()
        if cat not in CATEGORIES and cat != GATEWAY:
            raise LabelError(f"{csv_path}: line {lineno}: key 'category': {cat!r} is not one of "
                             f"{', '.join(CATEGORIES + (GATEWAY,))}")
        where = get(layout) if layout != "mac" else ""
        entries.append((lineno, where, mac, get("device"), cat))

    out = Dataset()
    if layout == "mac":
        caps = [LabelledCapture(str(p), dataset) for p in capture_files(root)]
        for cap in caps:
            for _, _, mac, name, cat in entries:
                if cat == GATEWAY:
                    cap.gateways.add(mac)
                else:
                    cap.devices[mac] = Device(dataset, name, mac_to_str(mac), cat)
        out.captures = caps
        return out
    for lineno, where, mac, name, cat in entries:
        target = root / where
        if layout == "folder":
            if not target.is_dir():
                raise LabelError(f"{csv_path}: line {lineno}: key 'folder': no folder {target}")
            files = capture_files(target)
        else:
            if not target.is_file():
                raise LabelError(f"{csv_path}: line {lineno}: key 'file': no file {target}")
            files = [target]
        for f in files:
            cap = LabelledCapture(str(f), dataset)
            if cat == GATEWAY:
                cap.gateways.add(mac)
            else:
                cap.devices[mac] = Device(dataset, name, mac_to_str(mac), cat, where if layout == "folder" else "")
            out.captures.append(cap)
    return out


def find_label_files(root: str | os.PathLike) -> list[Path]:
    root = Path(root)
    if root.is_file():
        return [root]
    return sorted(root.rglob("devices.csv"))


def load_datasets(roots: Iterable[str | os.PathLike]) -> Dataset:
    """Every ``devices.csv`` under the given folders (or the CSV files themselves)."""
    out = Dataset()
    for root in roots:
        files = find_label_files(root)
        if not files:
            raise LabelError(f"{root}: no devices.csv found")
        for f in files:
            out = out + load_labels(f)
    return out
