"""Per-category policies: the YAML format, its validation (file, line, key, what was expected)
and the policy model the core enforces.

A policy file::

    enforce_on: confirmed          # which decision stage enforces: provisional | confirmed
    min_confidence: 0.8            # below this a final decision enforces the `unknown` action
    lan: [192.168.0.0/16, fe80::/10]   # what `allow_pools` always allows (default: private,
                                   # link-local and multicast ranges)
    default: allow                 # categories not listed below
    unknown: {rate_limit_kbps: 256}    # devices of a type the models do not know
    learning: {allow_services: [dns, dhcp, ntp], rate_limit_kbps: 128}   # devices not decided yet
    categories:
      camera: block
      plug: {rate_limit_kbps: 64}
      hub: {allow_pools: [vendor-cloud, 52.94.0.0/16]}
      speaker: {priority: 1, dscp: 46}
    trust_claims: [light]          # categories whose claims alone get their own action
    overrides:                     # per MAC: pin a category or an action
      "02:00:00:00:01:01": {category: camera}
      "02:00:00:00:01:02": {action: allow}

An action is ``allow``, ``block``, or a mapping of ``block: true`` alone, or any of
``allow_pools`` (IP pool names and/or CIDR prefixes: only these and the LAN are reachable),
``rate_limit_kbps`` (an OpenFlow meter over the device's traffic, both directions),
``priority`` (an OpenFlow queue id, set_queue) and ``dscp`` (0-63, rewritten on IP packets), and
``allow_services`` (service names, :data:`SERVICES`: IP traffic of those protocols and ports is
forwarded to any address; with it, as with ``allow_pools``, other IP traffic leaves the LAN only to
the listed pools).

``learning`` is the action for devices whose decision enforces nothing yet (not decided, or
provisional while ``enforce_on`` is confirmed). The default, ``allow``, installs nothing: such
devices are forwarded as before.

A device's own claims may only tighten its treatment: a decision that rests on what the device
says about itself alone (:attr:`classifier.engine.decision.Decision.identity_alone`: only the
identity voter vouches, and the device controls its identity records) is enforced with the
intersection of its category's action and the ``unknown`` action (:func:`intersect`: the
stricter of each part), unless the category is listed under ``trust_claims``.

Limits: a policy file holds at most :data:`MAX_POLICY_BYTES` bytes of UTF-8 text, nested at
most :data:`MAX_DEPTH` levels, and must be a regular file (a FIFO, device or directory is
refused without being read, so that a reload never waits on one). Every failure — unreadable,
too big, not UTF-8, not YAML, nested too deeply, invalid — is a :class:`PolicyError` naming
the file and, where there is one, the line and column.
"""

from __future__ import annotations

import errno
import hashlib
import ipaddress
import os
import stat
from dataclasses import dataclass, field
from typing import Any

import yaml

from classifier.engine.decision import CONFIRMED, PROVISIONAL, UNKNOWN
from classifier.errors import IotClassError
from classifier.capture.labels import CATEGORIES
from classifier.capture.packets import mac_to_int, mac_to_str

STAGES_ENFORCING = (PROVISIONAL, CONFIRMED)
DEFAULT_LAN = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "224.0.0.0/4",
               "255.255.255.255/32", "fc00::/7", "fe80::/10", "ff00::/8")
ACTION_KEYS = ("block", "allow_pools", "allow_services", "rate_limit_kbps", "priority", "dscp")
TOP_KEYS = ("version", "enforce_on", "min_confidence", "lan", "default", "unknown", "learning", "categories",
            "trust_claims", "overrides")
#: What ``allow_services`` may name: (IP protocol, port) pairs. A device's packets to the port are
#: forwarded to any address, and the answers (from the port) back to it; DHCP's client side
#: (68, 546) and the LAN's broadcast need no entry of their own.
SERVICES = {
    "dns": ((17, 53), (6, 53)),
    "dhcp": ((17, 67), (17, 547)),
    "ntp": ((17, 123),),
    "mdns": ((17, 5353),),
    "ssdp": ((17, 1900),),
    "http": ((6, 80),),
    "https": ((6, 443), (17, 443)),
}
LEARNING = "learning"
UNKNOWN_CATEGORY = "unknown"
#: Largest policy file read, in bytes: about 4,500 per-MAC overrides of one line each. It bounds
#: the time a reload holds the controller's event loop (under half a second at this size with libyaml).
MAX_POLICY_BYTES = 256 * 1024
#: Deepest nesting of lists and mappings (a valid policy needs 4).
MAX_DEPTH = 32
#: Problems reported at most; the rest are counted.
MAX_PROBLEMS = 50


class PolicyError(IotClassError):
    """An invalid policy file. ``problems`` lists every one found, each naming where."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(problems[0] if len(problems) == 1 else
                         f"{len(problems)} problems:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Action:
    """What the switch does with one device's traffic. The default value allows everything."""

    block: bool = False
    allow_pools: tuple | None = None     #: pool names and CIDR strings; None = no restriction
    rate_limit_kbps: int | None = None
    queue: int | None = None
    dscp: int | None = None
    allow_services: tuple | None = None  #: service names (SERVICES); None = no restriction

    @property
    def restricts(self) -> bool:
        """Whether IP traffic beyond the LAN is limited to listed pools and services."""
        return self.allow_pools is not None or self.allow_services is not None

    @property
    def kind(self) -> str:
        """What the action does most, in one word (the metrics' ``action`` label): block,
        rate_limit, restrict (pools or services), mark (queue or DSCP) or allow."""
        if self.block:
            return "block"
        if self.rate_limit_kbps is not None:
            return "rate_limit"
        if self.restricts:
            return "restrict"
        if self.queue is not None or self.dscp is not None:
            return "mark"
        return "allow"

    def services(self) -> tuple:
        """(IP protocol, port) of every listed service, each once, in order."""
        out: list = []
        for name in self.allow_services or ():
            out += [p for p in SERVICES[name] if p not in out]
        return tuple(out)

    def describe(self) -> str:
        if self.block:
            return "block"
        parts = []
        if self.allow_pools is not None:
            parts.append("allow_pools=[" + ",".join(self.allow_pools) + "]")
        if self.allow_services is not None:
            parts.append("allow_services=[" + ",".join(self.allow_services) + "]")
        if self.rate_limit_kbps is not None:
            parts.append(f"rate_limit_kbps={self.rate_limit_kbps}")
        if self.queue is not None:
            parts.append(f"priority={self.queue}")
        if self.dscp is not None:
            parts.append(f"dscp={self.dscp}")
        return " ".join(parts) or "allow"

    def pool_names(self) -> tuple:
        return tuple(p for p in (self.allow_pools or ()) if _as_network(p) is None)

    def prefixes(self) -> tuple:
        return tuple(n for n in (_as_network(p) for p in (self.allow_pools or ())) if n is not None)


ALLOW = Action()
BLOCK = Action(block=True)


def _intersect_pools(a: tuple, b: tuple) -> tuple:
    """What two ``allow_pools`` lists both allow, as far as it is known without resolving names:
    a pool name both list; of two overlapping prefixes, the narrower. A name in one list and a
    prefix in the other cannot be compared: left out (stricter)."""
    names_b = set(p for p in b if _as_network(p) is None)
    nets_b = [n for n in (_as_network(p) for p in b) if n is not None]
    out: list = []
    for p in a:
        na = _as_network(p)
        if na is None:
            kept = [p] if p in names_b else []
        else:
            kept = [str(na if na.prefixlen >= nb.prefixlen else nb)
                    for nb in nets_b if nb.version == na.version and na.overlaps(nb)]
        out += [k for k in kept if k not in out]
    return tuple(out)


def intersect(a: Action, b: Action) -> Action:
    """The stricter of each part of two actions: block beats anything; the IP restrictions
    (``allow_pools``, ``allow_services``) intersect (an action without any allows everything, so
    the other's stand; both restricting: the pools both allow and the services both list); the
    lower rate limit; a queue (``priority``) or DSCP mark only where both give the same one."""
    if a.block or b.block:
        return BLOCK
    if not a.restricts or not b.restricts:
        pools, services = (b.allow_pools, b.allow_services) if not a.restricts else (a.allow_pools, a.allow_services)
    else:
        pools = _intersect_pools(a.allow_pools or (), b.allow_pools or ())
        services = tuple(s for s in a.allow_services or () if s in (b.allow_services or ()))
        if a.allow_pools is None and b.allow_pools is None:
            pools = None                  # neither listed pools: services alone restrict, as in both
        if a.allow_services is None or b.allow_services is None:
            services = None
    rates = [r for r in (a.rate_limit_kbps, b.rate_limit_kbps) if r is not None]
    return Action(allow_pools=pools, rate_limit_kbps=min(rates) if rates else None,
                  queue=a.queue if a.queue == b.queue else None, dscp=a.dscp if a.dscp == b.dscp else None,
                  allow_services=services)


@dataclass(frozen=True)
class Treatment:
    """The action a decision enforces and why: ``basis`` names the policy entry it comes from
    (``camera``, ``unknown``, ``intersection of camera and unknown``, ...); ``tightened`` when
    the device's own claims alone decided and its category's action was intersected with the
    ``unknown`` action."""

    action: Action
    basis: str
    tightened: bool = False


@dataclass(frozen=True)
class Override:
    category: str | None = None
    action: Action | None = None


@dataclass(frozen=True)
class Policy:
    enforce_on: str = CONFIRMED
    min_confidence: float = 0.0
    lan: tuple = field(default_factory=lambda: tuple(ipaddress.ip_network(p) for p in DEFAULT_LAN))
    default: Action = ALLOW
    unknown: Action = ALLOW
    #: devices whose decision enforces nothing yet (ALLOW: nothing is installed for them)
    learning: Action = ALLOW
    categories: dict = field(default_factory=dict)      #: category -> Action
    #: categories whose decisions on the device's own claims alone get their own action
    trust_claims: frozenset = frozenset()
    overrides: dict = field(default_factory=dict)       #: MAC (int) -> Override
    source: str = "<built-in>"
    digest: str = ""

    def action_for(self, category: str, claims_only: bool = False) -> Action:
        """The category's action; with ``claims_only`` (the decision rests on the device's own
        claims alone) its intersection with the ``unknown`` action, unless the category is
        trusted (``trust_claims``)."""
        if category == UNKNOWN_CATEGORY:
            return self.unknown
        act = self.categories.get(category, self.default)
        if claims_only and category not in self.trust_claims:
            return intersect(act, self.unknown)
        return act

    def treatment(self, category: str, confidence: float, stage: str, claims_only: bool = False) -> Treatment | None:
        """The action a decision enforces and its basis, or None when it enforces nothing (yet).

        A stage of ``unknown`` (or category ``unknown``) is final and enforces the unknown
        action; a provisional decision enforces only when ``enforce_on`` is provisional; a
        final decision below ``min_confidence`` enforces the unknown action. A decision on the
        device's own claims alone (``claims_only``) enforces the intersection of its category's
        action and the unknown action, unless ``trust_claims`` lists the category.
        """
        final = stage in (CONFIRMED, UNKNOWN)
        if stage == UNKNOWN or category == UNKNOWN_CATEGORY:
            return Treatment(self.unknown, UNKNOWN_CATEGORY) if (final or self.enforce_on == PROVISIONAL) else None
        if stage == PROVISIONAL and self.enforce_on != PROVISIONAL:
            return None
        if confidence < self.min_confidence:
            return Treatment(self.unknown, f"{UNKNOWN_CATEGORY} (confidence below min_confidence)") if final else None
        if not claims_only:
            return Treatment(self.action_for(category), category)
        if category in self.trust_claims:
            return Treatment(self.action_for(category), f"{category} (claims trusted: trust_claims)")
        return Treatment(self.action_for(category, claims_only=True),
                         f"intersection of {category} and {UNKNOWN_CATEGORY}", tightened=True)

    def learning_treatment(self) -> Treatment | None:
        """The treatment of a device whose decision enforces nothing yet (not decided, or
        provisional while ``enforce_on`` is confirmed): the ``learning`` action, or None (nothing
        installed, as before ``learning`` existed) when it is ``allow``."""
        return None if self.learning == ALLOW else Treatment(self.learning, LEARNING)

    def enforcement(self, category: str, confidence: float, stage: str, claims_only: bool = False) -> Action | None:
        """The action of :meth:`treatment`, or None when the decision enforces nothing (yet)."""
        t = self.treatment(category, confidence, stage, claims_only)
        return None if t is None else t.action

    def pool_names(self) -> set:
        names = set()
        for a in [self.default, self.unknown, self.learning, *self.categories.values(),
                  *(o.action for o in self.overrides.values() if o.action)]:
            names.update(a.pool_names())
        return names

    def summary(self) -> dict:
        return {
            "source": self.source, "digest": self.digest, "enforce_on": self.enforce_on,
            "min_confidence": self.min_confidence, "default": self.default.describe(),
            "unknown": self.unknown.describe(), "learning": self.learning.describe(),
            "categories": {c: a.describe() for c, a in sorted(self.categories.items())},
            "trust_claims": sorted(self.trust_claims),
            "overrides": {mac_to_str(m): (o.category and f"category={o.category}") or o.action.describe()
                          for m, o in sorted(self.overrides.items())},
            "lan": [str(n) for n in self.lan],
        }


def _as_network(text: str):
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


# ------------------------------------------------------------------ loading and validation


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


_COLLECTION_START = (yaml.SequenceStartEvent, yaml.MappingStartEvent)
_COLLECTION_END = (yaml.SequenceEndEvent, yaml.MappingEndEvent)


def _too_deep(mark):
    return yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)


class _Loader(yaml.SafeLoader):
    """The pure-Python safe loader, refusing nesting deeper than :data:`MAX_DEPTH` (PyYAML
    composes nodes recursively: a few thousand unclosed brackets would exhaust Python's stack)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        nested = isinstance(event, _COLLECTION_START)
        if nested:
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _too_deep(event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1


def _compose(text: str):
    """The YAML node tree of ``text``. With libyaml (PyYAML's C loader: about five times faster,
    which matters on the controller's event loop) the nesting depth is checked first on the
    event stream, which libyaml produces without recursion; its composer recurses in C and
    would crash the process on deep nesting."""
    if not getattr(yaml, "__with_libyaml__", False):
        return yaml.compose(text, Loader=_Loader)
    depth = 0
    for event in yaml.parse(text, Loader=yaml.CSafeLoader):
        if isinstance(event, _COLLECTION_START):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(event.start_mark)
        elif isinstance(event, _COLLECTION_END):
            depth -= 1
    return yaml.compose(text, Loader=yaml.CSafeLoader)


def _line_col(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of character ``index`` of ``text``."""
    index = max(0, min(index, len(text)))
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


class _Checker:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []
        self.found = 0
        self.constructor = yaml.constructor.SafeConstructor()

    def err(self, node, path: str, msg: str) -> None:
        self.found += 1
        if len(self.problems) >= MAX_PROBLEMS:
            return
        where = f"{self.source}:{node.start_mark.line + 1}:{node.start_mark.column + 1}" if node is not None \
            else self.source
        self.problems.append(f"{where}: {_short(path, 80) or '(top level)'}: {msg}")

    def finished(self) -> list[str]:
        """The problems, with a last line counting those left out."""
        if self.found > len(self.problems):
            return self.problems + [f"{self.source}: ... and {self.found - len(self.problems)} more problems"]
        return self.problems

    @staticmethod
    def _show(node) -> str:
        if isinstance(node, yaml.ScalarNode):
            return repr(_short(node.value, 60))
        return "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"

    def mapping(self, node, path: str) -> list | None:
        """The (key text, key node, value node) of a mapping node, duplicates reported."""
        if not isinstance(node, yaml.MappingNode):
            self.err(node, path, f"expected a mapping, got {self._show(node)}")
            return None
        seen: dict[str, Any] = {}
        out = []
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                self.err(k, path, "expected a plain key")
                continue
            if k.value in seen:
                self.err(k, f"{path}.{k.value}" if path else k.value,
                         f"duplicate key (first at line {seen[k.value].start_mark.line + 1})")
                continue
            seen[k.value] = k
            out.append((k.value, k, v))
        return out

    def scalar(self, node, path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.err(node, path, f"expected a single value, got {self._show(node)}")
            return None
        if node.tag == "tag:yaml.org,2002:str":
            return node.value
        try:
            return self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError):
            # an explicit tag this loader does not construct (!!binary, !custom), a date that
            # does not exist, an integer of thousands of digits: the caller reports the text
            return node.value

    def integer(self, node, path: str, lo: int, hi: int | None = None) -> int | None:
        v = self.scalar(node, path)
        if v is None and not isinstance(node, yaml.ScalarNode):
            return None
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            self.err(node, path, f"expected an integer {rng}, got {self._show(node)}")
            return None
        return v

    def action(self, node, path: str) -> Action | None:
        if isinstance(node, yaml.ScalarNode):
            v = node.value
            if v == "allow":
                return ALLOW
            if v == "block":
                return BLOCK
            self.err(node, path, f"expected 'allow', 'block' or a mapping of {', '.join(ACTION_KEYS)}; "
                                 f"got {v!r}")
            return None
        items = self.mapping(node, path)
        if items is None:
            return None
        kw: dict[str, Any] = {}
        ok = True
        for key, knode, v in items:
            p = f"{path}.{key}"
            if key == "block":
                b = self.scalar(v, p)
                if not isinstance(b, bool):
                    self.err(v, p, f"expected true or false, got {self._show(v)}")
                    ok = False
                else:
                    kw["block"] = b
            elif key == "allow_pools":
                if not isinstance(v, yaml.SequenceNode):
                    self.err(v, p, f"expected a list of IP pool names or CIDR prefixes, got {self._show(v)}")
                    ok = False
                    continue
                pools = []
                for i, item in enumerate(v.value):
                    s = self.scalar(item, f"{p}[{i}]")
                    if not isinstance(s, str) or not s.strip():
                        self.err(item, f"{p}[{i}]", f"expected a pool name or CIDR prefix, got {self._show(item)}")
                        ok = False
                        continue
                    s = s.strip()
                    if any(c in s for c in "./:") and _as_network(s) is None:
                        self.err(item, f"{p}[{i}]", f"not a valid CIDR prefix: {s!r}")
                        ok = False
                        continue
                    pools.append(str(_as_network(s)) if _as_network(s) is not None else s)
                kw["allow_pools"] = tuple(pools)
            elif key == "allow_services":
                if not isinstance(v, yaml.SequenceNode):
                    self.err(v, p, f"expected a list of services ({', '.join(SERVICES)}), got {self._show(v)}")
                    ok = False
                    continue
                names: list = []
                for i, item in enumerate(v.value):
                    s = self.scalar(item, f"{p}[{i}]")
                    if s not in SERVICES:
                        self.err(item, f"{p}[{i}]", f"expected one of {', '.join(SERVICES)}, got {self._show(item)}")
                        ok = False
                    elif s in names:
                        self.err(item, f"{p}[{i}]", f"{s!r} is listed twice")
                        ok = False
                    else:
                        names.append(s)
                kw["allow_services"] = tuple(names)
            elif key == "rate_limit_kbps":
                r = self.integer(v, p, 1, 100_000_000)
                ok &= r is not None
                kw["rate_limit_kbps"] = r
            elif key == "priority":
                q = self.integer(v, p, 0, 0xFFFFFFFE)
                ok &= q is not None
                kw["queue"] = q
            elif key == "dscp":
                d = self.integer(v, p, 0, 63)
                ok &= d is not None
                kw["dscp"] = d
            else:
                self.err(knode, p, f"unknown key; expected one of {', '.join(ACTION_KEYS)}")
                ok = False
        if not ok:
            return None
        if kw.get("block") and len(kw) > 1:
            self.err(node, path, "block cannot be combined with " + ", ".join(k for k in kw if k != "block"))
            return None
        return Action(**kw)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Parse and validate a policy; raises :class:`PolicyError` listing every problem."""
    try:
        return _parse(text, source)
    except PolicyError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise PolicyError([f"{source}: too complex to read ({type(exc).__name__})"]) from None
    except Exception as exc:  # noqa: BLE001 - a last guard: callers handle PolicyError only
        raise PolicyError([f"{source}: cannot read the policy: {type(exc).__name__}: {exc}"]) from None


def _parse(text: str, source: str) -> Policy:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_POLICY_BYTES:
        raise PolicyError([f"{source}: larger than the policy size limit of {MAX_POLICY_BYTES} bytes"])
    chk = _Checker(source)
    try:
        root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PolicyError([f"{where}: not valid YAML: {exc.problem or exc.context}"]) from None
    except yaml.reader.ReaderError as exc:
        line, col = _line_col(text, exc.position)
        c = exc.character
        what = f"character U+{c:04X}" if isinstance(c, int) else f"character {c!r}"
        raise PolicyError([f"{source}:{line}:{col}: not valid YAML: {what} is not allowed ({exc.reason})"]) from None
    except yaml.YAMLError as exc:
        raise PolicyError([f"{source}: not valid YAML: {_short(str(exc), 200)}"]) from None
    if root is None:
        raise PolicyError([f"{source}: empty policy file (expected a mapping with {', '.join(TOP_KEYS)})"])
    items = chk.mapping(root, "")
    if items is None:
        raise PolicyError(chk.finished())
    kw: dict[str, Any] = {}
    for key, knode, v in items:
        if key == "version":
            ver = chk.integer(v, key, 1, 1)
            if ver is None:
                continue
        elif key == "enforce_on":
            s = chk.scalar(v, key)
            if s not in STAGES_ENFORCING:
                chk.err(v, key, f"expected one of {', '.join(STAGES_ENFORCING)}, got {chk._show(v)}")
            else:
                kw["enforce_on"] = s
        elif key == "min_confidence":
            c = chk.scalar(v, key)
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c <= 1.0:
                chk.err(v, key, f"expected a number from 0 to 1, got {chk._show(v)}")
            else:
                kw["min_confidence"] = float(c)
        elif key == "lan":
            if not isinstance(v, yaml.SequenceNode):
                chk.err(v, key, f"expected a list of CIDR prefixes, got {chk._show(v)}")
                continue
            nets = []
            for i, item in enumerate(v.value):
                s = chk.scalar(item, f"lan[{i}]")
                net = _as_network(s) if isinstance(s, str) else None
                if net is None:
                    chk.err(item, f"lan[{i}]", f"expected a CIDR prefix, got {chk._show(item)}")
                else:
                    nets.append(net)
            kw["lan"] = tuple(nets)
        elif key in ("default", "unknown", "learning"):
            a = chk.action(v, key)
            if a is not None:
                kw[key] = a
        elif key == "categories":
            cats = chk.mapping(v, key)
            out = {}
            for cat, cnode, av in cats or []:
                p = f"categories.{cat}"
                if cat not in CATEGORIES:
                    chk.err(cnode, p, f"unknown category; expected one of {', '.join(CATEGORIES)} "
                                      "(use `unknown:` at the top level for unknown devices)")
                    continue
                a = chk.action(av, p)
                if a is not None:
                    out[cat] = a
            kw["categories"] = out
        elif key == "trust_claims":
            if not isinstance(v, yaml.SequenceNode):
                chk.err(v, key, f"expected a list of categories ({', '.join(CATEGORIES)}), got {chk._show(v)}")
                continue
            trusted: set = set()
            for i, item in enumerate(v.value):
                c = chk.scalar(item, f"{key}[{i}]")
                if c not in CATEGORIES:
                    chk.err(item, f"{key}[{i}]", f"expected one of {', '.join(CATEGORIES)}, got {chk._show(item)}")
                elif c in trusted:
                    chk.err(item, f"{key}[{i}]", f"{c!r} is listed twice")
                else:
                    trusted.add(c)
            kw["trust_claims"] = frozenset(trusted)
        elif key == "overrides":
            ovs = chk.mapping(v, key)
            out = {}
            for mac_text, mnode, ov in ovs or []:
                p = f"overrides.{mac_text}"
                try:
                    mac = mac_to_int(mac_text)
                except ValueError:
                    chk.err(mnode, p, "expected a MAC address like 02:00:00:00:01:01")
                    continue
                if mac in out:
                    chk.err(mnode, p, "the same MAC is overridden twice")
                    continue
                fields_ = chk.mapping(ov, p)
                if fields_ is None:
                    continue
                if len(fields_) != 1 or fields_[0][0] not in ("category", "action"):
                    chk.err(ov, p, "expected exactly one of `category: NAME` or `action: ACTION`")
                    continue
                name, fnode, fv = fields_[0]
                if name == "category":
                    c = chk.scalar(fv, f"{p}.category")
                    if c not in CATEGORIES and c != UNKNOWN_CATEGORY:
                        chk.err(fv, f"{p}.category",
                                f"expected one of {', '.join(CATEGORIES + (UNKNOWN_CATEGORY,))}, got {chk._show(fv)}")
                        continue
                    out[mac] = Override(category=c)
                else:
                    a = chk.action(fv, f"{p}.action")
                    if a is not None:
                        out[mac] = Override(action=a)
            kw["overrides"] = out
        else:
            chk.err(knode, key, f"unknown key; expected one of {', '.join(TOP_KEYS)}")
    if chk.problems:
        raise PolicyError(chk.finished())
    kw["source"] = source
    kw["digest"] = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Policy(**kw)


_FILE_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _check_file(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise PolicyError([f"{path}: {kind}, not a policy file (a policy must be a regular file)"])
    if st.st_size > MAX_POLICY_BYTES:
        raise PolicyError([f"{path}: {st.st_size} bytes, more than the policy size limit of "
                           f"{MAX_POLICY_BYTES} bytes"])


def read_policy_bytes(path: str) -> bytes:
    """The bytes of a policy file, read without ever waiting: anything but a regular file is
    refused (checked before opening, and again on the opened descriptor, which is opened
    non-blocking so that a FIFO swapped in between cannot hold the caller), and at most
    :data:`MAX_POLICY_BYTES` are read."""
    try:
        _check_file(path, os.stat(path))
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        _check_file(path, os.fstat(fd))
        chunks, total = [], 0
        while True:
            try:
                chunk = os.read(fd, min(1 << 16, MAX_POLICY_BYTES + 1 - total))
            except BlockingIOError:
                chunk = b""
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_POLICY_BYTES:
                raise PolicyError([f"{path}: more than the policy size limit of {MAX_POLICY_BYTES} bytes"])
        return b"".join(chunks)
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            raise PolicyError([f"{path}: a directory, not a policy file"]) from None
        raise PolicyError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    finally:
        os.close(fd)


def decode_policy(data: bytes, path: str) -> str:
    """UTF-8 text (a leading byte-order mark allowed); an error names the line and column."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        good = data[:exc.start].decode("utf-8-sig", "replace")
        line, col = _line_col(good, len(good))
        raise PolicyError([f"{path}: byte {exc.start}: not UTF-8 text (0x{data[exc.start]:02x} at line {line}, "
                           f"column {col})"]) from None


def load_policy(path: str) -> Policy:
    """Read and validate a policy file; every error (a :class:`PolicyError`, the only exception
    raised) names the file."""
    return parse_policy(decode_policy(read_policy_bytes(path), path), path)


def default_policy_path() -> str:
    """``policies/default.yaml`` of the checkout (or of the installed package's data)."""
    import os
    here = os.path.dirname(os.path.abspath(__file__))
    for cand in (os.path.join(here, "..", "policies", "default.yaml"),
                 os.path.join(here, "policies", "default.yaml")):
        if os.path.exists(cand):
            return os.path.normpath(cand)
    return os.path.normpath(os.path.join(here, "..", "policies", "default.yaml"))


# ------------------------------------------------------------------ iotclass policy check


def cmd_policy_check(args) -> int:
    import json
    import sys
    bad = 0
    for path in args.file:
        try:
            pol = load_policy(path)
        except PolicyError as exc:
            bad += 1
            for p in exc.problems:
                print(f"iotclass: error: {p}", file=sys.stderr)
            continue
        if args.json:
            json.dump(pol.summary(), sys.stdout, indent=2)
            print()
        else:
            print(f"{path}: ok (enforce on {pol.enforce_on}, min confidence {pol.min_confidence}, "
                  f"{len(pol.categories)} categories, {len(pol.overrides)} overrides)")
    return 1 if bad else 0


def add_policy_command(subparsers) -> None:
    """``iotclass policy check FILE...``: validate policy files (non-zero exit if any is invalid)."""
    sp = subparsers.add_parser("policy", help="controller policies: check a policy file")
    psub = sp.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    chk = psub.add_parser("check", help="validate policy files; errors name file, line, key and what was expected")
    chk.add_argument("file", nargs="+", metavar="FILE")
    chk.add_argument("--json", action="store_true", help="print the parsed policy as JSON")
    chk.set_defaults(func=cmd_policy_check)
