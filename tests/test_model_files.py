"""Crafted model folders (``--model``): every kind of bad engine.json or model file is refused
with one line naming the file and what is wrong — before anything large is allocated — and
the CLI prints that line, never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from classifier.cli import main
from classifier.engine.engine import DEFAULT_ENGINE, EngineError, load_engine
from classifier.models.base import ModelError, read_header

ROOT = Path(__file__).resolve().parent.parent


def _copy(tmp: Path, name: str) -> Path:
    folder = tmp / name
    shutil.copytree(DEFAULT_ENGINE, folder)
    return folder


def _engine_json(folder: Path, edit) -> None:
    doc = json.loads((folder / "engine.json").read_text())
    out = edit(doc)
    (folder / "engine.json").write_text(out if isinstance(out, str) else json.dumps(doc if out is None else out))


def _header(path: Path) -> tuple[int, dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: dict, data: bytes, pad: bool = True) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8 if pad else 0)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def _meta(folder: Path, edit, file: str = "session.safetensors") -> None:
    """Rewrite a model file's project metadata (the tensors stay as they are)."""
    path = folder / file
    _, header, data = _header(path)
    meta = json.loads(header["__metadata__"]["iotclass"])
    out = edit(meta)
    header["__metadata__"]["iotclass"] = out if isinstance(out, str) else json.dumps(meta)
    _write(path, header, data)


def _tensors(folder: Path, edit, file: str = "session.safetensors") -> None:
    path = folder / file
    _, header, data = _header(path)
    data = edit(header, data)
    _write(path, header, data)


def _huge_hidden(meta):
    meta["config"]["hidden"] = 12_000            # a 2.3 GB LSTM, were it built before its shapes are checked


def _wrong_row(header, data):
    t = header["mlp.3.bias"]
    t["shape"] = [t["shape"][0] - 1]
    a, b = t["data_offsets"]
    t["data_offsets"] = [a, b - 4]
    for k, v in header.items():                  # shift what follows
        if k != "__metadata__" and v["data_offsets"][0] >= b:
            v["data_offsets"] = [v["data_offsets"][0] - 4, v["data_offsets"][1] - 4]
    return data[:b - 4] + data[b:]


# name -> (how to spoil a copy of the default engine, the error's file, what the error says)
#: classes of the shipped session model (its last layer's size)
N_CLASSES = len(read_header(str(DEFAULT_ENGINE / "session.safetensors"))[1]["classes"])

CASES = {
    "engine-json-list": (lambda f: _engine_json(f, lambda d: "[1, 2]"), "engine.json",
                         "expected a JSON object, got list"),
    "engine-json-not-json": (lambda f: _engine_json(f, lambda d: "{oops"), "engine.json", "not valid JSON"),
    "engine-json-too-big": (lambda f: _engine_json(f, lambda d: json.dumps(d) + " " * (2 << 20)), "engine.json",
                            "larger than 1048576 bytes"),
    "engine-n-text": (lambda f: _engine_json(f, lambda d: d["config"].update(n="16")), "engine.json",
                      "config 'n': expected an integer from 1 to 4096, got \"16\""),
    "engine-n-huge": (lambda f: _engine_json(f, lambda d: d["config"].update(n=10**9)), "engine.json",
                      "config 'n': expected an integer from 1 to 4096, got 1000000000"),
    "engine-n-mismatch": (lambda f: _engine_json(f, lambda d: d["config"].update(n=8)), "engine.json",
                          "config 'n' is 8, but session.safetensors reads sequences of 16 sessions"),
    "engine-threshold-nan": (lambda f: _engine_json(f, lambda d: d["config"].update(threshold=float("nan"))),
                             "engine.json", "config 'threshold': expected a number from 0 to 1, got NaN"),
    "engine-segment-flag": (lambda f: _engine_json(f, lambda d: d.update(segment_model="yes")), "engine.json",
                            "'segment_model' must be true or false"),
    "engine-segment-missing": (lambda f: (f / "segment.safetensors").unlink(), "engine.json",
                               "names segment.safetensors, which is missing"),
    "engine-json-fifo": (lambda f: ((f / "engine.json").unlink(), os.mkfifo(f / "engine.json")), "engine.json",
                         "not a regular file"),
    "model-is-a-folder": (lambda f: ((f / "session.safetensors").unlink(), (f / "session.safetensors").mkdir()),
                          "session.safetensors", "not a regular file"),
    "header-length-huge": (lambda f: (f / "session.safetensors").write_bytes(
        struct.pack("<Q", 1 << 60) + (f / "session.safetensors").read_bytes()[8:]), "session.safetensors",
        "not a model file (its header claims 1152921504606846976 bytes"),
    "file-cut-short": (lambda f: (f / "session.safetensors").write_bytes((f / "session.safetensors").read_bytes()[:-100]),
                       "session.safetensors", "do not hold its"),
    "header-not-json": (lambda f: (f / "session.safetensors").write_bytes(
        struct.pack("<Q", 8) + b"{{{{{{{{" + b"\0" * 64), "session.safetensors", "its header is not JSON"),
    "tensor-offsets-overlap": (lambda f: _tensors(f, lambda h, d: (h["mlp.3.bias"].update(
        data_offsets=h["emb.weight"]["data_offsets"][:1] + [h["emb.weight"]["data_offsets"][0] + 4 * h["mlp.3.bias"]["shape"][0]]), d)[1]),
        "session.safetensors", "tensor data"),
    "tensor-dtype": (lambda f: _tensors(f, lambda h, d: (h["mlp.3.bias"].update(dtype="F128"), d)[1]),
                     "session.safetensors", "tensor 'mlp.3.bias': expected a dtype"),
    "tensor-wrong-shape": (lambda f: _tensors(f, _wrong_row), "session.safetensors",
                           "weights do not fit the model its metadata describes (tensor 'mlp.3.bias' is "
                           f"[{N_CLASSES - 1}], its metadata makes it [{N_CLASSES}])"),
    "meta-not-json": (lambda f: _meta(f, lambda m: "{nope"), "session.safetensors", "its metadata is not JSON"),
    "meta-classes-missing": (lambda f: _meta(f, lambda m: m.pop("classes") and None), "session.safetensors",
                             "metadata 'classes' is missing"),
    "meta-classes-numbers": (lambda f: _meta(f, lambda m: m.update(classes=[1, 2, 3])), "session.safetensors",
                             "metadata 'classes': expected a list of 1 to 1000 names, got [1, 2, 3]"),
    "meta-classes-count": (lambda f: _meta(f, lambda m: m.update(classes=m["classes"][:-1])), "session.safetensors",
                           "weights do not fit the model its metadata describes (tensor 'mlp.3.bias' is "
                           f"[{N_CLASSES}], its metadata makes it [{N_CLASSES - 1}])"),
    "meta-hidden-huge": (lambda f: _meta(f, _huge_hidden), "session.safetensors",
                         "weights do not fit the model its metadata describes (tensor "),
    "meta-hidden-text": (lambda f: _meta(f, lambda m: m["config"].update(hidden="64")), "session.safetensors",
                         "metadata 'config.hidden': expected an integer from 0 to 65536, got \"64\""),
    "meta-unknown-setting": (lambda f: _meta(f, lambda m: m["config"].update(evil=1)), "session.safetensors",
                             "metadata 'config' has an unknown setting 'evil'"),
    "meta-dropout-impossible": (lambda f: _meta(f, lambda m: m["config"].update(dropout=5.0)), "session.safetensors",
                                "its metadata describes no network this version can build"),
    "meta-normalisation-length": (lambda f: _meta(f, lambda m: m["normalisation"].update(mean=[0.0])),
                                  "session.safetensors", "metadata 'normalisation.mean': expected a list of"),
    "meta-std-zero": (lambda f: _meta(f, lambda m: m["normalisation"].update(std=[0.0] * len(m["normalisation"]["std"]))),
                      "session.safetensors", "metadata 'normalisation.std': expected a list of"),
    "meta-temperature": (lambda f: _meta(f, lambda m: m.update(temperature="hot")), "session.safetensors",
                         "metadata 'temperature': expected a number"),
    "meta-numeric-unknown": (lambda f: _meta(f, lambda m: m.update(numeric=["interval", "jitter"])),
                             "session.safetensors", "metadata 'numeric' names what this version does not compute: jitter"),
    "meta-pools-garbage": (lambda f: _meta(f, lambda m: m.update(pools="[1, 2]")), "session.safetensors",
                           "metadata 'pools': not a pool vocabulary"),
    "meta-kind-other": (lambda f: _meta(f, lambda m: m.update(kind="segment-lstm-cnn")), "session.safetensors",
                        "a segment-lstm-cnn model, not a session-nba model"),
    # issue 19, item 10: a folder whose files lead outside it, a huge model file
    "session-link-outside": (lambda f: (shutil.move(f / "session.safetensors", f.parent / "elsewhere.safetensors"),
                                        os.symlink(f.parent / "elsewhere.safetensors", f / "session.safetensors")),
                             "session.safetensors", "outside its folder"),
    "engine-json-link-outside": (lambda f: (shutil.move(f / "engine.json", f.parent / "elsewhere.json"),
                                            os.symlink(f.parent / "elsewhere.json", f / "engine.json")),
                                 "engine.json", "outside its folder"),
    "identity-link-to-etc": (lambda f: ((f / "identity.safetensors").unlink(),
                                        os.symlink("/etc/passwd", f / "identity.safetensors")),
                             "identity.safetensors", "a link to /etc/passwd, outside its folder"),
    "session-huge": (lambda f: os.truncate(f / "session.safetensors", 300 << 20), "session.safetensors",
                     "larger than the 268435456 bytes a model file may be"),
    "segment-t-mismatch": (lambda f: _meta(f, lambda m: m["config"].update(t=4), "segment.safetensors"),
                           "segment.safetensors", "weights do not fit the model its metadata describes"),
    "segment-features-unknown": (lambda f: _meta(f, lambda m: m.update(features=["n_total", "telepathy"]),
                                                 "segment.safetensors"),
                                 "segment.safetensors", "names what this version does not compute: telepathy"),
}


def crafted(tmp: Path, name: str) -> tuple[Path, str, str]:
    spoil, file, message = CASES[name]
    folder = _copy(tmp, name)
    spoil(folder)
    return folder, file, message


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_model_folder_is_refused_in_one_line(name, tmp_path, capsys, synth_capture):
    folder, file, message = crafted(tmp_path, name)
    with pytest.raises((EngineError, ModelError)) as exc:
        load_engine(folder)
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{folder / file}: ") and message in text, text
    assert main(["classify", str(synth_capture[0]), "--model", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"iotclass: error: {text}"]


def test_untouched_copy_still_loads(tmp_path, synth_capture, capsys):
    folder = _copy(tmp_path, "copy")
    assert load_engine(folder).version == load_engine().version
    assert main(["classify", str(synth_capture[0]), "--model", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)


def _peak_rss_kb(folder: Path) -> tuple[int, str]:
    code = ("import resource, sys\n"
            "from classifier.engine.engine import load_engine\n"
            "try:\n    load_engine(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    lines = proc.stdout.strip().splitlines()
    return int(lines[-1]), "\n".join(lines[:-1])


def test_huge_settings_are_refused_before_allocating(tmp_path):
    good_kb, _ = _peak_rss_kb(DEFAULT_ENGINE)
    folder, _, message = crafted(tmp_path, "meta-hidden-huge")
    bad_kb, error = _peak_rss_kb(folder)
    assert message in error
    assert bad_kb < good_kb + 100_000, (good_kb, bad_kb)            # not the 2.3 GB its settings describe
