"""The round's evaluation ledger: every validation evaluation a filter, gate or score used.

An aggregator computing a round records each value it measures (`RecordedEvaluation`: what was
evaluated, on which metric, the value). An auditor replays the round with the record's ledger:
each value the round needs is re-measured on the auditor's machine and checked against the
recorded one within `market.protocol.evaluations.TOLERANCES`, and the **recorded** value is what
the round goes on with. So the verdicts, scores, rewards and root derive exactly from the
recorded values (bit-identical on any machine), while a recorded value outside the tolerance is
a finding that names what was evaluated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from market.protocol.evaluations import EvaluationCheck, RecordedEvaluation, check_evaluation, tolerance_for

__all__ = ["EvaluationLedger", "LedgerCheck"]

_Key = tuple[str, tuple[int, ...], str, tuple[int, ...] | None]


@dataclass(frozen=True)
class LedgerCheck:
    """One recorded evaluation against this machine's measurement."""

    evaluation: RecordedEvaluation
    check: EvaluationCheck


@dataclass
class EvaluationLedger:
    """Values used by a round, in first-use order; `recorded` replays a published round."""

    recorded: Sequence[RecordedEvaluation] | None = None
    used: dict[_Key, float] = field(default_factory=dict)
    checks: list[LedgerCheck] = field(default_factory=list)
    #: evaluations the round needed that the record lacks (measured here instead)
    missing: list[RecordedEvaluation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._recorded = {(e.subject, tuple(e.members), e.metric, e.baseline): e for e in self.recorded or ()}

    @property
    def replaying(self) -> bool:
        return self.recorded is not None

    def values(self, subject: str, members: Sequence[int], metrics: Sequence[str],
               measure: Callable[[], Sequence[float]], baseline: Sequence[int] | None = None) -> list[float]:
        """The values of `metrics` for `subject`/`members` (against `baseline`, for a paired
        evaluation): measured once (by `measure`, which returns them in `metrics` order); when
        replaying, the recorded ones, each checked."""
        against = None if baseline is None else tuple(sorted(int(m) for m in baseline))
        keys: list[_Key] = [(subject, tuple(sorted(int(m) for m in members)), metric, against) for metric in metrics]
        if all(k in self.used for k in keys):
            return [self.used[k] for k in keys]
        measured = [float(v) for v in measure()]
        out = []
        for key, value in zip(keys, measured, strict=True):
            if key in self.used:
                out.append(self.used[key])
                continue
            if self.replaying:
                rec = self._recorded.get(key)
                if rec is None:
                    self.missing.append(RecordedEvaluation(subject=key[0], members=key[1], metric=key[2], value=value,
                                                           baseline=key[3]))
                else:
                    self.checks.append(LedgerCheck(rec, check_evaluation(rec.value, value, tolerance_for(key[2]))))
                    value = rec.value
            self.used[key] = value
            out.append(value)
        return out

    def value(self, subject: str, members: Sequence[int], metric: str, measure: Callable[[], float],
              baseline: Sequence[int] | None = None) -> float:
        return self.values(subject, members, [metric], lambda: [measure()], baseline)[0]

    def records(self) -> list[RecordedEvaluation]:
        """What the round record publishes: every value used, in first-use order."""
        return [RecordedEvaluation(subject=s, members=m, metric=k, value=v, baseline=b)
                for (s, m, k, b), v in self.used.items()]

    def unused(self) -> list[RecordedEvaluation]:
        """Recorded evaluations the replayed round never needed."""
        return [e for key, e in self._recorded.items() if key not in self.used]

    def failures(self) -> list[LedgerCheck]:
        return [c for c in self.checks if not c.check.ok]
