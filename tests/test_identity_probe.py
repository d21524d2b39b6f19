"""The identity probe's questions and the evaluation's rule for what a device answers to it."""

from __future__ import annotations

from classifier.identity.probe import ENUMERATION, asked_types, probe_answers, question_names

S = 1_000_000_000


def test_the_questions_are_the_enumeration_and_every_known_service_type():
    q = question_names()
    assert q[0] == ENUMERATION and len(set(q)) == len(q)
    assert {"_hap._tcp.local", "_googlecast._tcp.local", "_hue._tcp.local"} <= set(q)
    assert {n.removesuffix(".local") for n in q[1:]} == set(asked_types())


def test_a_homekit_responder_answers_with_its_instance_txt_and_host_at_the_probe():
    recs = [(100 * S, "dns.query", "time.example.com"),
            (900 * S, "mdns.service", "_hap._tcp"), (900 * S, "mdns.instance", "Porch Light"),
            (900 * S, "mdns.txt", "ci=5"), (900 * S, "mdns.host", "porch-light"),
            (950 * S, "mdns.browse", "_airplay._tcp"), (960 * S, "mdns.txt", "ci=5")]
    got = probe_answers(recs, 2 * S)
    early = [(k, v) for t, k, v in got if t == 2 * S]
    assert early == [("mdns.service", "_hap._tcp"), ("mdns.instance", "Porch Light"), ("mdns.txt", "ci=5"),
                     ("mdns.host", "porch-light")]                 # each once; what it looks for is not answered
    assert [r for r in got if r[0] != 2 * S] == recs               # the stream's own records stay
    assert [r[0] for r in got] == sorted(r[0] for r in got)


def test_a_type_not_asked_by_name_answers_the_enumeration_only():
    recs = [(500 * S, "mdns.service", "_vendor-private._tcp"), (500 * S, "mdns.instance", "Thing 1"),
            (500 * S, "mdns.txt", "id=42")]
    early = [(k, v) for t, k, v in probe_answers(recs, 3 * S) if t == 3 * S]
    assert early == [("mdns.service", "_vendor-private._tcp")]


def test_a_device_without_mdns_records_of_its_own_answers_nothing():
    recs = [(1 * S, "dhcp.hostname", "cam-1"), (5 * S, "mdns.browse", "_hap._tcp")]
    assert probe_answers(recs, 2 * S) == recs
    assert probe_answers([], 2 * S) == []
