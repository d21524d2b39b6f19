"""The one interface every model has (fit / predict_proba / save / load) and safe persistence.

A saved model is a single ``.safetensors`` file: the tensors of its state dict, plus JSON
metadata in the file's header (format version, model kind, classes, feature names,
normalisation, pool vocabulary, window settings, training summary). Loading reads tensors
and JSON only — nothing is unpickled — and checks before it allocates anything large: the
header against the file's size (:func:`read_header`), then the metadata's types and ranges and
the tensors' shapes against the network the metadata describes (built on torch's ``meta``
device, which allocates nothing), and only then reads the weights. Every failure is a one-line
:class:`ModelError` naming the file and the field. scikit-learn baselines are saved with skops
(restricted to scikit-learn/numpy types) for the same reason.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import numpy as np

from classifier import __version__
from classifier.features.instances import Instances
from classifier.errors import IotClassError

FORMAT = "iotclass-model"
FORMAT_VERSION = 1
#: Largest safetensors header (tensor table and metadata JSON) read.
MAX_HEADER_BYTES = 16 << 20
#: Largest value of an integer setting in a model's metadata (sizes, lengths).
MAX_SETTING = 1 << 16
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8,
                "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


class ModelError(IotClassError):
    pass


class Model(ABC):
    """A classifier of instances (segment windows, session sequences, CCIT rows)."""

    kind: str = ""
    #: the instance inputs this model reads (keys of Instances.X)
    inputs: tuple[str, ...] = ()

    def __init__(self):
        self.classes: list[str] = []
        self.meta: dict = {}

    @abstractmethod
    def fit(self, inst: Instances, y: np.ndarray, seed: int = 0, balance: np.ndarray | None = None) -> "Model":
        """Train on ``inst`` with labels ``y``; ``balance`` (e.g. device keys) makes each
        distinct value count about equally, by repeating instances of the rarer ones."""

    @abstractmethod
    def predict_proba(self, inst: Instances) -> np.ndarray:
        """Class probabilities, shape (len(inst), len(self.classes))."""

    def predict(self, inst: Instances) -> np.ndarray:
        p = self.predict_proba(inst)
        return np.asarray(self.classes, dtype=object)[p.argmax(axis=1)] if len(p) else np.zeros(0, dtype=object)

    def check_inputs(self, inst: Instances) -> None:
        missing = [k for k in self.inputs if k not in inst.X]
        if missing:
            raise ModelError(f"{self.kind} model needs inputs {', '.join(self.inputs)}; "
                             f"got {', '.join(inst.X) or 'none'}")

    @abstractmethod
    def save(self, path: str | Path) -> None: ...

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> "Model": ...


def repetition_index(keys: np.ndarray, rng: np.random.Generator, cap: int = 200) -> np.ndarray:
    """Instance indices where each distinct key is repeated up to about the same count.

    Chen et al. balance devices "by copying the subset of devices with fewer instances";
    each key's instances are repeated ``round(target / count)`` times, where ``target`` is the
    largest count capped at ``cap``. No instance is dropped and none is synthesised.
    """
    keys = np.asarray(keys)
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    target = min(int(counts.max()), cap)
    factor = np.maximum(1, np.round(target / counts)).astype(np.int64)
    idx = np.repeat(np.arange(len(keys)), factor[inv])
    rng.shuffle(idx)
    return idx


# --------------------------------------------------------------------------- persistence


def write_model(path: str | Path, tensors: dict, meta: dict) -> None:
    from safetensors.numpy import save_file
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", FORMAT_VERSION)
    meta.setdefault("project_version", __version__)
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    save_file(arrays, str(path), metadata={"iotclass": json.dumps(meta, sort_keys=True)})
    os.chmod(path, 0o644)  # safetensors writes 0600; models are shared read-only data


#: Largest model file read (the shipped ones are under 2 MB): a larger one is refused before
#: its tensors are read into memory.
MAX_MODEL_BYTES = 256 << 20


def open_regular(path: str, error=None, what: str = "model file"):
    """A binary file object for ``path``, refusing anything but a regular file without waiting
    on it (FIFOs and devices are opened non-blocking and refused), and a link that leads out of
    the folder it is named in (a model's files are its folder's own: a crafted folder cannot
    make the loader read ``/etc/shadow`` or another user's files through a link)."""
    error = error or ModelError
    real = os.path.realpath(path)
    home = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    if os.path.dirname(real) != home:
        raise error(f"{path}: a link to {real}, outside its folder {home}; a model's files must be in its folder")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise error(f"{path}: not a regular file")
    return os.fdopen(fd, "rb")


def read_header(path: str | Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], dict]:
    """(tensor name -> (dtype, shape), this project's metadata) of a safetensors file, without
    reading any tensor: the header's length, the tensors' dtypes, shapes and byte ranges are
    checked against the file's size (the ranges must tile the data exactly)."""
    path = str(path)
    with open_regular(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(f"{path}: {size} bytes, larger than the {MAX_MODEL_BYTES} bytes a model file may be")
        if size < 8:
            raise ModelError(f"{path}: {size} bytes, too short for a model file")
        (n,) = struct.unpack("<Q", fh.read(8))
        if n > size - 8 or n > MAX_HEADER_BYTES:
            raise ModelError(f"{path}: not a model file (its header claims {n} bytes; the file holds {size - 8} "
                             f"after the length field, and at most {MAX_HEADER_BYTES} are read)")
        raw = fh.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: not a model file (its header is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise ModelError(f"{path}: not a model file (its header is not a JSON object)")
    extra = header.pop("__metadata__", None) or {}
    if not isinstance(extra, dict) or not all(isinstance(v, str) for v in extra.values()):
        raise ModelError(f"{path}: not a model file (__metadata__ must map names to strings)")
    data_len = size - 8 - n
    shapes, spans = {}, []
    for name, t in header.items():
        where = f"{path}: tensor {name[:60]!r}"
        if not isinstance(t, dict) or t.get("dtype") not in _DTYPE_BYTES:
            raise ModelError(f"{where}: expected a dtype among {', '.join(_DTYPE_BYTES)}")
        shape, offs = t.get("shape"), t.get("data_offsets")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= size for d in shape)):
            raise ModelError(f"{where}: shape {str(shape)[:60]} is not a list of at most 8 sizes")
        if (not isinstance(offs, list) or len(offs) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)):
            raise ModelError(f"{where}: data_offsets must be two integers")
        nbytes = math.prod(shape) * _DTYPE_BYTES[t["dtype"]]
        if not 0 <= offs[0] <= offs[1] <= data_len or offs[1] - offs[0] != nbytes:
            raise ModelError(f"{where}: bytes {offs[0]}..{offs[1]} do not hold its {t['dtype']} {shape} "
                             f"({nbytes} bytes) within the file's {data_len} data bytes")
        shapes[name] = (t["dtype"], tuple(shape))
        spans.append((offs[0], offs[1]))
    end = 0
    for a, b in sorted(spans):
        if a != end:
            raise ModelError(f"{path}: tensor data {'overlaps' if a < end else 'leaves a gap'} at byte {a}")
        end = b
    if end != data_len:
        raise ModelError(f"{path}: {data_len - end} bytes after the last tensor's data")
    if "iotclass" not in extra:
        raise ModelError(f"{path}: a safetensors file, but not one of this project's models")
    try:
        meta = json.loads(extra["iotclass"])
    except ValueError as exc:
        raise ModelError(f"{path}: its metadata is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{path}: its metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path}: unknown model format {str(meta.get('format'))[:60]!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {str(meta.get('format_version'))[:20]}, this version of "
                         f"iotclass reads version {FORMAT_VERSION}; retrain it with `iotclass train`")
    return shapes, meta


def read_model(path: str | Path, check: Callable[[dict, dict], None] | None = None) -> tuple[dict, dict]:
    """(tensors as numpy arrays, metadata) of a saved model, with its format checked.

    The header is checked first (:func:`read_header`); ``check(meta, shapes)`` may refuse the
    model before any tensor is read."""
    from safetensors import safe_open
    path = str(path)
    shapes, meta = read_header(path)
    if check is not None:
        check(meta, shapes)
    try:
        with safe_open(path, framework="numpy") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on a bad file
        raise ModelError(f"{path}: not a model file ({exc})") from None
    return tensors, meta


class MetaChecker:
    """Checks one model's metadata fields; errors name the file and the field."""

    def __init__(self, path: str, meta: dict):
        self.path = path
        self.meta = meta

    def fail(self, key: str, expected: str, value) -> None:
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ModelError(f"{self.path}: metadata {key!r}: expected {expected}, got {shown}")

    def get(self, key: str, default=KeyError):
        if key not in self.meta:
            if default is KeyError:
                raise ModelError(f"{self.path}: metadata {key!r} is missing")
            return default
        return self.meta[key]

    def names(self, key: str, lo: int = 1, hi: int = 10_000, unique: bool = True, allowed=None) -> list[str]:
        v = self.get(key)
        if (not isinstance(v, list) or not lo <= len(v) <= hi
                or not all(isinstance(x, str) and 0 < len(x) <= 200 for x in v)):
            self.fail(key, f"a list of {lo} to {hi} names", v)
        if unique and len(set(v)) != len(v):
            self.fail(key, "names without repeats", v)
        if allowed is not None and any(x not in allowed for x in v):
            raise ModelError(f"{self.path}: metadata {key!r} names what this version does not compute: "
                             f"{', '.join(x for x in v if x not in allowed)[:200]}")
        return v

    def number(self, key: str, value, lo: float, hi: float, integer: bool = False):
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or not math.isfinite(value) or not lo <= value <= hi:
            self.fail(key, f"{'an integer' if integer else 'a number'} from {lo:g} to {hi:g}", value)
        return value

    def numbers(self, key: str, value, length: int, positive: bool = False) -> list:
        if (not isinstance(value, list) or len(value) != length
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                           and (x > 0 or not positive) for x in value)):
            self.fail(key, f"a list of {length} finite{' positive' if positive else ''} numbers", value)
        return value

    def settings(self, key: str, defaults: dict) -> dict:
        """A mapping of settings: each a key of ``defaults``, of its default's type (an integer
        from 0 to :data:`MAX_SETTING`, a finite number, a string)."""
        v = self.get(key)
        if not isinstance(v, dict):
            self.fail(key, "an object", v)
        for k, x in v.items():
            if k not in defaults:
                raise ModelError(f"{self.path}: metadata {key!r} has an unknown setting {k[:60]!r} "
                                 f"(known: {', '.join(defaults)})")
            d = defaults[k]
            if isinstance(d, bool):
                if not isinstance(x, bool):
                    self.fail(f"{key}.{k}", "true or false", x)
            elif isinstance(d, int):
                self.number(f"{key}.{k}", x, 0, MAX_SETTING, integer=True)
            elif isinstance(d, float):
                self.number(f"{key}.{k}", x, -1e12, 1e12)
            elif isinstance(d, str) and not isinstance(x, str):
                self.fail(f"{key}.{k}", "a string", x)
        return v

