"""Reading names: tokens, DNS labels, model numbers, and the category words of the curated tables.

One definition for the knowledge's build (which reads library class and group names with it) and
for matching devices' records at run time (:mod:`classifier.identity.knowledge`).
"""

from __future__ import annotations

import csv
import re
from functools import lru_cache
from pathlib import Path

CURATED_DIR = Path(__file__).resolve().parent / "curated"

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SPLIT = re.compile(r"[^a-z]+")
_PIECES = re.compile(r"[^A-Za-z0-9-]+")
_ALNUM = re.compile(r"[^a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case letter runs of ``text``, split at punctuation, digits and camelCase (an
    acronym before a capitalised word is a word of its own: IoTHub -> io, t, hub)."""
    return [t for t in _SPLIT.split(_CAMEL.sub(" ", text).lower()) if t]


def dns_labels(name: str) -> str:
    """A DNS name without its last label (the TLD): the part that can carry words."""
    parts = name.rstrip(".").split(".")
    return " ".join(parts[:-1]) if len(parts) > 1 else name


def normalise_model(text: str) -> str:
    """A model number as compared: lower case, letters and digits only (``DCS-935L`` -> ``dcs935l``)."""
    return _ALNUM.sub("", text.lower())


def model_pieces(text: str) -> list[str]:
    """The pieces of a name that can be a model number, normalised: the runs between spaces and
    punctuation other than ``-`` (``HS110(EU)`` -> hs110, eu; ``D-Link DCS-935L Setup`` ->
    dlink, dcs935l, setup), and the first ``-``-separated part of each (``KL110-US`` -> kl110; not
    a later part: in ``DCH-S220`` the series prefix belongs to the number)."""
    out: list[str] = []
    for piece in _PIECES.split(text):
        if not piece:
            continue
        parts = [p for p in piece.split("-") if p]
        for cand in [piece] + (parts[:1] if len(parts) > 1 else []):
            n = normalise_model(cand)
            if n and n not in out:
                out.append(n)
    return out


def is_model_number(text: str) -> bool:
    """Whether ``text`` looks like a model number: at least 4 letters and digits, with both."""
    n = normalise_model(text)
    return len(n) >= 4 and any(c.isdigit() for c in n) and any(c.isalpha() for c in n)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(ln for ln in fh if not ln.startswith("#")))


class Vocabulary:
    """The category words (``curated/words.csv``) and the modifiers that may stand beside them in
    one token (``curated/modifiers.csv``)."""

    def __init__(self, words: dict[str, tuple[str, float, bool]], modifiers: frozenset[str]):
        self.words = words            # word -> (category, weight, readable in DNS names)
        self.modifiers = modifiers
        self._compound = sorted((w for w in words if len(w) >= 3), key=len, reverse=True)

    @classmethod
    def from_rows(cls, words: list[dict], modifiers: list[dict]) -> "Vocabulary":
        w = {r["word"].strip().lower(): (r["category"].strip().split("|")[0], float(r["weight"]),
                                          str(r.get("dns", "0")).strip() == "1") for r in words}
        return cls(w, frozenset(r["word"].strip().lower() for r in modifiers))

    @classmethod
    def load(cls, folder: Path = CURATED_DIR) -> "Vocabulary":
        return cls.from_rows(_read_csv(folder / "words.csv"), _read_csv(folder / "modifiers.csv"))

    def _known(self, part: str, depth: int = 2) -> bool:
        """Whether ``part`` is a word, a modifier, or two of them joined."""
        if part in self.words or part in self.modifiers:
            return True
        if depth == 0:
            return False
        return any(self._known(part[:i], 0) and self._known(part[i:], depth - 1) for i in range(2, len(part) - 1))

    def match(self, token: str) -> str | None:
        """The category word ``token`` is, or is a compound of (see words.csv), else None."""
        if token in self.words:
            return token
        if len(token) < 4:
            return None
        for word in self._compound:
            if word == token:
                continue
            if token.startswith(word):
                rest = token[len(word):]
                # a short ending (plural, variant: plugs, scalews) only after a word of 4 letters or
                # more: cam + el is no camera
                if (len(rest) <= 2 and len(word) >= 4) or self._known(rest):
                    return word
            if token.endswith(word):
                rest = token[: -len(word)]
                if self._known(rest):
                    return word
        return None

    def hits(self, text: str, dns: bool = False) -> list[tuple[str, str, float]]:
        """(word, category, weight) for each category word in ``text``, once per word; in a DNS
        name (``dns``) only the words marked readable there."""
        out: dict[str, tuple[str, str, float]] = {}
        for tok in tokens(text):
            word = _cached_match(self, tok)
            if word is None:
                continue
            cat, w, in_dns = self.words[word]
            if dns and not in_dns:
                continue
            if cat:
                out.setdefault(word, (word, cat, w))
        return list(out.values())

    def category_of(self, text: str) -> tuple[str, str] | None:
        """The category a library's class or group name says (``OutdoorPlug`` -> plug, ``Power
        Strips`` -> plug, ``Bulbs`` -> light), with the word, or None. The whole name read as one
        compound comes first, then the heaviest word of its tokens."""
        toks = tokens(text)
        joined = "".join(toks)
        word = self.match(joined) if len(toks) > 1 else None
        if word is not None and self.words[word][0]:
            return self.words[word][0], word
        found = [(self.words[w][1], w) for w in (self.match(t) for t in toks) if w is not None and self.words[w][0]]
        if not found:
            return None
        best = max(found)
        cats = {self.words[w][0] for wt, w in found if wt == best[0]}
        if len(cats) > 1:
            return None
        return self.words[best[1]][0], best[1]


@lru_cache(maxsize=65536)
def _cached_match(vocab: Vocabulary, token: str) -> str | None:
    return vocab.match(token)
