"""TEMPORARY: identity records of a capture read with tshark, for evaluation before the
columnar extractor (``classifier.features.identity``) is available in this branch.

Same interface as ``classifier.features.identity.IdentityRecords``: ``for_mac(mac_int) ->
[(t_ns, kind, value), ...]`` with the kind names listed in ``KINDS``. Records are those the
device *sent* (its DHCP requests, its DNS questions, its own mDNS answers and SSDP notices /
replies, its TLS ClientHello server names, its HTTP requests). Results are cached per capture
(JSON) in ``cache_dir``. Slow (one tshark run per capture); not for the product.

    python -m testing.identity_tshark evaluate lovo      # iotclass with these records
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

KINDS = ("dhcp.hostname", "dhcp.vendor_class", "dhcp.prl", "dns.query", "mdns.service", "mdns.instance",
         "mdns.txt", "mdns.host", "ssdp.type", "ssdp.server", "ssdp.location", "tls.sni", "http.user_agent",
         "http.host")

FIELDS = ["frame.time_epoch", "eth.src", "udp.srcport", "udp.dstport", "dhcp.option.dhcp", "dhcp.option.hostname",
          "dhcp.option.vendor_class_id", "dhcp.option.request_list_item", "dns.flags.response", "dns.qry.name",
          "dns.resp.name", "dns.ptr.domain_name", "dns.txt", "dns.srv.target", "http.request.line",
          "http.response.line", "http.request.method", "http.user_agent", "http.host",
          "tls.handshake.extensions_server_name", "http.server", "http.location"]
FILTER = "dhcp or dns or mdns or ssdp or http.request or tls.handshake.type == 1"
_SERVICE = re.compile(r"^(?:[^.]+\._sub\.)?(_[^.]+\._(?:tcp|udp))\.local\.?$", re.I)
SEP = "\x1f"


def _clean(value: str) -> str:
    """tshark shows a header line's CR LF as the four characters \\r\\n."""
    return value.replace("\\r\\n", "").strip()


def _mac(text: str) -> int:
    return int(text.replace(":", ""), 16)


class TsharkIdentityRecords:
    def __init__(self, records: dict[int, list[tuple[int, str, str]]]):
        self._by_mac = records

    def for_mac(self, mac: int) -> list[tuple[int, str, str]]:
        return list(self._by_mac.get(int(mac), []))

    def macs(self) -> list[int]:
        return sorted(self._by_mac)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_mac.values())


def _rows(path: str):
    cmd = ["tshark", "-n", "-r", path, "-Y", FILTER, "-T", "fields", "-E", "separator=\t",
           "-E", f"aggregator={SEP}", "-E", "occurrence=a"]
    for f in FIELDS:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, errors="replace").stdout
    for line in out.splitlines():
        parts = line.split("\t")
        parts += [""] * (len(FIELDS) - len(parts))
        yield {f: parts[i] for i, f in enumerate(FIELDS)}


def _vals(row: dict, f: str) -> list[str]:
    return [v for v in row[f].split(SEP) if v]


def extract(path: str) -> dict[int, list[tuple[int, str, str]]]:
    recs: dict[int, list] = {}
    for row in _rows(path):
        if not row["eth.src"]:
            continue
        mac = _mac(row["eth.src"].split(SEP)[0])
        t = int(round(float(row["frame.time_epoch"]) * 1e9))
        out = recs.setdefault(mac, [])
        add = lambda kind, value: out.append((t, kind, _clean(value))) if value and _clean(value) else None  # noqa
        ports = set(_vals(row, "udp.srcport") + _vals(row, "udp.dstport"))
        if row["dhcp.option.dhcp"]:
            for v in _vals(row, "dhcp.option.hostname"):
                add("dhcp.hostname", v)
            for v in _vals(row, "dhcp.option.vendor_class_id"):
                add("dhcp.vendor_class", v)
            prl = _vals(row, "dhcp.option.request_list_item")
            if prl:
                add("dhcp.prl", ",".join(prl))
        if "5353" in ports:
            response = _vals(row, "dns.flags.response")[:1] == ["1"] or _vals(row, "dns.flags.response")[:1] == ["True"]
            if response:
                for name in _vals(row, "dns.resp.name"):
                    m = _SERVICE.match(name)
                    if m:
                        add("mdns.service", m.group(1).lower())
                    elif name.lower().endswith(".local") and "._" not in name:
                        add("mdns.host", name)
                for name in _vals(row, "dns.ptr.domain_name"):
                    m = re.match(r"^(.*?)\.(_[^.]+\._(?:tcp|udp))\.local\.?$", name, re.I)
                    if m:
                        add("mdns.instance", m.group(1))
                        add("mdns.service", m.group(2).lower())
                for v in _vals(row, "dns.txt"):
                    add("mdns.txt", v)
                for v in _vals(row, "dns.srv.target"):
                    add("mdns.host", v)
        elif "53" in ports:
            if _vals(row, "dns.flags.response")[:1] in (["0"], ["False"]):
                for v in _vals(row, "dns.qry.name"):
                    add("dns.query", v)
        if "1900" in ports:
            method = _vals(row, "http.request.method")
            is_search = method[:1] == ["M-SEARCH"]
            lines = _vals(row, "http.request.line") + _vals(row, "http.response.line")
            for ln in lines:
                k, _, v = ln.partition(":")
                k = k.strip().upper()
                v = v.strip()
                if k in ("NT", "ST") and not is_search:
                    add("ssdp.type", v)
                elif k == "SERVER":
                    add("ssdp.server", v)
                elif k == "LOCATION":
                    add("ssdp.location", v)
        else:
            for v in _vals(row, "http.user_agent"):
                add("http.user_agent", v)
            for v in _vals(row, "http.host"):
                add("http.host", v)
        for v in _vals(row, "tls.handshake.extensions_server_name"):
            add("tls.sni", v)
    for mac in recs:
        recs[mac].sort()
    return {m: r for m, r in recs.items() if r}


def identity_records(path: str, cache_dir: str | os.PathLike | None = None) -> TsharkIdentityRecords:
    cache_dir = Path(cache_dir or os.environ.get("IOT_IDENTITY_CACHE", Path.home() / ".cache/iotclass/identity"))
    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|v1".encode()).hexdigest()[:16]
    f = cache_dir / f"{Path(path).name}.{key}.json"
    if f.is_file():
        raw = json.loads(f.read_text())
        return TsharkIdentityRecords({int(m): [(t, k, _clean(v)) for t, k, v in recs if _clean(v)]
                                      for m, recs in raw.items()})
    recs = extract(path)
    cache_dir.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({str(m): v for m, v in recs.items()}))
    return TsharkIdentityRecords(recs)


def main(argv: list[str] | None = None) -> int:
    """``python -m testing.identity_tshark IOTCLASS-ARGS...``: run ``iotclass`` with every decoded
    capture's identity records read by this adapter (``$IOT_IDENTITY_CACHE`` caches them)."""
    import sys

    from classifier.cli import main as iotclass
    from classifier.evaluation import records
    records.capture_records = lambda lc: identity_records(lc.path)
    return iotclass(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
