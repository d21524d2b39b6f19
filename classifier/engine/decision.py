"""What the classifier tells the controller about one device: a :class:`Decision`.

The controller keeps each learning device's mirrored packets (a :class:`Packets` table:
what it sent and what it received) and now and then asks an :class:`Engine` to decide.
The engine answers ``None`` while there is not enough evidence, then a *provisional*
decision, then a *confirmed* one once confidence and evidence pass its thresholds. A device
whose type the models do not know comes out with category ``unknown``.

``Engine.decide`` may take milliseconds: the controller calls it off its event loop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

from classifier.capture.packets import Packets

PROVISIONAL = "provisional"
CONFIRMED = "confirmed"
UNKNOWN = "unknown"
STAGES = (PROVISIONAL, CONFIRMED, UNKNOWN)


@dataclass(frozen=True)
class Decision:
    category: str                 #: one of classifier.capture.labels.CATEGORIES, or "unknown"
    confidence: float             #: calibrated probability of ``category`` (0..1)
    stage: str                    #: provisional | confirmed | unknown
    model: str                    #: which model decided, with its version
    explanation: str = ""         #: one line for people (top pools/sessions or features)
    evidence: dict = field(default_factory=dict)  #: {"packets": n, "sessions": n, "segments": n}
    #: the voters that vouch for ``category`` (reach their own threshold; a behaviour model only on
    #: the full behaviour evidence): ``("identity",)`` means the decision rests on what the device
    #: says about itself alone, which the device controls
    vouching: tuple = ()
    #: what is left of the explanation when the caller asked for it later
    #: (``DecisionEngine.decide(..., explain_later=True)``): a function giving the whole
    #: explanation and its structured parts; ``DecisionEngine.explained`` completes the decision.
    #: Not part of the decision's value (not compared, not in :meth:`to_dict`).
    pending: Callable | None = field(default=None, compare=False, repr=False)

    @property
    def identity_alone(self) -> bool:
        """Whether the decision rests on the device's own claims only (no behaviour model vouches)."""
        return self.category != UNKNOWN and tuple(self.vouching) == ("identity",)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("pending", None)
        return d


class Engine(Protocol):
    """Anything that turns one device's packets into a decision."""

    version: str

    def decide(self, pk: Packets, mac: int, now_ns: int | None = None) -> Decision | None:
        """Classify device ``mac`` from ``pk`` (its packets so far, sent and received).

        ``now_ns`` is the current time (defaults to the last packet's); ``None`` means
        there is not enough evidence yet.
        """
        ...
