"""Identity evidence compared with tshark's fields on every shared capture, per kind.

For each kind where tshark has the field (DHCP options 12, 60 and 55; DHCPv6 vendor class
and client FQDN; DNS and LLMNR question names of queries; mDNS questions, PTR, SRV, TXT and
A/AAAA records; SSDP start lines and headers; HTTP User-Agent and Host; TLS server names),
the sets of (frame, kind, value) must be equal. The only records allowed on one side are the
project's on packets tshark decodes as another protocol (it tries the lower port first and
knows far more ports) or not at all (HTTP and TLS on ports it does not know); they are
counted, and must be few.

The IoT Sentinel and speaker captures are merged (mergecap) into one tshark run each; the
other sets run file by file, and of each home capture the first 5,000 frames are compared
(every file partly, to keep the run short).
"""

from __future__ import annotations

import subprocess

import pytest

from classifier.capture.reader import read_frames
from classifier.features.identity import IdentityRecords, identity_records

from test_exactness import _files, needs_tshark
from tshark_identity import compare, expected_records, ours

#: dataset -> (merge the files into one tshark run, frames compared per file, agreeing records at least)
SETS = {
    "iot-sentinel": (True, None, 50_000),
    "speaker": (True, None, 1_000),
    "home": (False, 5_000, 5_000),
    "longterm": (False, None, 10_000),
    "unsw-2014": (False, None, 1_500),
    "mud-2024": (False, None, 10),
}


def _compare(path, recs, limit):
    exp, decoded = expected_records(str(path), limit)
    return compare(ours(recs, limit), exp, decoded)


@needs_tshark
@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize("subset", list(SETS))
def test_identity_matches_tshark(datasets, subset, tmp_path):
    merge, limit, at_least = SETS[subset]
    files = _files(datasets / subset)
    assert files, f"no captures in {datasets / subset}"
    runs = []
    if merge:
        merged = tmp_path / f"{subset}.pcapng"
        subprocess.run(["mergecap", "-a", "-w", str(merged)] + files, check=True, capture_output=True)
        parts, offsets, n = [], [], 0
        for f in files:
            frames = read_frames(f)
            parts.append(identity_records(frames, warnings=[]))
            offsets.append(n)
            n += len(frames)
        runs.append((merged, IdentityRecords.concat(parts, offsets)))
    else:
        runs = [(f, identity_records(f, warnings=[])) for f in files]
    totals: dict[str, dict] = {}
    problems = []
    for path, recs in runs:
        for kind, r in _compare(path, recs, limit).items():
            t = totals.setdefault(kind, {"same": 0, "missing": 0, "extra": 0, "undecoded": 0})
            for key in t:
                t[key] += r[key]
            if r["missing"] or r["extra"]:
                problems.append(f"{path}: {kind}: {r['missing']} missing, {r['extra']} extra, e.g. {r['examples']}")
    assert not problems, "\n".join(problems)
    same = sum(t["same"] for t in totals.values())
    undecoded = sum(t["undecoded"] for t in totals.values())
    assert same >= at_least, totals
    assert undecoded <= 0.1 * same, totals
