"""Policy files: the format, precise errors (file, line, key, what was expected), the CLI check,
and which decisions enforce what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller_app.cli import main
from controller_app.policy import (ALLOW, BLOCK, Action, PolicyError, intersect, load_policy, parse_policy)

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        parse_policy(text, "p.yaml")
    return exc.value.problems


def test_shipped_policies_are_valid():
    default = load_policy(str(ROOT / "policies" / "default.yaml"))
    assert default.enforce_on == "confirmed" and default.unknown.rate_limit_kbps
    strict = load_policy(str(ROOT / "policies" / "example-strict.yaml"))
    assert strict.action_for("camera") == BLOCK
    assert strict.action_for("plug").rate_limit_kbps == 64
    assert strict.action_for("sensor") == ALLOW                     # the default


def test_full_format_parses():
    p = parse_policy("""
enforce_on: provisional
min_confidence: 0.75
lan: [10.0.0.0/8, "fd00::/8"]
default: {rate_limit_kbps: 500}
unknown: block
categories:
  hub: {allow_pools: [cloud-a, 52.94.0.0/16, "2600:1f00::/24"], priority: 3, dscp: 10}
overrides:
  "AA-BB-CC-00-00-01": {category: camera}
  02:00:00:00:00:02: {action: {block: true}}
""", "p.yaml")
    assert p.enforce_on == "provisional" and p.min_confidence == 0.75
    hub = p.action_for("hub")
    assert hub.pool_names() == ("cloud-a",)
    assert [str(n) for n in hub.prefixes()] == ["52.94.0.0/16", "2600:1f00::/24"]
    assert (hub.queue, hub.dscp) == (3, 10)
    assert p.action_for("light") == Action(rate_limit_kbps=500)
    assert p.overrides[0xAABBCC000001].category == "camera"
    assert p.overrides[0x020000000002].action == BLOCK
    assert p.pool_names() == {"cloud-a"}


@pytest.mark.parametrize("text, where, what", [
    ("categories:\n  camera: blok\n", "p.yaml:2:11: categories.camera", "expected 'allow', 'block'"),
    ("categories:\n  toaster: allow\n", "p.yaml:2:3: categories.toaster", "unknown category; expected one of camera"),
    ("default: {rate_limit_kbps: fast}\n", "p.yaml:1:28: default.rate_limit_kbps", "expected an integer 1.."),
    ("default: {rate_limit_kbps: 0}\n", "p.yaml:1:28: default.rate_limit_kbps", "expected an integer 1.."),
    ("default: {dscp: 64}\n", "p.yaml:1:17: default.dscp", "expected an integer 0..63"),
    ("default: {colour: red}\n", "p.yaml:1:11: default.colour", "unknown key; expected one of block, allow_pools"),
    ("default: {block: true, dscp: 3}\n", "p.yaml:1:10: default", "block cannot be combined with dscp"),
    ("default: {allow_pools: cloud}\n", "p.yaml:1:24: default.allow_pools", "expected a list of IP pool names"),
    ("default: {allow_pools: [10.0.0.0/33]}\n", "p.yaml:1:25: default.allow_pools[0]", "not a valid CIDR prefix"),
    ("enforce_on: always\n", "p.yaml:1:13: enforce_on", "expected one of provisional, confirmed"),
    ("min_confidence: 1.5\n", "p.yaml:1:17: min_confidence", "expected a number from 0 to 1"),
    ("lan: [192.168.1.0/24, nowhere]\n", "p.yaml:1:23: lan[1]", "expected a CIDR prefix"),
    ("overrides:\n  not-a-mac: {category: plug}\n", "p.yaml:2:3: overrides.not-a-mac", "expected a MAC address"),
    ("overrides:\n  02:00:00:00:00:01: {category: toaster}\n", "p.yaml:2:33: overrides.02:00:00:00:00:01.category",
     "expected one of camera"),
    ("overrides:\n  02:00:00:00:00:01: {category: plug, action: block}\n", "p.yaml:2:22: overrides.02:00:00:00:00:01",
     "expected exactly one of"),
    ("colour: red\n", "p.yaml:1:1: colour", "unknown key; expected one of version"),
    ("default: allow\ndefault: block\n", "p.yaml:2:1: default", "duplicate key (first at line 1)"),
    ("- allow\n", "p.yaml:1:1: (top level)", "expected a mapping"),
    ("version: 2\n", "p.yaml:1:10: version", "expected an integer 1..1"),
    ("trust_claims: camera\n", "p.yaml:1:15: trust_claims", "expected a list of categories (camera, plug"),
    ("trust_claims: [light, toaster]\n", "p.yaml:1:23: trust_claims[1]", "expected one of camera, plug"),
    ("trust_claims: [unknown]\n", "p.yaml:1:16: trust_claims[0]", "expected one of camera"),
    ("trust_claims: [light, light]\n", "p.yaml:1:23: trust_claims[1]", "'light' is listed twice"),
])
def test_errors_name_file_line_key_and_expectation(text, where, what):
    (p,) = problems(text)
    assert p.startswith(where), p
    assert what in p, p


def test_every_problem_is_reported_not_just_the_first():
    ps = problems("categories:\n  camera: blok\n  plug: {rate_limit_kbps: -1}\nmin_confidence: x\n")
    assert len(ps) == 3 and ps[0].startswith("p.yaml:2:") and ps[1].startswith("p.yaml:3:")


def test_yaml_syntax_error_and_empty_file():
    (p,) = problems("categories:\n  camera: [block\n")
    assert p.startswith("p.yaml:") and "not valid YAML" in p
    (p,) = problems("")
    assert "empty policy file" in p


def test_unreadable_file_is_named(tmp_path):
    with pytest.raises(PolicyError, match="missing.yaml: cannot read"):
        load_policy(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"default: allow # caf\xe9\n")
    with pytest.raises(PolicyError, match="latin1.yaml: byte 20: not UTF-8"):
        load_policy(str(bad))


def test_enforcement_rules():
    p = parse_policy("enforce_on: confirmed\nmin_confidence: 0.7\nunknown: {rate_limit_kbps: 9}\n"
                     "categories: {camera: block}\n", "p.yaml")
    assert p.enforcement("camera", 0.9, "confirmed") == BLOCK
    assert p.enforcement("camera", 0.9, "provisional") is None      # waits for confirmation
    assert p.enforcement("camera", 0.5, "confirmed") == p.unknown   # final but unsure
    assert p.enforcement("unknown", 0.2, "unknown") == p.unknown
    assert p.enforcement("plug", 0.9, "confirmed") == ALLOW          # the default
    q = parse_policy("enforce_on: provisional\nmin_confidence: 0.7\ncategories: {camera: block}\n", "q.yaml")
    assert q.enforcement("camera", 0.9, "provisional") == BLOCK
    assert q.enforcement("camera", 0.5, "provisional") is None       # not final, not sure: nothing yet


def test_intersection_takes_the_stricter_of_each_part():
    assert intersect(ALLOW, BLOCK) == BLOCK and intersect(Action(rate_limit_kbps=5, dscp=46), BLOCK) == BLOCK
    assert intersect(ALLOW, ALLOW) == ALLOW
    # allow_pools: an action without them allows everything, so the other's list stands
    hub = Action(allow_pools=("cloud-a", "52.94.0.0/16"))
    assert intersect(hub, ALLOW) == hub and intersect(ALLOW, hub) == hub
    both = intersect(Action(allow_pools=("cloud-a", "cloud-b", "52.94.0.0/16", "10.1.0.0/16", "2600::/16")),
                     Action(allow_pools=("cloud-b", "52.94.7.0/24", "52.0.0.0/8", "10.2.0.0/16", "2600:1f::/32")))
    assert both.allow_pools == ("cloud-b", "52.94.7.0/24", "52.94.0.0/16", "2600:1f::/32")
    assert intersect(Action(allow_pools=("cloud-a",)), Action(allow_pools=("52.0.0.0/8",))).allow_pools == ()
    # the lower rate; a rate on one side only stands
    assert intersect(Action(rate_limit_kbps=64), Action(rate_limit_kbps=256)).rate_limit_kbps == 64
    assert intersect(Action(queue=1), Action(rate_limit_kbps=256)) == Action(rate_limit_kbps=256)
    # no preferential treatment on a claim alone: a queue or a mark only when both give the same
    assert intersect(Action(queue=1, dscp=46), Action(queue=1, dscp=10)) == Action(queue=1)
    assert intersect(Action(queue=1, dscp=46), ALLOW) == ALLOW


def test_claims_alone_only_tighten_unless_the_category_is_trusted():
    p = parse_policy("enforce_on: confirmed\nmin_confidence: 0.7\nunknown: {rate_limit_kbps: 256}\n"
                     "categories: {camera: {priority: 1, dscp: 46}, plug: block, hub: {rate_limit_kbps: 64}}\n"
                     "trust_claims: [hub]\n", "p.yaml")
    assert p.trust_claims == {"hub"} and p.summary()["trust_claims"] == ["hub"]
    t = p.treatment("camera", 0.99, "confirmed", claims_only=True)
    assert (t.action, t.basis, t.tightened) == (Action(rate_limit_kbps=256), "intersection of camera and unknown", True)
    assert p.enforcement("camera", 0.99, "confirmed", claims_only=True) == Action(rate_limit_kbps=256)
    assert p.action_for("camera", claims_only=True) == Action(rate_limit_kbps=256)
    t = p.treatment("camera", 0.99, "confirmed")                       # behaviour agrees: the category's own
    assert (t.action, t.basis, t.tightened) == (Action(queue=1, dscp=46), "camera", False)
    assert p.enforcement("plug", 0.99, "confirmed", claims_only=True) == BLOCK      # stricter than unknown
    t = p.treatment("hub", 0.99, "confirmed", claims_only=True)                      # trusted
    assert (t.action, t.basis, t.tightened) == (Action(rate_limit_kbps=64), "hub (claims trusted: trust_claims)",
                                                False)
    t = p.treatment("light", 0.5, "confirmed", claims_only=True)                     # unsure: unknown anyway
    assert (t.action, t.basis) == (p.unknown, "unknown (confidence below min_confidence)")
    assert p.treatment("camera", 0.99, "provisional", claims_only=True) is None      # waits for confirmation
    assert p.treatment("unknown", 0.3, "unknown").basis == "unknown"
    assert parse_policy("categories: {camera: block}\n", "q.yaml").trust_claims == frozenset()


def test_cli_policy_check_exit_codes(tmp_path, capsys):
    good = ROOT / "policies" / "default.yaml"
    assert main(["policy", "check", str(good)]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("categories:\n  camera: blok\n")
    proc = subprocess.run([sys.executable, "-m", "controller_app.cli", "policy", "check", str(good), str(bad)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 1
    assert f"iotclass: error: {bad}:2:11: categories.camera: expected 'allow'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert main(["policy", "check", "--json", str(good)]) == 0
    assert '"enforce_on": "confirmed"' in capsys.readouterr().out


# ------------------------------------------------------------------ hostile files


def test_deep_nesting_is_a_policy_error_with_its_position():
    (p,) = problems("[" * 40_000)
    assert p == "p.yaml:1:33: not valid YAML: nested more than 32 levels deep"
    (p,) = problems("categories:\n  camera: " + "{a: " * 40 + "\n")
    assert p.startswith("p.yaml:2:") and "nested more than 32 levels" in p


def test_deep_nesting_without_libyaml(monkeypatch):
    import yaml
    monkeypatch.setattr(yaml, "__with_libyaml__", False)
    (p,) = problems("[" * 40_000)
    assert p == "p.yaml:1:33: not valid YAML: nested more than 32 levels deep"
    assert parse_policy("categories: {camera: block}\n", "p.yaml").action_for("camera") == BLOCK


def test_nested_bracket_file_gives_one_line_from_the_cli(tmp_path):
    bad = tmp_path / "nested.yaml"
    bad.write_text("[" * 40_000)
    proc = subprocess.run([sys.executable, "-m", "controller_app.cli", "policy", "check", str(bad)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"iotclass: error: {bad}:1:33: not valid YAML: nested more than 32 levels deep"]


def test_oversized_policy_is_refused_before_parsing(tmp_path):
    from controller_app.policy import MAX_POLICY_BYTES
    big = tmp_path / "big.yaml"
    big.write_text("categories:\n  camera: block\n" + "# padding\n" * (MAX_POLICY_BYTES // 10))
    with pytest.raises(PolicyError) as exc:
        load_policy(str(big))
    assert exc.value.problems == [f"{big}: {big.stat().st_size} bytes, more than the policy size limit of "
                                  f"{MAX_POLICY_BYTES} bytes"]
    with pytest.raises(PolicyError, match="larger than the policy size limit"):
        parse_policy(big.read_text(), "p.yaml")
    # just under the limit is read
    ok = tmp_path / "ok.yaml"
    ok.write_text("categories:\n  camera: block\n" + "# padding\n" * ((MAX_POLICY_BYTES - 40) // 10))
    assert load_policy(str(ok)).action_for("camera") == BLOCK


def test_fifo_device_and_directory_are_refused_at_once(tmp_path):
    import os
    import time
    fifo = tmp_path / "policy.fifo"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a FIFO (named pipe)"), ("/dev/zero", "a character device"), (tmp_path, "a directory")):
        t0 = time.monotonic()
        with pytest.raises(PolicyError) as exc:
            load_policy(str(path))
        assert time.monotonic() - t0 < 1.0
        assert exc.value.problems == [f"{path}: {kind}, not a policy file (a policy must be a regular file)"]


def test_encoding_and_control_characters_are_located(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_bytes(b"categories:\n  camera: bl\xffock\n")
    with pytest.raises(PolicyError, match=r"p.yaml: byte 24: not UTF-8 text \(0xff at line 2, column 13\)"):
        load_policy(str(f))
    (p,) = problems("categories:\n  camera: bl\x00ock\n")
    assert p.startswith("p.yaml:2:13: not valid YAML: character U+0000 is not allowed")
    f.write_bytes(b"\xef\xbb\xbfcategories: {camera: block}\n")          # a byte-order mark is fine
    assert load_policy(str(f)).action_for("camera") == BLOCK


@pytest.mark.parametrize("value", ["2001-02-30", "!!binary xx", "!custom 5", "9" * 5000, "!!python/object:os.system x"])
def test_values_yaml_cannot_construct_are_reported_not_raised(value):
    (p,) = problems(f"default: {{rate_limit_kbps: {value}}}\n")
    assert p.startswith("p.yaml:1:28: default.rate_limit_kbps: expected an integer 1..100000000, got ")
    assert len(p) < 200


def test_many_problems_are_capped():
    from controller_app.policy import MAX_PROBLEMS
    text = "categories:\n" + "".join(f"  camera{i}: allow\n" for i in range(500))
    found = problems(text)
    assert len(found) == MAX_PROBLEMS + 1 and found[-1] == f"p.yaml: ... and {500 - MAX_PROBLEMS} more problems"


def test_any_text_gives_a_policy_or_a_policy_error():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    pieces = st.sampled_from(["categories:", "\n", "  ", "camera:", " block", "{", "}", "[", "]", ",", "&a ", "*a",
                              "!!binary ", "rate_limit_kbps: ", "9" * 30, "2001-02-30", "- ", "'", '"', "\x00", "\t",
                              "overrides:", '"02:00:00:00:00:01": ', "{category: plug}", "lan: ", "10.0.0.0/8", "%"])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(pieces, max_size=40).map("".join))
    def check(text):
        try:
            parse_policy(text, "p.yaml")
        except PolicyError as exc:
            assert exc.problems and all(p.startswith("p.yaml") for p in exc.problems)

    check()
