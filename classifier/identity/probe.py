"""What the controller's identity probe asks, and what a device would answer to it.

The controller (``controller_app/idprobe.py``) sends a learning device that has not announced
itself one multicast DNS query: DNS-SD's service enumeration (``_services._dns-sd._udp.local``)
and a PTR question for every service type the public knowledge reads
(``classifier/knowledge/curated/dnssd.csv``, ``_hap._tcp`` among them). An mDNS responder answers the
enumeration with its service types, and a question for one of its own types with the
instance (PTR), and, as additional records, its SRV, TXT and address records (RFC 6763
section 12).

:func:`probe_answers` is that rule applied to a capture, for the evaluation's simulation of the
probes (``iotclass evaluate ... --probes``): the device's own mDNS records, wherever they
appear in its stream, as if answered at the time of the probe. It assumes what RFC 6762 asks
of a responder: that it answers for the records it holds, and that a device holds at the
start of a capture the static records it announces later in it.
"""

from __future__ import annotations

from functools import lru_cache

from classifier.identity.knowledge import default_knowledge

ENUMERATION = "_services._dns-sd._udp.local"
#: mDNS record kinds a responder's answer to the probe carries, beside the service types
_WITH_INSTANCE = ("mdns.instance", "mdns.txt", "mdns.host")


@lru_cache(maxsize=1)
def asked_types() -> frozenset[str]:
    """The service types the probe asks for by name: every one the public knowledge reads
    (lower case, without ``.local``)."""
    return frozenset(default_knowledge().dnssd)


def question_names() -> tuple[str, ...]:
    """The probe's questions: the enumeration, then each of :func:`asked_types`, ``.local``."""
    return (ENUMERATION,) + tuple(f"{t}.local" for t in sorted(asked_types()))


def probe_answers(records, at_ns: int) -> list:
    """``records`` (a device's ``(t_ns, kind, value)`` identity records, its whole stream) with,
    added at ``at_ns``, what it would answer to the probe: each service type it announces
    (``mdns.service``, the enumeration's answer) and, if one of them is a type the probe asks
    for, its instance names, TXT strings and host names too. A device that sends no mDNS
    records of its own answers nothing: ``records`` come back unchanged."""
    records = list(records)
    services = {v for _, k, v in records if k == "mdns.service"}
    if not services:
        return records
    kinds = ("mdns.service",) + (_WITH_INSTANCE if {s.lower() for s in services} & asked_types() else ())
    seen = set()
    answers = []
    for _, k, v in records:
        if k in kinds and (k, v) not in seen:
            seen.add((k, v))
            answers.append((int(at_ns), k, v))
    return sorted(records + answers, key=lambda r: r[0])
