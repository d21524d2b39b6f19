"""MAC address -> the organisation the IEEE registered its prefix to.

Loaded at run time from the registry files Debian ships, never copied into the project:

* ``ieee-data`` (``/usr/share/ieee-data/``): the IEEE's own CSV exports — ``oui.csv``
  (MA-L, 24-bit prefixes), ``mam.csv`` (MA-M, 28-bit), ``oui36.csv`` (MA-S, 36-bit);
* Wireshark's ``manuf`` (``libwireshark-data``, ``/usr/share/wireshark/manuf``), built from the
  same IEEE listings and often newer: it answers prefixes the ``ieee-data`` snapshot lacks.

``$IOT_OUI_FILES`` (paths separated by ``:``) replaces the default list. Where none of the files
exists the registry is empty and says so once (a warning naming the Debian packages); every
look-up then answers ``None`` and the classifier goes on without MAC vendors.

A locally administered address (bit 1 of the first octet: randomised phone MACs, virtual
interfaces) has no registered organisation.
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from functools import lru_cache
from pathlib import Path

IEEE_DIR = Path("/usr/share/ieee-data")
WIRESHARK_MANUF = Path("/usr/share/wireshark/manuf")
DEFAULT_FILES = (IEEE_DIR / "oui.csv", IEEE_DIR / "mam.csv", IEEE_DIR / "oui36.csv", WIRESHARK_MANUF)
LOCAL_BIT = 0x02 << 40

_SUFFIXES = re.compile(
    r"\b(inc|incorporated|corp|corporation|co|company|ltd|limited|llc|gmbh|ag|bv|b\.v|sa|s\.a|srl|spa|plc|pte|"
    r"pty|oy|ab|as|kk|lp|nv|se|technologies|technology|tech|electronics|electronic|international|"
    r"trading|holdings|group|the)\b\.?", re.I)


def vendor_key(organisation: str | None) -> str | None:
    """A short, stable vendor name from a registry organisation: lower case, the first word
    left after dropping punctuation and company-form words ("Amazon Technologies Inc." ->
    "amazon", "TP-LINK TECHNOLOGIES CO.,LTD." -> "tp-link", "Tp-Link Corporation Pte. Ltd." ->
    "tp-link")."""
    if not organisation:
        return None
    text = organisation.lower().replace(",", " ").replace("(", " ").replace(")", " ")
    text = _SUFFIXES.sub(" ", text)
    words = [w.strip(".-&") for w in text.split()]
    words = [w for w in words if w]
    return words[0] if words else None


class OuiRegistry:
    """Prefix tables (24, 28 and 36 bits) -> organisation."""

    def __init__(self, sources: list[str] | None = None):
        self.tables: dict[int, dict[int, str]] = {24: {}, 28: {}, 36: {}}
        self.sources = list(sources or [])

    @property
    def available(self) -> bool:
        return any(self.tables.values())

    def __len__(self) -> int:
        return sum(len(t) for t in self.tables.values())

    def add(self, bits: int, prefix: int, organisation: str, replace: bool = False) -> None:
        table = self.tables[bits]
        if replace or prefix not in table:
            table[prefix] = organisation

    def lookup(self, mac: int) -> str | None:
        """The organisation of ``mac`` (48-bit int), longest registered prefix first."""
        mac = int(mac)
        if mac & LOCAL_BIT:
            return None
        for bits in (36, 28, 24):
            org = self.tables[bits].get(mac >> (48 - bits))
            if org:
                return org
        return None

    def vendor(self, mac: int) -> str | None:
        return vendor_key(self.lookup(mac))

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, paths: list[str | os.PathLike] | None = None, warn: bool = True) -> "OuiRegistry":
        if paths is None:
            env = os.environ.get("IOT_OUI_FILES")
            paths = [p for p in env.split(":") if p] if env else list(DEFAULT_FILES)
        reg = cls()
        for p in map(Path, paths):
            if not p.is_file():
                continue
            if p.suffix == ".csv":
                reg._read_ieee_csv(p)
            else:
                reg._read_manuf(p)
            reg.sources.append(str(p))
        if not reg.available and warn:
            warnings.warn("no MAC vendor registry found (looked for " + ", ".join(map(str, paths)) +
                          "; install the Debian package ieee-data or libwireshark-data): MAC vendors unknown",
                          stacklevel=2)
        return reg

    def _read_ieee_csv(self, path: Path) -> None:
        bits = {"MA-L": 24, "MA-M": 28, "MA-S": 36}
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if not header or header[0].strip() != "Registry":
                raise ValueError(f"{path}: line 1: not an IEEE registry CSV (expected a 'Registry' column)")
            for lineno, row in enumerate(reader, start=2):
                if len(row) < 3 or row[0] not in bits:
                    continue
                try:
                    prefix = int(row[1], 16)
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: assignment {row[1]!r} is not hexadecimal") from None
                org = row[2].strip()
                if org and org.lower() != "private":
                    self.add(bits[row[0]], prefix, org)

    def _read_manuf(self, path: Path) -> None:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if not line.strip() or line.startswith("#"):
                    continue
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 2:
                    continue
                spec = parts[0].strip()
                org = (parts[2] if len(parts) > 2 else parts[1]).split("#")[0].strip()
                addr, _, mask = spec.partition("/")
                try:
                    value = int(addr.replace(":", "").replace("-", "").replace(".", ""), 16)
                except ValueError:
                    continue
                hexdigits = len(addr.replace(":", "").replace("-", "").replace(".", ""))
                nbits = int(mask) if mask else hexdigits * 4
                if nbits not in (24, 28, 36) or not org:
                    continue
                prefix = value >> (hexdigits * 4 - nbits)
                self.add(nbits, prefix, org)  # the IEEE CSVs, read first, win where both know a prefix


@lru_cache(maxsize=1)
def default_registry() -> OuiRegistry:
    """The registry from the default files (loaded once per process)."""
    return OuiRegistry.load()
