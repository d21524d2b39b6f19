"""Pool names and their ids.

A pool is named after its organisation (:func:`pool_name`): ``as<ASN>-<organisation>`` (e.g.
``as15169-google``), ``org-<holder>`` where no AS announces the address, ``unknown`` with no
data; the special pools (``lan``, ``loopback``, ``multicast``, ...) keep their own names.

The pool vocabulary (:class:`PoolVocabulary`) turns names into embedding ids: ``0`` is padding
(no session), ``1`` is out-of-vocabulary, pools start at ``2``. It travels with a session model
as JSON.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Iterable, Mapping, Sequence

import numpy as np

from classifier.pools.asndb import SPECIAL_POOLS, PoolError

PAD_ID = 0   #: vocabulary id of "no session" (padding)
OOV_ID = 1   #: vocabulary id of a pool the vocabulary has not seen


# --------------------------------------------------------------------------- names


def _slug(text: str, limit: int = 24) -> str:
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()
    text = re.sub(r"[^a-z0-9]+", "-", text).strip("-")
    return text[:limit].rstrip("-")


@lru_cache(maxsize=1 << 16)
def pool_name(asn: int | None, org: str) -> str:
    """``as<ASN>-<org>`` (``as<ASN>`` without a name), ``org-<org>`` without an AS, else ``unknown``."""
    slug = _slug(org or "")
    if asn:
        return f"as{int(asn)}-{slug}" if slug else f"as{int(asn)}"
    return f"org-{slug}" if slug else "unknown"


_AS_KEY = re.compile(r"^(as\d+)(?:-|$)")


def as_key(name: str) -> str | None:
    m = _AS_KEY.match(name)
    return m.group(1) if m else None


def is_special(pool: str) -> bool:
    return pool in SPECIAL_POOLS


# --------------------------------------------------------------------------- vocabulary


class PoolVocabulary:
    """Ordered pool names -> embedding ids, versioned, saved with a model as JSON.

    Ids: ``PAD_ID`` = 0 for '' (no session / padding), ``OOV_ID`` = 1 for any pool not in the
    vocabulary, then 2, 3, ... for ``pools`` in order. The special pools come first (always
    present, so their ids never change). ``merges`` maps a pool to the pool it stands for and
    is applied before the look-up (part of the saved format; training makes none). A name
    ``as<N>-...`` not found as such is matched by its AS number, so that an organisation renamed
    in a newer offline database keeps its id. ``version`` is ``pools-v1-`` plus a digest of the
    content, unless given.
    """

    FORMAT = "iotclass-pool-vocabulary"
    FORMAT_VERSION = 1
    #: names whose ids :meth:`index` remembers
    KNOWN_NAMES = 1 << 16

    def __init__(self, pools: Sequence[str], *, merges: Mapping[str, str] | None = None, source: str = "",
                 version: str | None = None):
        pools = list(pools)
        seen = set()
        for i, p in enumerate(pools):
            if not isinstance(p, str) or not p:
                raise PoolError(f"pool vocabulary: entry {i} is {p!r}, not a pool name")
            if p in seen:
                raise PoolError(f"pool vocabulary: {p!r} appears twice (entry {i})")
            seen.add(p)
        merges = dict(merges or {})
        for old, new in merges.items():
            if not isinstance(old, str) or not isinstance(new, str) or new not in seen:
                raise PoolError(f"pool vocabulary: merge {old!r} -> {new!r} does not lead to a pool of the vocabulary")
        self.pools = tuple(pools)
        self.merges = dict(sorted(merges.items()))
        self.source = str(source)
        self._ids = {p: i + 2 for i, p in enumerate(self.pools)}
        self._as_ids: dict[str, int] = {}
        for p, i in self._ids.items():
            k = as_key(p)
            if k and k not in self._as_ids:
                self._as_ids[k] = i
        self._as_merges = {}
        for old, new in self.merges.items():
            k = as_key(old)
            if k and k not in self._as_merges:
                self._as_merges[k] = new
        self.version = version or self.digest()

    def digest(self) -> str:
        blob = json.dumps([self.pools, self.merges], separators=(",", ":")).encode()
        return f"pools-v{self.FORMAT_VERSION}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def __len__(self) -> int:
        """The number of ids (pools + padding + OOV): an embedding table's size."""
        return len(self.pools) + 2

    def __contains__(self, name: str) -> bool:
        return self.id(name) > OOV_ID

    def __eq__(self, other) -> bool:
        return (isinstance(other, PoolVocabulary) and self.pools == other.pools and self.merges == other.merges
                and self.version == other.version)

    def __repr__(self) -> str:
        return f"PoolVocabulary({len(self.pools)} pools, version={self.version!r})"

    def id(self, name: str) -> int:
        if not name:
            return PAD_ID
        key = as_key(name)
        name = self.merges.get(name) or (self._as_merges.get(key) if key else None) or name
        found = self._ids.get(name)
        if found is None:
            key = as_key(name)
            found = self._as_ids.get(key) if key else None
        return OOV_ID if found is None else found

    def index(self, names) -> np.ndarray:
        """Ids (int64) of pool names, same shape; '' is PAD_ID, unseen pools OOV_ID."""
        arr = np.asarray(names, dtype=object)
        flat = arr.ravel()
        if flat.size == 0:
            return np.zeros(arr.shape, np.int64)
        # a decision asks for the same few names again and again: the ids of names met before
        # are remembered (a vocabulary never changes); a name not among them takes the way below
        known = self.__dict__.setdefault("_known", {})
        try:
            return np.array([known[n] for n in flat.tolist()], dtype=np.int64).reshape(arr.shape)
        except (KeyError, TypeError):
            pass
        uniq, inverse = np.unique(flat.astype(str), return_inverse=True)
        names = uniq.tolist()
        ids = np.array([self.id(u) for u in names], dtype=np.int64)
        if len(known) + len(names) > self.KNOWN_NAMES:
            known.clear()
        known.update(zip(names, ids.tolist()))
        return ids[inverse.ravel()].reshape(arr.shape)

    def name(self, ident: int) -> str:
        if ident == PAD_ID:
            return ""
        if ident == OOV_ID:
            return "<oov>"
        return self.pools[ident - 2]

    @classmethod
    def build(cls, names: Iterable[str], min_count: int = 1, *, merges: Mapping[str, str] | None = None,
              source: str = "") -> "PoolVocabulary":
        """The special pools, then every pool seen at least ``min_count`` times (after merges),
        most frequent first (ties by name)."""
        merges = dict(merges or {})
        counts = Counter(merges.get(n, n) for n in names if n)
        rest = sorted((p for p, c in counts.items() if c >= min_count and p not in SPECIAL_POOLS),
                      key=lambda p: (-counts[p], p))
        pools = list(SPECIAL_POOLS) + rest
        kept = set(pools)
        merges = {old: new for old, new in merges.items() if new in kept}
        return cls(pools, merges=merges, source=source)

    @classmethod
    def from_sessions(cls, sessions, min_count: int = 1, *, merges: Mapping[str, str] | None = None,
                      source: str = "") -> "PoolVocabulary":
        """:meth:`build` over the ``pool`` column of one Sessions table or several."""
        tables = [sessions] if hasattr(sessions, "pool") else list(sessions)
        names = [p for s in tables for p in s.pool.tolist()]
        return cls.build(names, min_count, merges=merges, source=source)

    def to_dict(self) -> dict:
        return {"format": self.FORMAT, "format_version": self.FORMAT_VERSION, "version": self.version,
                "pad_id": PAD_ID, "oov_id": OOV_ID, "first_pool_id": 2, "source": self.source,
                "pools": list(self.pools), "merges": dict(self.merges)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict, where: str = "pool vocabulary") -> "PoolVocabulary":
        if not isinstance(data, dict) or data.get("format") != cls.FORMAT:
            raise PoolError(f"{where}: not a pool vocabulary (format {data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
        if data.get("format_version") != cls.FORMAT_VERSION:
            raise PoolError(f"{where}: format version {data.get('format_version')!r}, this program reads {cls.FORMAT_VERSION}")
        if data.get("pad_id") != PAD_ID or data.get("oov_id") != OOV_ID:
            raise PoolError(f"{where}: pad/oov ids {data.get('pad_id')}/{data.get('oov_id')}, expected {PAD_ID}/{OOV_ID}")
        pools, merges = data.get("pools"), data.get("merges", {})
        if not isinstance(pools, list) or not isinstance(merges, dict):
            raise PoolError(f"{where}: 'pools' must be a list and 'merges' an object")
        try:
            vocab = cls(pools, merges=merges, source=data.get("source", ""), version=data.get("version"))
        except PoolError as exc:
            raise PoolError(f"{where}: {exc}") from None
        if str(vocab.version).startswith("pools-v") and vocab.version != vocab.digest():
            raise PoolError(f"{where}: version {vocab.version} does not match its content ({vocab.digest()}): "
                            "the pool list was edited")
        return vocab

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "pool vocabulary") -> "PoolVocabulary":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PoolError(f"{where}: not JSON: {exc}") from None
        return cls.from_dict(data, where)
