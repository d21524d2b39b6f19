"""What pip installs: a wheel built from the project (``pip wheel --no-deps .``) holds the two
packages and the shipped default model, and none of the test doubles (testing/), benchmarks
(benchmarks/), end-to-end lab (topologies/) or tests."""

from __future__ import annotations

import configparser
import importlib.util
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "classifier" / "models" / "default"
LEFT_OUT = ("testing", "benchmarks", "topologies", "tests")
#: what a copy of the project leaves behind (local environments, caches, build output)
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis",
              "results", "out")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the wheel without network needs setuptools installed beside pip")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "--quiet", str(src), "-w", str(tmp / "dist")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = sorted((tmp / "dist").glob("*.whl"))
    assert len(built) == 1, built
    with zipfile.ZipFile(built[0]) as zf:
        yield zf


def test_wheel_holds_no_test_double_and_no_benchmark(wheel):
    names = wheel.namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"classifier", "controller_app"}, tops
    doubles = {p.name for p in (ROOT / "testing").glob("*.py")} - {"__init__.py"}
    benches = {p.name for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__.py"}
    assert doubles and benches
    # by content, not by name: a benchmark may share its name with the module it measures
    left_out = {p.read_bytes() for d in ("testing", "benchmarks") for p in (ROOT / d).glob("*.py")
                if p.name != "__init__.py"}
    found = sorted(n for n in names if n.endswith(".py") and wheel.read(n) in left_out)
    assert not found, f"test doubles or benchmarks in the wheel: {found}"
    assert not [n for n in names if n.split("/")[0] in LEFT_OUT]


def test_wheel_holds_the_default_model_files(wheel):
    shipped = sorted(p for p in DEFAULT_MODEL.iterdir() if p.suffix in (".json", ".safetensors"))
    assert {p.name for p in shipped} >= {"engine.json", "session.safetensors", "segment.safetensors"}
    for p in shipped:
        assert wheel.read(f"classifier/models/default/{p.name}") == p.read_bytes(), p.name


def test_wheel_console_scripts(wheel):
    meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt"))
    ep = configparser.ConfigParser()
    ep.read_string(wheel.read(meta).decode())
    assert dict(ep["console_scripts"]) == {"iotclass": "controller_app.cli:main",
                                           "ryu-manager": "controller_app.manager:main"}
