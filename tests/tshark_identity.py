"""Independent reference for the identity evidence: tshark's dissection of the same capture.

``expected_records(path)`` runs ``tshark -T json`` over the frames of the identity protocols
and applies the rules of :mod:`classifier.features.identity` (written again here, on
tshark's fields) to give a set of (frame number, kind, value). ``compare`` lists the
differences per kind.

tshark runs with TCP reassembly and IP defragmentation off, so that it reads each segment
and fragment on its own as the project does (evidence from the segment opening a TLS
ClientHello or an HTTP request).
"""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict

# the identity protocols, and every UDP datagram on their ports (where tshark may have chosen
# another protocol by the lower port)
FILTER = ("dhcp or dhcpv6 or dns or mdns or llmnr or ssdp or http.request or tls.handshake.type == 1 "
          "or udp.port in {53, 67, 68, 546, 547, 1900, 5353, 5355}")
#: The protocol (as tshark names it) each kind comes from.
PROTOCOL = {"dhcp": "dhcp", "dhcpv6": "dhcpv6", "dns": "dns", "llmnr": "llmnr", "mdns": "mdns", "ssdp": "ssdp",
            "http": "http", "tls": "tls"}
LAYERS = "frame dhcp dhcpv6 dns mdns llmnr ssdp http tls"
CLIENT_V6 = {"1", "3", "4", "5", "6", "8", "9", "11"}


def run_tshark_json(path: str, limit: int | None = None) -> list[dict]:
    cmd = ["tshark", "-n", "-r", str(path)] + (["-c", str(limit)] if limit else []) + [ "-o", "tcp.desegment_tcp_streams:FALSE", "-o", "ip.defragment:FALSE",
           "-o", "ipv6.defragment:FALSE", "-Y", FILTER, "-T", "json", "--no-duplicate-keys", "-J", LAYERS]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode not in (0, 2) or (proc.returncode == 2 and "cut short" not in proc.stderr):
        raise RuntimeError(f"tshark failed on {path}: {proc.stderr.strip()}")
    text = proc.stdout.strip()
    return [p["_source"]["layers"] for p in json.loads(text)] if text else []


def _items(node):
    """A JSON value merged by --no-duplicate-keys: a list of values, or one."""
    return node if isinstance(node, list) else [node]


def collect(node, key: str) -> list:
    """Every value of ``key`` anywhere below ``node`` (lists flattened), in document order."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                out.extend(x for x in _items(v) if not isinstance(x, (dict, list)))
            else:
                out.extend(collect(v, key))
    elif isinstance(node, list):
        for v in node:
            out.extend(collect(v, key))
    return out


def first(node, key: str, default: str = "") -> str:
    vals = collect(node, key)
    return vals[0] if vals else default


def strip_local(name: str) -> str:
    labels = name.split(".")
    return ".".join(labels[:-1]) if len(labels) >= 2 and labels[-1].lower() == "local" else name


def service_of(name: str) -> list[tuple[str, str]]:
    """mdns.service (and mdns.instance) of a service-shaped name, else nothing."""
    labels = name.split(".")
    for k in range(len(labels) - 1):
        if len(labels[k]) >= 2 and labels[k].startswith("_") and labels[k + 1].lower() in ("_tcp", "_udp"):
            out = [("mdns.service", labels[k] + "." + labels[k + 1])]
            if k >= 1 and labels[k - 1].lower() != "_sub":
                out.append(("mdns.instance", ".".join(labels[:k])))
            return out
    return []


def _sections(layer: dict) -> dict[str, list[dict]]:
    """The DNS message's questions and records per section, each record a dict of fields."""
    out = {}
    for title in ("Queries", "Answers", "Authoritative nameservers", "Additional records"):
        recs = []
        for value in _items(layer.get(title, {})):
            for entry in value.values():
                recs.extend(_items(entry))
        out[title] = recs
    return out


def _owner(rr: dict) -> str:
    if "dns.resp.name" in rr:
        return rr["dns.resp.name"]
    if "dns.srv.service" in rr:  # tshark splits an SRV owner into service, proto and name
        return ".".join(rr[k] for k in ("dns.srv.service", "dns.srv.proto", "dns.srv.name"))
    return ""


def _dns_records(layer: dict, kind: str) -> list[tuple[str, str]]:
    if first(layer, "dns.flags.opcode") != "0":
        return []
    response = first(layer, "dns.flags.response") == "1"
    sec = _sections(layer)
    out = []
    if kind in ("dns.query", "llmnr.query"):
        if not response:
            out += [(kind, q["dns.qry.name"]) for q in sec["Queries"] if q.get("dns.qry.name", "<Root>") != "<Root>"]
        return out
    probe = not response and int(first(layer, "dns.count.auth_rr", "0")) > 0
    if not response:
        for q in sec["Queries"]:
            name = q.get("dns.qry.name", "<Root>")
            if name == "<Root>":
                continue
            if probe:
                out += service_of(name) or [("mdns.host", strip_local(name))]
            else:
                out.append(("mdns.browse", strip_local(name)))
    own = (sec["Answers"] + sec["Authoritative nameservers"] + sec["Additional records"] if response
           else sec["Authoritative nameservers"])
    for rr in own:
        owner = _owner(rr)
        if owner in ("", "<Root>"):
            continue
        rtype = rr.get("dns.resp.type", "")
        if rtype in ("1", "28"):
            out.append(("mdns.host", strip_local(owner)))
        elif rtype == "12":
            target = rr.get("dns.ptr.domain_name", "")
            low = owner.lower().split(".")
            if low[:3] == ["_services", "_dns-sd", "_udp"]:
                out += service_of(target)
            elif low[-1] == "arpa":
                out.append(("mdns.host", strip_local(target)))
            else:
                out += service_of(target) + service_of(owner)
        elif rtype == "33":
            out += service_of(owner)
            out.append(("mdns.host", strip_local(rr.get("dns.srv.target", ""))))
        elif rtype == "16":
            out += service_of(owner)
            out += [("mdns.txt", t) for t in _items(rr.get("dns.txt", [])) if t]
        else:
            out += service_of(owner)
    return [(k, v) for k, v in out if v not in ("", "<Root>")]


def _header_lines(layer: dict) -> list[tuple[str, str]]:
    """(lower-case name, value) of every header line (SSDP's NT and ST have no field of their own)."""
    out = []
    for line in (collect(layer, "http.unknown_header") + collect(layer, "http.request.line")
                 + collect(layer, "http.response.line")):
        line = line.replace("\\r\\n", "").replace("\r\n", "")
        name, sep, value = line.partition(":")
        if sep:
            out.append((name.strip().lower(), value.strip(" \t")))
    return out


def _ssdp_records(layer: dict) -> list[tuple[str, str]]:
    method = first(layer, "http.request.method").upper()
    response = bool(collect(layer, "http.response.code"))
    out = []
    hdr = _header_lines(layer)
    if method == "NOTIFY":
        out += [("ssdp.type", v) for n, v in hdr if n == "nt"]
    elif method == "M-SEARCH":
        out += [("ssdp.search", v) for n, v in hdr if n == "st"]
        out += [("ssdp.user_agent", v) for v in collect(layer, "http.user_agent")]
    elif response:
        out += [("ssdp.type", v) for n, v in hdr if n == "st"]
    else:
        return []
    if method == "NOTIFY" or response:
        out += [("ssdp.server", v) for v in collect(layer, "http.server")]
        out += [("ssdp.location", v) for v in collect(layer, "http.location")]
    return [(k, v.strip(" \t")) for k, v in out if v.strip(" \t")]


def frame_records(layers: dict) -> list[tuple[str, str]]:
    """The (kind, value) pairs tshark's fields give for one frame, by the project's rules."""
    protocols = layers["frame"]["frame.protocols"].split(":")
    if "icmp" in protocols or "icmpv6" in protocols:
        return []  # a protocol quoted inside an ICMP error is not the sender's message
    out = []
    for layer in _items(layers.get("dhcp", [])):
        if first(layer, "dhcp.type") != "1" or not first(layer, "dhcp.cookie"):
            continue
        out += [("dhcp.hostname", v.rstrip("\x00")) for v in collect(layer, "dhcp.option.hostname")]
        out += [("dhcp.vendor_class", v.rstrip("\x00")) for v in collect(layer, "dhcp.option.vendor_class_id")]
        for opt in _items(layer.get("dhcp.option.type_tree", [])):
            items = collect(opt, "dhcp.option.request_list_item")
            if items:
                out.append(("dhcp.prl", ",".join(items)))
    for layer in _items(layers.get("dhcpv6", [])):
        if first(layer, "dhcpv6.msgtype") not in CLIENT_V6:
            continue
        out += [("dhcpv6.vendor_class", v) for v in collect(layer, "dhcpv6.vendorclass.data")]
        # tshark ends a fully qualified name with the root's "."; the project leaves it out
        out += [("dhcpv6.fqdn", v.rstrip(".")) for v in collect(layer, "dhcpv6.client_domain")]
    for name, kind in (("dns", "dns.query"), ("llmnr", "llmnr.query"), ("mdns", "mdns")):
        for layer in _items(layers.get(name, [])):
            out += _dns_records(layer, kind)
    for layer in _items(layers.get("ssdp", [])):
        out += _ssdp_records(layer)
    for layer in _items(layers.get("http", [])):
        if first(layer, "http.request") == "1":
            out += [("http.user_agent", v.strip(" \t")) for v in collect(layer, "http.user_agent")]
            out += [("http.host", v.strip(" \t")) for v in collect(layer, "http.host")]
    for layer in _items(layers.get("tls", [])):
        if "1" in collect(layer, "tls.handshake.type"):
            out += [("tls.sni", v) for v in collect(layer, "tls.handshake.extensions_server_name")]
    return [(k, v) for k, v in out if v]


def expected_records(path: str, limit: int | None = None) -> tuple[set[tuple[int, str, str]], dict[int, set[str]]]:
    """tshark's (frame, kind, value) set (of the first ``limit`` frames when given), and per
    frame the protocols it decoded."""
    exp = set()
    decoded: dict[int, set[str]] = defaultdict(set)
    for layers in run_tshark_json(path, limit):
        frame = int(layers["frame"]["frame.number"])
        decoded[frame] = set(layers["frame"]["frame.protocols"].split(":"))
        for kind, value in frame_records(layers):
            exp.add((frame, kind, value))
    return exp, decoded


def ours(records, limit: int | None = None) -> set[tuple[int, str, str]]:
    """The project's records as (frame number, kind, value), frame numbers from the rows."""
    return {(int(r) + 1, k, v) for r, k, v in zip(records.row.tolist(), records.kind_names, records.value.tolist())
            if limit is None or r < limit}


def compare(got: set, exp: set, decoded: dict[int, set[str]], limit: int = 5) -> dict[str, dict]:
    """Per kind: counts of agreeing, missing (tshark only) and extra (ours only) records.
    Extras in frames tshark decoded as another protocol (it tries the lower port first and
    knows far more ports than the project names), or did not decode at all (HTTP and TLS on
    ports it does not know), are counted apart as ``undecoded``."""
    out: dict[str, dict] = {}
    kinds = {k for _, k, _ in got | exp}
    for kind in sorted(kinds):
        g = {r for r in got if r[1] == kind}
        e = {r for r in exp if r[1] == kind}
        extra = g - e
        proto = PROTOCOL[kind.split(".")[0]]
        undecoded = {r for r in extra if proto not in decoded.get(r[0], set())
                     and (r[0] in decoded or proto in ("http", "tls"))}
        extra -= undecoded
        out[kind] = {"same": len(g & e), "missing": len(e - g), "extra": len(extra), "undecoded": len(undecoded),
                     "examples": sorted(e - g)[:limit] + sorted(extra)[:limit]}
    return out
