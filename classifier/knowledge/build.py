"""Compiling the public device knowledge: ``iotclass knowledge build``.

The knowledge that names devices is compiled from maintained public sources at pinned versions
(:data:`SOURCES`) into one versioned data file shipped with the package (``compiled.json``); this
module is the only way rows enter it. Every row names its source: package, version, file and
field. The sources:

* **Home Assistant** (``homeassistant`` 2024.3.3, the last wheel that installs on Python 3.11,
  read as a zip, never installed): its discovery matchers — DHCP host-name and MAC patterns
  (``generated/dhcp.py``), zeroconf service types with their name and property patterns and
  HomeKit models (``generated/zeroconf.py``), SSDP ``st``/``nt``/``deviceType`` (``generated/ssdp.py``;
  matchers on fields only the UPnP description file carries — manufacturer, model name — are
  skipped: a passive capture has no description) — and each integration's name. An integration's
  categories come from the entity platforms it ships (``components/<domain>/<platform>.py``,
  mapped by ``curated/platforms.csv``); one that spans several categories gives a spread vote.
* **Device libraries**, each for what it knows best: python-kasa's supported-model lists (its
  README, in the wheel's METADATA); pywemo's UPnP ``uuid:`` prefixes and the device class each
  names; aiohomekit's HomeKit accessory category codes; pychromecast's Cast model names;
  roombapy's robot host names and discovery key; blinkpy's, ring_doorbell's and tinytuya's
  cloud domains with the categories of the device classes they define.
* **The Public Suffix List** (package ``publicsuffixlist``): domains whose sub-domains other
  parties run (its private section) are shared infrastructure that never votes.
* **This project's curated tables** (``curated/``): the category words and modifiers, standard
  UPnP device types, DNS-SD service types, HomeKit category names, entity platforms, module
  makers and the stop-list, each file saying where it comes from.

A class or group name of a library becomes a category through the curated words
(:class:`~classifier.knowledge.text.Vocabulary`): ``OutdoorPlug`` -> plug, ``Light Strips`` -> light.
No row is written for any device of any data set.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from classifier.capture.labels import CATEGORIES
from classifier.errors import IotClassError
from classifier.knowledge.text import CURATED_DIR, Vocabulary, is_model_number, normalise_model
from classifier.knowledge.text import tokens as _tokens

FORMAT = "iotclass-knowledge"
FORMAT_VERSION = 1
COMPILED = Path(__file__).resolve().parent / "compiled.json"


class KnowledgeBuildError(IotClassError):
    pass


@dataclass(frozen=True)
class Source:
    package: str          # the name on the package registry
    version: str
    filename: str         # the file pip downloads
    sha256: str
    licence: str
    what: str             # what is taken from it

    @property
    def sdist(self) -> bool:
        return self.filename.endswith((".tar.gz", ".zip")) and not self.filename.endswith(".whl")


#: The pinned sources. A new version is a new pin: change it here, rebuild, review the diff of
#: compiled.json and the knowledge check (docs/identity.md).
SOURCES: tuple[Source, ...] = (
    Source("homeassistant", "2024.3.3", "homeassistant-2024.3.3-py3-none-any.whl",
           "6e1ec2c07441d63fdcfb8acd2c4bbb6f68bc97330855784d3623d10c38fe3577", "Apache-2.0",
           "discovery matchers (DHCP, zeroconf, HomeKit, SSDP), integration names and entity platforms"),
    Source("python-kasa", "0.12.0", "python_kasa-0.12.0-py3-none-any.whl",
           "e18adb340f359750bc5e798aa1856cdc1a28bc9307d510ad6556998545f40bbd", "GPL-3.0-or-later",
           "supported model numbers by product group (README in METADATA): facts, no code"),
    Source("pywemo", "2.1.2", "pywemo-2.1.2-py3-none-any.whl",
           "b01598add7fa84cd38a65b55c9f11ae9a6edaddca08d5b6aa5e88002a2271d47", "MIT",
           "UPnP uuid prefixes and the device class each names"),
    Source("aiohomekit", "4.0.1", "aiohomekit-4.0.1-py3-none-any.whl",
           "ea517f27d6c6034ad6259a0bf87505f2b68c9a0aebd4067ac4bd7913b7026266", "Apache-2.0",
           "HomeKit accessory category codes"),
    Source("pychromecast", "14.0.10", "pychromecast-14.0.10-py2.py3-none-any.whl",
           "f5ea52b1db0edc3019ec72c9f5354c7e77c2564ecd44f809a6d2f4f518a02e67", "MIT",
           "Cast model names and their cast type (audio or video)"),
    Source("roombapy", "2.0.2", "roombapy-2.0.2-py3-none-any.whl",
           "33f15f3258035291f99d512c1950b8d9e4834e62b69c3d15a7aafe7c48e6fefa", "MIT",
           "robot host-name prefixes and the discovery key"),
    Source("blinkpy", "0.25.9", "blinkpy-0.25.9-py3-none-any.whl",
           "ef2d987f291d1f892f8a998686088a1a722c63a147b6c4588b41a639977a34c8", "MIT",
           "cloud domain and device classes"),
    Source("ring-doorbell", "0.9.14", "ring_doorbell-0.9.14-py3-none-any.whl",
           "5b3b3ebffcdaa1bc50f137a09062f36da42e3e59a63fe134292e16275142d9ec", "LGPL-3.0-or-later",
           "cloud domain and device classes: facts, no code"),
    Source("tinytuya", "1.20.0", "tinytuya-1.20.0-py3-none-any.whl",
           "ac5650c30f1153b1eae0b8d75f67043fb2397a168d3834e47da2d88d2c08c722", "MIT",
           "cloud domains and device classes"),
    Source("publicsuffixlist", "1.1.2.20261023", "publicsuffixlist-1.1.2.20261023-py3-none-any.whl",
           "c792aa3fd37076c15f1c9d9897e59e9d58e8bacdf4315eb9cc10141a26d8995c", "MPL-2.0 (the list); Apache-2.0 (the package)",
           "the Public Suffix List's private section: domains run for other parties"),
)

#: What each kind of rule weighs (times its category shares). Stated once; see docs/identity.md.
WEIGHTS = {
    "homekit_category": 3.0,   # HomeKit ci=: the device states its category
    "upnp_type": 2.0,          # a UPnP device type (standard, or a library's)
    "uuid_prefix": 2.0,        # a library's UPnP uuid prefix
    "model": 2.0,              # a model number of a library's table
    "cast_model": 2.0,         # a Cast model name (TXT md=)
    "homekit_model": 2.0,      # Home Assistant HOMEKIT model prefix (TXT md=)
    "zeroconf_specific": 2.0,  # zeroconf type with a name or property pattern
    "zeroconf": 1.0,           # zeroconf type alone
    "ssdp": 2.0,               # SSDP st / nt / deviceType
    "dhcp": 2.0,               # DHCP host name and MAC prefix, both as Home Assistant requires
    "dhcp_hostname": 1.5,      # DHCP host name pattern alone
    "dhcp_mac": 1.0,           # MAC prefix alone
    "name": 1.0,               # a brand's or integration's name, read as words
    "hostname_prefix": 1.5,    # a library's host-name prefix
    "txt_key": 1.0,            # a TXT key a library discovers devices by
    "domain": 1.0,             # a library's cloud domain
    "service": 1.0,            # a DNS-SD service type (times the table's own weight)
    "word": 1.0,               # a category word (times the table's own weight)
    "local_mac": 2.0,          # a locally administered MAC
}


# --------------------------------------------------------------------------- archives


class Archive:
    """A downloaded wheel (zip) or sdist (tar.gz), read without installing it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._names = self._zip.namelist()
            self._tar = None
        else:
            try:
                self._tar = tarfile.open(self.path)
            except tarfile.TarError as exc:
                raise KnowledgeBuildError(f"{self.path}: neither a wheel nor an sdist ({exc})") from None
            self._names = self._tar.getnames()
            self._zip = None

    def names(self) -> list[str]:
        return self._names

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            fh = self._tar.extractfile(name)
            if fh is None:
                raise KeyError(name)
            return fh.read()
        except KeyError:
            raise KnowledgeBuildError(f"{self.path.name}: has no {name}") from None

    def text(self, name: str) -> str:
        return self.read(name).decode("utf-8")

    def find(self, suffix: str) -> str:
        hits = [n for n in self._names if n.endswith(suffix)]
        if not hits:
            raise KnowledgeBuildError(f"{self.path.name}: no file ending {suffix}")
        return sorted(hits, key=len)[0]


def literal(archive: Archive, name: str, variable: str):
    """The value of a top-level assignment ``variable = <literal>`` in a Python file."""
    tree = ast.parse(archive.read(name))
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and target.id == variable:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise KnowledgeBuildError(f"{archive.path.name}: {name}: {variable} is not a literal") from None
    raise KnowledgeBuildError(f"{archive.path.name}: {name}: no assignment to {variable}")


def classes(archive: Archive, name: str) -> dict[str, list[str]]:
    """Class name -> its base classes' names, for the classes defined in a Python file."""
    tree = ast.parse(archive.read(name))
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out[node.name] = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
    return out


# --------------------------------------------------------------------------- fetching


def fetch(cache: Path, sources: Iterable[Source] = SOURCES, log=lambda m: None) -> dict[str, Path]:
    """Each source's file in ``cache``, downloaded from the package registry when missing
    (``pip download NAME==VERSION --no-deps``) and checked against its pinned sha256."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for src in sources:
        path = cache / src.filename
        if not path.exists():
            log(f"downloading {src.package}=={src.version}")
            cmd = [sys.executable, "-m", "pip", "download", f"{src.package}=={src.version}", "--no-deps",
                   "--dest", str(cache), "--quiet", "--disable-pip-version-check"]
            cmd += ["--no-binary", ":all:"] if src.sdist else ["--only-binary", ":all:"]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0 or not path.exists():
                tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
                raise KnowledgeBuildError(f"cannot download {src.package}=={src.version} to {cache}: {tail[0]}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if src.sha256 and digest != src.sha256:
            raise KnowledgeBuildError(f"{path}: sha256 {digest}, but {src.package}=={src.version} is pinned at "
                                      f"{src.sha256}: refusing to build from a file that is not the pinned one")
        out[src.package] = path
    return out


# --------------------------------------------------------------------------- rows


class Rows:
    """The rows being compiled, with ids per source."""

    def __init__(self):
        self.rows: list[dict] = []
        self._n: dict[str, int] = {}
        self.skipped: dict[str, int] = {}

    def add(self, prefix: str, match: str, pattern: dict, cats: dict[str, float], label: str, src: dict,
            weight: float | None = None) -> dict | None:
        cats = {c: round(s, 6) for c, s in cats.items() if s > 0}
        if not cats and match not in ("stop", "module", "modifier", "service", "upnp_type"):
            return None
        for c in cats:
            if c not in CATEGORIES:
                raise KnowledgeBuildError(f"{src.get('file')}: {src.get('field')}: category {c!r} is not one of "
                                          f"{', '.join(CATEGORIES)}")
        self._n[prefix] = self._n.get(prefix, 0) + 1
        row = {"id": f"{prefix}-{self._n[prefix]:04d}", "match": match, "pattern": pattern, "categories": cats,
               "weight": WEIGHTS.get(match, 1.0) if weight is None else weight, "label": label, "source": src}
        self.rows.append(row)
        return row

    def skip(self, what: str, n: int = 1) -> None:
        self.skipped[what] = self.skipped.get(what, 0) + n


def spread(categories: Iterable[str]) -> dict[str, float]:
    cats = sorted(set(categories), key=CATEGORIES.index)
    return {c: 1.0 / len(cats) for c in cats} if cats else {}


def _src(source: Source, file: str, field: str) -> dict:
    return {"package": source.package, "version": source.version, "file": file, "field": field}


def _curated(file: str, field: str) -> dict:
    return {"package": "iot-sdn-classifier", "version": "curated", "file": f"classifier/knowledge/curated/{file}",
            "field": field}


def read_curated(name: str, folder: Path = CURATED_DIR) -> list[dict]:
    path = folder / name
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(ln for ln in fh if not ln.startswith("#")))
    except OSError as exc:
        raise KnowledgeBuildError(f"{path}: {exc.strerror}") from None


# --------------------------------------------------------------------------- Home Assistant

#: Integration types whose names are not those of devices (Home Assistant's manifest field).
HA_NOT_DEVICES = ("service", "system", "helper", "hardware", "entity", "virtual")


class HomeAssistant:
    def __init__(self, source: Source, archive: Archive, platforms: dict[str, str]):
        self.source, self.archive = source, archive
        self.platform_category = platforms
        self.manifests: dict[str, dict] = {}
        self.platforms: dict[str, set[str]] = {}
        pat = re.compile(r"^homeassistant/components/([a-z0-9_]+)/([a-z0-9_]+)\.py$")
        for name in archive.names():
            m = pat.match(name)
            if m:
                self.platforms.setdefault(m.group(1), set()).add(m.group(2))
        for domain in self.platforms:
            path = f"homeassistant/components/{domain}/manifest.json"
            try:
                self.manifests[domain] = json.loads(archive.read(path))
            except KnowledgeBuildError:
                continue

    def categories(self, domain: str) -> dict[str, float]:
        """The integration's categories, from its entity platforms (sensor only when alone; a
        platform of several kinds, ``a|b``, names each)."""
        plats = self.platforms.get(domain, set())
        cats = {c for p in plats if p in self.platform_category and p not in ("sensor", "binary_sensor")
                for c in self.platform_category[p].split("|")}
        if not cats:
            cats = {c for p in plats if p in ("sensor", "binary_sensor") and p in self.platform_category
                    for c in self.platform_category[p].split("|")}
        return spread(cats)

    def label(self, domain: str) -> str:
        return f"Home Assistant integration {self.manifests.get(domain, {}).get('name', domain)!r} ({domain})"

    def src(self, file: str, field: str) -> dict:
        return _src(self.source, file, field)

    def compile(self, rows: Rows, modules: set[str], oui_vendor) -> None:
        a = self.archive
        f = "homeassistant/generated/dhcp.py"
        for i, m in enumerate(literal(a, f, "DHCP")):
            d = m.get("domain")
            if m.get("registered_devices") or not ("hostname" in m or "macaddress" in m):
                rows.skip("Home Assistant DHCP: registered devices only (needs a device already set up)")
                continue
            host, mac = m.get("hostname"), m.get("macaddress")
            pattern = {}
            if host:
                pattern["hostname"] = host.lower()
            if mac:
                pattern["mac"] = mac.rstrip("*").upper()
                if not host:
                    vendor = oui_vendor(pattern["mac"])
                    if vendor in modules:
                        rows.skip(f"Home Assistant DHCP: MAC prefix alone of a module maker ({vendor})")
                        continue
            match = "dhcp" if host and mac else ("dhcp_hostname" if host else "dhcp_mac")
            rows.add("ha-dhcp", match, pattern, self.categories(d), self.label(d), self.src(f, f"DHCP[{i}]"))
        f = "homeassistant/generated/zeroconf.py"
        for stype, matchers in literal(a, f, "ZEROCONF").items():
            t = stype.lower().removesuffix(".local.").rstrip(".")
            for j, m in enumerate(matchers):
                d = m["domain"]
                pattern = {"type": t}
                if "name" in m:
                    pattern["name"] = m["name"].lower()
                if "properties" in m:
                    pattern["properties"] = {k.lower(): str(v).lower() for k, v in m["properties"].items()}
                match = "zeroconf_specific" if len(pattern) > 1 else "zeroconf"
                rows.add("ha-zeroconf", match, pattern, self.categories(d), self.label(d),
                         self.src(f, f"ZEROCONF[{stype!r}][{j}]"))
        for model, m in literal(a, f, "HOMEKIT").items():
            d = m["domain"]
            rows.add("ha-homekit", "homekit_model", {"model": model.lower().rstrip("*")}, self.categories(d),
                     self.label(d), self.src(f, f"HOMEKIT[{model!r}]"))
        f = "homeassistant/generated/ssdp.py"
        for d, matchers in literal(a, f, "SSDP").items():
            for j, m in enumerate(matchers):
                passive = {k: v for k, v in m.items() if k in ("st", "nt", "deviceType")}
                if len(passive) != len(m):
                    rows.skip("Home Assistant SSDP: needs the UPnP description (manufacturer, model name, ...)")
                    continue
                value = next(iter(passive.values()))
                rows.add("ha-ssdp", "ssdp", {"type": value.lower()}, self.categories(d), self.label(d),
                         self.src(f, f"SSDP[{d!r}][{j}]"))
        # names: each integration's display name and domain, read as words in what devices call themselves
        integ = json.loads(a.read("homeassistant/generated/integrations.json")).get("integration", {})
        for d in sorted(self.manifests):
            m = self.manifests[d]
            if m.get("integration_type") in HA_NOT_DEVICES or not self.categories(d):
                continue
            f = f"homeassistant/components/{d}/manifest.json"
            done: set[tuple] = set()
            # the display name; the domain id only when it is that name (an integration named after a
            # product line, "D-Link Wi-Fi Smart Plugs" (dlink), does not speak for all of its brand)
            names = [("name", m.get("name", ""))]
            if normalise_model(d) == normalise_model(m.get("name", "")):
                names.append(("domain", d))
            for field, text in names:
                key = tuple(_tokens(text))
                if key in done:
                    continue
                done.add(key)
                if _name_ok(text):
                    rows.add("ha-name", "name", {"name": text.lower()}, self.categories(d), self.label(d),
                             self.src(f, field))
        f = "homeassistant/generated/integrations.json"
        for key, v in sorted(integ.items()):
            if v.get("integration_type") == "virtual" and v.get("supported_by") in self.manifests:
                d = v["supported_by"]
                if _name_ok(v.get("name", "")):
                    rows.add("ha-name", "name", {"name": v["name"].lower()}, self.categories(d),
                             f"{v['name']} (supported by {self.label(d)})", self.src(f, f"integration[{key!r}].name"))

    def requiring(self, package: str) -> list[str]:
        """Integrations whose manifest requires ``package``."""
        want = re.sub(r"[-_.]+", "-", package.lower())
        out = []
        for d, m in self.manifests.items():
            for req in m.get("requirements", []):
                name = re.split(r"[<>=\[!~ ]", req, maxsplit=1)[0]
                if re.sub(r"[-_.]+", "-", name.lower()) == want:
                    out.append(d)
        return sorted(out)


#: Names too common to stand for a brand when read as words in a device's names.
_COMMON = frozenset("""home smart local cloud light lights lighting camera cameras switch switches plug sensor sensors
device devices hub bridge gateway network system systems energy power alarm lock locks media player speaker tv
remote control time weather mobile app apps group generic template universal demo default""".split())


def _name_ok(text: str) -> bool:
    """A name worth reading as words: at least 4 letters in all, not a common word."""
    from classifier.knowledge.text import tokens
    toks = tokens(text)
    letters = sum(len(t) for t in toks)
    if letters < 4 or not toks:
        return False
    if len(toks) == 1 and (toks[0] in _COMMON or len(toks[0]) < 4):
        return False
    return not all(t in _COMMON for t in toks)


# --------------------------------------------------------------------------- libraries


def _class_category(vocab: Vocabulary, name: str, bases: dict[str, list[str]], seen=None) -> str | None:
    """The category a class's name says, or its bases' (nearest first)."""
    from classifier.knowledge.text import tokens
    seen = seen or set()
    if name in seen:
        return None
    seen.add(name)
    toks = tokens(name)
    for i in range(len(toks)):      # the library's own prefix may lead: RingDoorBell -> door bell
        hit = vocab.category_of(" ".join(toks[i:]))
        if hit:
            return hit[0]
    for b in bases.get(name, []):
        c = _class_category(vocab, b, bases, seen)
        if c:
            return c
    return None


def compile_kasa(src: Source, a: Archive, vocab: Vocabulary, rows: Rows) -> None:
    """python-kasa's README lists supported models by product group; a group's words say its category.
    Hub-connected devices (Zigbee and Bluetooth sensors behind a hub) never appear on the IP network."""
    meta = a.find(".dist-info/METADATA")
    text = a.text(meta)
    section = None
    for line in text.splitlines():
        h = re.match(r"^#+\s*Supported (.+?) devices", line)
        if h:
            section = re.sub(r"\[\^\d+\]", "", h.group(1)).strip()
            continue
        m = re.match(r"^- \*\*(.+?)\*\*:\s*(.+)$", line)
        if not (section and m):
            continue
        group = m.group(1)
        if "connected" in group.lower():
            rows.skip("python-kasa: hub-connected devices (not on the IP network)")
            continue
        hit = vocab.category_of(group)
        if not hit:
            rows.skip(f"python-kasa: group {group!r} names no category")
            continue
        for model in re.sub(r"\[\^\d+\]", "", m.group(2)).split(","):
            model = model.strip()
            if not is_model_number(model):
                rows.skip("python-kasa: model too short to read safely")
                continue
            rows.add("kasa", "model", {"model": normalise_model(model), "vendor": "tp-link"}, {hit[0]: 1.0},
                     f"python-kasa {section} {group}: {model}", _src(src, meta, f"README 'Supported {section} devices' {group}"))


def compile_pywemo(src: Source, a: Archive, vocab: Vocabulary, rows: Rows) -> None:
    """pywemo maps a device's UPnP uuid prefix to its class; the class's name (or a base's) says its category."""
    bases: dict[str, list[str]] = {}
    for name in a.names():
        if name.startswith("pywemo/ouimeaux_device/") and name.endswith(".py"):
            bases.update(classes(a, name))
    f = "pywemo/discovery.py"
    tree = ast.parse(a.read(f))
    for node in ast.walk(tree):
        if not (isinstance(node, ast.If) and isinstance(node.test, ast.Call)
                and getattr(node.test.func, "attr", "") == "startswith" and node.test.args
                and isinstance(node.test.args[0], ast.Constant)):
            continue
        prefix = node.test.args[0].value
        if not (isinstance(prefix, str) and prefix.startswith("uuid:")):
            continue
        ret = next((n for n in ast.walk(node) if isinstance(n, ast.Return) and isinstance(n.value, ast.Call)), None)
        if ret is None or not isinstance(ret.value.func, ast.Name):
            continue
        cls = ret.value.func.id
        cat = _class_category(vocab, cls, bases)
        if cat is None:
            rows.skip(f"pywemo: class {cls} names no category")
            continue
        rows.add("pywemo", "uuid_prefix", {"prefix": prefix.lower()}, {cat: 1.0}, f"pywemo {cls} ({prefix})",
                 _src(src, f, f"device_from_uuid_and_location: {prefix!r} -> {cls}"))


def compile_aiohomekit(src: Source, a: Archive, curated: list[dict], rows: Rows) -> None:
    """aiohomekit's HomeKit category codes; curated/homekit.csv gives each code's category by its name."""
    f = "aiohomekit/model/categories.py"
    tree = ast.parse(a.read(f))
    by_code = {int(r["code"]): r for r in curated}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "Categories":
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                    name, code = item.targets[0].id, int(item.value.value)
                    cur = by_code.get(code)
                    if cur is None:
                        rows.skip(f"aiohomekit: category {code} {name} not in curated/homekit.csv")
                        continue
                    cat = cur["category"].strip()
                    if not cat:
                        rows.skip("aiohomekit: a HomeKit category that names no category of ours")
                        continue
                    rows.add("homekit", "homekit_category", {"code": code}, {cat: 1.0},
                             f"HomeKit category {code} {name} ({cur['name']})", _src(src, f, f"Categories.{name}"))


def compile_pychromecast(src: Source, a: Archive, rows: Rows) -> None:
    """pychromecast's Cast models: an audio cast device is a speaker; a video one (streaming stick,
    television, smart display) an appliance; groups are not devices."""
    f = "pychromecast/const.py"
    tree = ast.parse(a.read(f))
    consts = {n.targets[0].id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
              and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
    kinds = {consts.get("CAST_TYPE_AUDIO"): "speaker", consts.get("CAST_TYPE_CHROMECAST"): "appliance"}
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "CAST_TYPES":
            for k, v in zip(node.value.keys, node.value.values):
                model = k.value
                kind = consts.get(v.elts[0].id) if isinstance(v.elts[0], ast.Name) else v.elts[0].value
                cat = kinds.get(kind)
                if cat is None:
                    rows.skip("pychromecast: cast groups")
                    continue
                rows.add("cast", "cast_model", {"model": model.lower()}, {cat: 1.0},
                         f"Google Cast model {model!r} ({kind})", _src(src, f, f"CAST_TYPES[{model!r}]"))


def compile_roombapy(src: Source, a: Archive, ha: HomeAssistant | None, rows: Rows) -> None:
    """roombapy accepts robots whose host name starts with one of a set of words, and discovers them
    by a key; the categories are those of the Home Assistant integration that requires it."""
    cats = spread(c for d in (ha.requiring(src.package) if ha else []) for c in ha.categories(d))
    f = "roombapy/roomba_info.py"
    tree = ast.parse(a.read(f))
    for node in ast.walk(tree):
        if isinstance(node, ast.Set) and all(isinstance(e, ast.Constant) for e in node.elts):
            for e in sorted(node.elts, key=lambda e: e.value):
                rows.add("roombapy", "hostname_prefix", {"prefix": e.value.lower() + "-"}, cats,
                         f"roombapy robot host name {e.value}-…", _src(src, f, "validate_hostname"))
    f = "roombapy/discovery.py"
    msg = literal(a, f, "ROOMBA_MESSAGE")
    key = msg.decode() if isinstance(msg, bytes) else str(msg)
    rows.add("roombapy", "txt_key", {"key": key.lower()}, cats, f"roombapy discovery key {key}",
             _src(src, f, "ROOMBA_MESSAGE"))


def _registered(host: str) -> str:
    parts = host.lower().split("/")[0].split(":")[0].split(".")
    return ".".join(parts[-2:])


def _domain_rows(src: Source, a: Archive, vocab: Vocabulary, rows: Rows, prefix: str, files: list[str],
                 domains: list[tuple[str, str, str]]) -> None:
    """Cloud domains of a library, each voting for the categories of the device classes it defines
    (classes whose names say one)."""
    bases: dict[str, list[str]] = {}
    for f in files:
        bases.update(classes(a, f))
    cats = {c for c in (_class_category(vocab, n, bases) for n in bases) if c}
    names = sorted(n for n in bases if _class_category(vocab, n, bases))
    for dom, f, field in domains:
        rows.add(prefix, "domain", {"suffix": dom}, spread(cats),
                 f"{src.package} cloud {dom} (device classes: {', '.join(names)})", _src(src, f, field))


def compile_blinkpy(src: Source, a: Archive, vocab: Vocabulary, rows: Rows) -> None:
    f = "blinkpy/helpers/constants.py"
    dom = literal(a, f, "BLINK_URL")
    _domain_rows(src, a, vocab, rows, "blinkpy", ["blinkpy/camera.py", "blinkpy/sync_module.py"],
                 [(_registered(dom), f, "BLINK_URL")])


def compile_ring(src: Source, a: Archive, vocab: Vocabulary, rows: Rows) -> None:
    f = "ring_doorbell/const.py"
    uri = literal(a, f, "API_URI")
    files = [n for n in a.names() if n.startswith("ring_doorbell/") and n.endswith(".py")
             and n.rsplit("/", 1)[1] in ("doorbot.py", "stickup_cam.py", "chime.py", "other.py")]
    _domain_rows(src, a, vocab, rows, "ring", sorted(files), [(_registered(uri.split("//")[-1]), f, "API_URI")])


def compile_tinytuya(src: Source, a: Archive, vocab: Vocabulary, rows: Rows) -> None:
    f = "tinytuya/Cloud.py"
    text = a.text(f)
    doms = sorted({m.group(1) for m in re.finditer(r"openapi\.(tuya[a-z]+\.com)", text)})
    files = [n for n in a.names() if re.match(r"tinytuya/(Contrib/)?[A-Za-z]+Device\.py$", n)]
    _domain_rows(src, a, vocab, rows, "tinytuya", sorted(files), [(d, f, "Cloud.setregion urlhost") for d in doms])


def compile_psl(src: Source, a: Archive, rows: Rows) -> set[str]:
    """The registrable domains under which the Public Suffix List's private section names
    sub-domains run by other parties."""
    f = a.find("public_suffix_list.dat")
    text = a.text(f)
    private = text.split("===BEGIN PRIVATE DOMAINS===", 1)[-1]
    out: set[str] = set()
    for line in private.splitlines():
        line = line.strip()
        if not line or line.startswith("//"):
            continue
        name = line.lstrip("*.!").lower()
        parts = name.split(".")
        if len(parts) >= 2 and all(parts):
            out.add(".".join(parts[-2:]) if len(parts[-1]) > 2 or len(parts) == 2 else ".".join(parts[-3:]))
    for dom in sorted(out):
        rows.add("psl", "stop", {"suffix": dom}, {}, "shared infrastructure (Public Suffix List, private section)",
                 _src(src, f, "PRIVATE DOMAINS"))
    return out


# --------------------------------------------------------------------------- curated


def compile_curated(rows: Rows, folder: Path = CURATED_DIR) -> None:
    for i, r in enumerate(read_curated("words.csv", folder), start=1):
        rows.add("word", "word", {"word": r["word"].strip().lower(), "dns": r.get("dns", "0").strip() == "1"},
                 spread(r["category"].strip().split("|")), f"category word {r['word'].strip()!r}",
                 _curated("words.csv", f"row {i}"),
                 weight=WEIGHTS["word"] * float(r["weight"]))
    for i, r in enumerate(read_curated("modifiers.csv", folder), start=1):
        rows.add("modifier", "modifier", {"word": r["word"].strip().lower()}, {},
                 f"modifier {r['word'].strip()!r} (smart+plug, iot+cam)", _curated("modifiers.csv", f"row {i}"))
    for i, r in enumerate(read_curated("upnp.csv", folder), start=1):
        # a standard type that names no category of ours (gateways, media servers) is kept, silent:
        # it overrules what other rules would read into its name
        cat = r["category"].strip()
        rows.add("upnp", "upnp_type", {"type": r["type"].strip().lower()}, {cat: 1.0} if cat else {},
                 f"UPnP device type {r['type'].strip()} ({r.get('note', '').strip() or 'no category'})",
                 _curated("upnp.csv", f"row {i}"))
    for i, r in enumerate(read_curated("dnssd.csv", folder), start=1):
        # a type with no category is still read (its TXT records say more: _hap._tcp's ci=), and the
        # identity probe asks for it by name
        cat = r["category"].strip()
        rows.add("dnssd", "service", {"service": r["service"].strip().lower()}, {cat: 1.0} if cat else {},
                 f"DNS-SD service {r['service'].strip()}", _curated("dnssd.csv", f"row {i}"),
                 weight=WEIGHTS["service"] * float(r["weight"]))
    for i, r in enumerate(read_curated("stoplist.csv", folder), start=1):
        rows.add("stop", "stop", {"suffix": r["suffix"].strip().lower()}, {}, f"shared infrastructure ({r['note'].strip()})",
                 _curated("stoplist.csv", f"row {i}"))
    for i, r in enumerate(read_curated("modules.csv", folder), start=1):
        rows.add("module", "module", {"vendor": r["vendor"].strip().lower()}, {}, f"Wi-Fi module maker ({r['note'].strip()})",
                 _curated("modules.csv", f"row {i}"))
    rows.add("mac", "local_mac", {"bit": "locally administered"}, {"non-iot": 1.0},
             "a locally administered (randomised) MAC: phones, tablets, computers, virtual machines",
             {"package": "IEEE 802", "version": "802c-2017", "file": "IEEE Std 802c-2017", "field": "U/L bit"})


# --------------------------------------------------------------------------- the build


def build(paths: dict[str, Path], oui_vendor, curated: Path = CURATED_DIR, sources: Iterable[Source] = SOURCES) -> dict:
    """The compiled knowledge from the sources' files (``paths``: package -> file) and the curated
    tables. ``oui_vendor(prefix)``: the OUI registry's short vendor name of a MAC prefix (hex), to
    keep module makers' prefixes from voting alone (``iotclass knowledge build`` passes the
    installed registry's)."""
    src = {s.package: s for s in sources}
    missing = [p for p in src if p not in paths]
    if missing:
        raise KnowledgeBuildError(f"no file for {', '.join(missing)}")
    vocab = Vocabulary.load(curated)
    rows = Rows()
    compile_curated(rows, curated)
    modules = {r["vendor"].strip().lower() for r in read_curated("modules.csv", curated)}
    platforms = {r["platform"].strip(): r["category"].strip() for r in read_curated("platforms.csv", curated)}
    ha = None
    if "homeassistant" in src:
        ha = HomeAssistant(src["homeassistant"], Archive(paths["homeassistant"]), platforms)
        ha.compile(rows, modules, oui_vendor)
    readers = {
        "python-kasa": lambda s, a: compile_kasa(s, a, vocab, rows),
        "pywemo": lambda s, a: compile_pywemo(s, a, vocab, rows),
        "aiohomekit": lambda s, a: compile_aiohomekit(s, a, read_curated("homekit.csv", curated), rows),
        "pychromecast": lambda s, a: compile_pychromecast(s, a, rows),
        "roombapy": lambda s, a: compile_roombapy(s, a, ha, rows),
        "blinkpy": lambda s, a: compile_blinkpy(s, a, vocab, rows),
        "ring-doorbell": lambda s, a: compile_ring(s, a, vocab, rows),
        "tinytuya": lambda s, a: compile_tinytuya(s, a, vocab, rows),
        "publicsuffixlist": lambda s, a: compile_psl(s, a, rows),
    }
    for name, s in src.items():
        if name in readers:
            readers[name](s, Archive(paths[name]))
    counts: dict[str, int] = {}
    for r in rows.rows:
        counts[r["source"]["package"]] = counts.get(r["source"]["package"], 0) + 1
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "sources": [{"package": s.package, "version": s.version, "file": s.filename, "sha256": s.sha256,
                         "licence": s.licence, "what": s.what, "rows": counts.get(s.package, 0)} for s in src.values()]
            + [{"package": "iot-sdn-classifier", "version": "curated", "file": "classifier/knowledge/curated/",
                "licence": "this project's", "what": "category words, standard types, platforms, stop-list",
                "rows": counts.get("iot-sdn-classifier", 0)}],
            "skipped": dict(sorted(rows.skipped.items())), "rows": rows.rows}


def write(doc: dict, out: Path = COMPILED) -> None:
    """One row a line, so that a rebuild's diff reads row by row."""
    head = {k: v for k, v in doc.items() if k != "rows"}
    lines = [json.dumps(head, sort_keys=True)[:-1] + ', "rows": [']
    lines += [json.dumps(r, sort_keys=True) + ("," if i < len(doc["rows"]) - 1 else "") for i, r in enumerate(doc["rows"])]
    lines.append("]}")
    tmp = Path(out).with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(out)


def digest(doc: dict) -> str:
    """A short digest of the rows: the knowledge's version as engines and results name it."""
    h = hashlib.sha256(json.dumps(doc["rows"], sort_keys=True).encode()).hexdigest()
    return h[:12]


__all__ = ["SOURCES", "Source", "build", "fetch", "write", "COMPILED", "KnowledgeBuildError"]
