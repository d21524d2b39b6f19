"""Policy files: the format, precise errors (file, line, key, what was expected), the CLI check,
and which decisions enforce what."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from controller_app.cli import main
from controller_app.policy import (ALLOW, BLOCK, Action, PolicyError, load_policy, parse_policy)

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
