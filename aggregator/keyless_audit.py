"""The audit of an encrypted project by someone who holds no recipient key.

Without a key nobody can read an update, so the round cannot be rebuilt. What needs no update
bytes is still checked, and what cannot be is said, round by round ("cannot verify without a
recipient key"), rather than failed:

- **record consistency**: the record's project, round, chain, contract, seed and inputs are the
  chain's (the reveals, in commit order), one verdict per input in that order;
- **model lineage**: the round was built on the previous round's model (the initial weights for
  round 0); the model bytes' digest (and a secret validation part's disclosure) was checked by
  `audit.audit_round` before this runs;
- **envelopes**: every revealed update is fetched and checked against its revealed digest and
  `envelope.require_recipients`: sealed for exactly the spec's recipients. A verdict that
  rejects for a fetch or envelope reason must be the one these checks give, and an envelope
  that passes them may not be rejected as malformed or not for the recipients;
- **rewards and root from the recorded scores**: the increments, cumulative amounts, proofs and
  root are recomputed from the record's scores, verdicts and the chain's allocation, and the
  cumulative scores from the previous round's;
- **policy**: the record's choices against the spec's aggregation policy are checked by
  `audit.audit_round` before this runs; here, also that the adaptation state a round starts from
  is the one the previous record handed on (the keyed rebuild compares it as part of the record);
- not verified: every other verdict (validation of the plaintext, filters), the scores, the
  aggregate (that the model is the rule applied to the accepted updates) and the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from aggregator.policy import record_deviations
from aggregator.round import config_from_record, load_context
from aggregator.round.config import RoundConfig
from aggregator.round.context import RoundContext
from aggregator.round.inputs import fetch_updates
from aggregator.round.stages import Candidate, RewardOutcome, RoundState, reward
from market.chain import Finalized, MarketClient
from market.errors import MarketError, UpdateRejected
from market.protocol.documents import ProjectSpec, RoundRecord, ValidationPolicy
from market.protocol.evaluations import RecordedEvaluation
from market.storage import Store, same_multihash

if TYPE_CHECKING:
    from aggregator.audit import RoundAudit

__all__ = ["UNVERIFIED", "audit_without_keys"]

#: How every check a keyless audit cannot make is worded.
UNVERIFIED = "cannot verify without a recipient key"

#: Verdict reasons a keyless auditor can reproduce: the fetch's and the envelope's structure.
_FETCH_REASONS = frozenset({"too_large", "invalid_cid", "digest_mismatch"})
_ENVELOPE_REASONS = frozenset({"malformed_envelope", "not_recipient"})

_CONSISTENT = ("project_id", "round", "chain_id", "contract", "seed", "base_model_cid", "inputs")


class _RecordedPaired:
    """The paired standard errors a record carries, in the place of the coalition utility the
    reward stage measures its pay noise with (a keyless auditor cannot evaluate a model)."""

    def __init__(self, evaluations: list[RecordedEvaluation]):
        self._se = {(e.members, e.baseline): e.value for e in evaluations
                    if e.subject == "paired" and e.metric == "loss_se" and e.baseline is not None}

    def __call__(self, coalition: frozenset[int]) -> float:
        raise TypeError("a keyless audit reads recorded paired errors only")

    def paired_se(self, coalition: frozenset[int], baseline: frozenset[int]) -> float | None:
        return self._se.get((tuple(sorted(coalition)), tuple(sorted(baseline))))


@dataclass
class _Recorded:
    """The part of a `RoundState` the reward stage reads, filled from a record instead of a rebuild
    (scores, verdicts with their claimed samples, the evaluations in its metrics)."""

    ctx: RoundContext
    config: RoundConfig
    candidates: list[Candidate]
    scores: dict[str, float]
    evaluation: dict[str, Any]
    score_utility: _RecordedPaired | None = None
    rewards: RewardOutcome | None = None

    @property
    def policy(self) -> ValidationPolicy:
        return self.ctx.spec.validation

    @property
    def accepted(self) -> list[Candidate]:
        return [c for c in self.candidates if c.accepted]


def audit_without_keys(
    out: RoundAudit, client: MarketClient, store: Store, project_id: int, event: Finalized, record: RoundRecord,
    spec: ProjectSpec,
) -> None:
    """Check round `event.round` of an encrypted project as far as no key is needed (into `out`)."""
    from market.protocol.envelope import inspect_envelope, require_recipients

    r = event.round
    try:
        ctx = load_context(client, store, project_id, r, event.allocation, spec=spec)
    except MarketError as exc:
        out.fail("record", f"the round's chain context cannot be read: {exc}")
        return
    for name in _CONSISTENT:
        got, want = getattr(record, name), getattr(ctx, name)
        if name == "inputs":
            want = list(want)
        if name == "base_model_cid" and isinstance(got, str) and same_multihash(got, want):
            continue
        if got != want:
            out.fail("record", f"{name}: the record says {str(got)[:80]}, the chain gives {str(want)[:80]}")
    if spec.validation.defence is not None:
        for d in record_deviations(record, spec.validation.defence, ctx.previous_aggregation if r > 0 else None):
            if d.field == "aggregation.state_in":
                out.fail("policy", d.message(r))
    if [v.trainer for v in record.verdicts] != [u.trainer for u in ctx.inputs]:
        out.fail("verdicts", "verdicts: the record's trainers are not the chain's reveals, in commit order")
        return

    fetched = fetch_updates(store, ctx.inputs, max_bytes=spec.validation.max_update_bytes, attempts=1)
    recipients = spec.recipient_keys()
    unverified = 0
    for f, v in zip(fetched, record.verdicts, strict=True):
        expected: str | None = None  # the reason this auditor finds, None: the envelope passes
        if f.data is None:
            if f.reason not in _FETCH_REASONS:
                out.unverified.append(f"verdict of {v.trainer}: its update could not be fetched here ({f.reason})")
                continue
            expected = f.reason
        else:
            try:
                require_recipients(inspect_envelope(f.data, max_bytes=spec.validation.max_update_bytes), recipients)
            except UpdateRejected as exc:
                expected = exc.reason
        if expected is not None:
            if v.accepted or v.reason != expected:
                got = "accepted" if v.accepted else f"rejected ({v.reason})"
                out.fail("verdicts", f"verdict of {v.trainer}: the record says {got}, its envelope gives {expected}")
        elif not v.accepted and v.reason in _ENVELOPE_REASONS:
            out.fail("verdicts", f"verdict of {v.trainer}: rejected as {v.reason}, but its envelope is sealed for"
                                 " exactly the spec's recipients")
        else:
            unverified += 1
    if unverified:
        out.unverified.append(f"{unverified} verdict(s) of updates sealed for the recipients: {UNVERIFIED}")

    cands = [Candidate(u, v.accepted, v.reason, v.detail, v.claimed_samples)
             for u, v in zip(ctx.inputs, record.verdicts, strict=True)]
    stray = sorted(t for t in record.scores if t not in {c.input.trainer for c in cands if c.accepted})
    if stray:
        out.fail("scores", f"scores: {stray[0]} has a score but no accepted update")
    cumulative = dict(ctx.cumulative_scores)
    for t, s in record.scores.items():
        cumulative[t] = cumulative.get(t, 0.0) + s
    if cumulative != record.cumulative_scores:
        out.fail("scores", "cumulative_scores: the record's are not the previous round's plus this round's scores")
    try:
        config = config_from_record(record)
    except MarketError as exc:
        out.fail("record", str(exc))
        return
    recorded = _Recorded(ctx, config, cands, dict(record.scores), dict(record.metrics),
                         _RecordedPaired(record.evaluations))
    reward(cast(RoundState, recorded))  # the service's own reward stage, on the recorded values
    rewards = recorded.rewards
    assert rewards is not None
    for name, want_value in (("rewards", rewards.increments), ("cumulative_rewards", rewards.cumulative),
                             ("rewards_root", rewards.root), ("proofs", rewards.proofs)):
        if getattr(record, name) != want_value:
            out.fail("root" if name in ("rewards_root", "proofs") else "rewards",
                     f"{name}: the record's differ from those its own scores give")
    out.unverified.append(f"scores, aggregate (the model from the accepted updates) and metrics: {UNVERIFIED}")
