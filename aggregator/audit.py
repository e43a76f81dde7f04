"""The audit: rebuild every finalized round of a project from chain + IPFS alone and check it.

For each `RoundFinalized` event, in round order:

- the record behind the event's `recordCID` is fetched and parsed;
- the round is rebuilt with `round.compute_round` from the chain (spec from `specCID`,
  reveals and commits from events, the seed from the reveal-deadline block's hash, the
  allocation from the event) and from IPFS (updates, base model, validation set from the
  record's `validation_cid`), with the rule, filter, scorer and adaptation settings the record
  states (so an auditor checks the aggregator's computation, not its choice of settings);
- every validation evaluation the record lists (coalition utilities, the base and new models'
  accuracy and loss: what a filter, the gate, the scorer or the adaptation used) is measured
  again on this machine and accepted within `market.protocol.evaluations.TOLERANCES`; the round
  then goes on with the **recorded** values, so what follows from them is exact on any machine;
- and compared: the **model** (sha256 of the bytes at the chain's model CID equals the record's
  `model_digest`, which equals the rebuilt model's: the aggregation is bit-exact everywhere, see
  `market.protocol.numerics`), the **verdicts**, the **scores** (exact
  equality given the recorded utilities), the **rewards** (increments,
  cumulative amounts, and the allocation, which must equal the chain's: the contract fixes it from
  the project's terms, so the aggregator cannot withhold it), the **root** (the chain's root must
  equal the record's, the rebuilt one, and the root of the record's own cumulative amounts) and
  every other field of the record (inputs, seed, proofs, hyper-parameters, metrics, ...);
- and, when the spec commits to secret validation parts, that the set at `validation_cid` is
  the part committed for this round (`aggregation.validation_disclosure`, check `validation`;
  with or without keys, since it needs no update);
- and the record's choices against the project's aggregation policy (check `policy`, with or
  without keys: `aggregator.policy.record_deviations`): the rule, every filter and pay threshold,
  the scorer, the adaptation schedule, round 0's server learning rate, and that a public
  validation set is the policy's byte for byte. The rebuild replays what the record declares, so
  this is what stops a record from choosing, say, a `zero_rel_norm` of 0.99 that rejects honest
  trainers; each difference is a FAIL naming the field and the policy's value. A spec created
  before policies fixes none: the check is `None` (not applicable) and the record's choices are
  replayed as declared, as before.

Each round is rebuilt on the records published before it (what trainers claim against), so a
tampered round is reported once, at that round, and does not cascade.

A round ends PASS, FAIL (`findings` say which check, recorded against rebuilt values and by how
much) or CANNOT VERIFY with a reason: a record whose format predates cross-machine audits
(version < CROSS_MACHINE_VERSION: its model and utilities were float32 reductions that only the
same CPU and build reproduce), or a user model architecture without `--allow-user-models`. The
record-against-chain checks still run for such a round; a failure there is a FAIL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aggregator.keyless_audit import UNVERIFIED, audit_without_keys
from aggregator.policy import policy_of, record_deviations, validation_deviation
from aggregator.round import ZERO_ADDRESS, compute_round, config_from_record, load_context
from aggregator.round.ledger import EvaluationLedger
from aggregator.valset import DISCLOSURE_KEY, ValidationSet, check_disclosed_part
from aggregator.valset import MAX_BYTES as VALSET_MAX_BYTES
from market.chain import Finalized, MarketClient, RoundStatus
from market.errors import MarketError
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.envelope import is_envelope, model_context, open_envelope
from market.protocol.evaluations import CROSS_MACHINE_VERSION, RecordedEvaluation, shapley_reward_bound
from market.protocol.merkle import RewardTree
from market.protocol.reading import load_record, load_spec
from market.protocol.valsplit import ValidationCommitment
from market.storage import Store, same_multihash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["CANNOT_VERIFY", "FAIL", "PASS", "Finding", "RoundAudit", "audit_project", "audit_round"]

PASS, FAIL, CANNOT_VERIFY = "pass", "fail", "cannot verify"

#: Record fields compared one by one (each mismatch names the field).
_COMPARED = (
    "project_id", "round", "chain_id", "contract", "seed", "base_model_cid", "validation_cid",
    "inputs", "verdicts", "scores", "cumulative_scores", "rewards", "cumulative_rewards",
    "allocation", "rewards_root", "proofs", "hyperparams", "metrics", "aggregation", "version",
)


@dataclass(frozen=True)
class Finding:
    """One failed check: what it was, and (where numbers) the recorded and rebuilt values."""

    check: str
    message: str
    recorded: Any = None
    rebuilt: Any = None
    difference: float | None = None
    allowed: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class RoundAudit:
    """The outcome of auditing one round: `problems` is empty when everything matched."""

    round: int
    status: str
    allocation: int
    record_cid: str
    checks: dict[str, bool | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    accepted: int = 0
    inputs: int = 0
    #: why the round could not be rebuilt here (None: it was)
    cannot_verify: str | None = None
    #: recorded evaluations checked, the largest relative difference, and the wei any set of
    #: trainers could have gained by values inside the tolerance (exact Shapley bound; None: n/a)
    evaluations: int = 0
    largest_relative_difference: float = 0.0
    tolerance_bound_wei: int | None = None
    #: what a keyless audit of an encrypted project could not check, one line each
    unverified: list[str] = field(default_factory=list)
    #: the record the rebuild gives (None: the round was not rebuilt); a FAILed round's is the
    #: corrected record an arbiter can uphold (`market audit --corrected-out`)
    rebuilt: RoundRecord | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def verdict(self) -> str:
        if self.problems:
            return FAIL
        return CANNOT_VERIFY if self.cannot_verify else PASS

    def fail(self, check: str, message: str, **values: Any) -> None:
        self.checks[check] = False
        self.problems.append(f"round {self.round}: {message}")
        self.findings.append(Finding(check, message, **values))

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round, "status": self.status, "allocation": self.allocation,
            "record_cid": self.record_cid, "ok": self.ok, "verdict": self.verdict,
            "cannot_verify": self.cannot_verify, "checks": self.checks,
            "problems": self.problems, "findings": [f.to_json() for f in self.findings],
            "accepted": self.accepted, "inputs": self.inputs, "evaluations": self.evaluations,
            "largest_relative_difference": self.largest_relative_difference,
            "tolerance_bound_wei": self.tolerance_bound_wei, "unverified": self.unverified,
        }


def _diff_keys(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    keys = sorted(set(a) | set(b), key=str.lower)
    return [k for k in keys if a.get(k, _MISSING) != b.get(k, _MISSING)]


_MISSING = object()


def _short(v: Any, n: int = 80) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def audit_round(
    client: MarketClient,
    store: Store,
    project_id: int,
    event: Finalized,
    *,
    spec: ProjectSpec | None = None,
    allow_user_models: bool = False,
    threads: int | None = None,
    decryption_keys: Sequence[X25519PrivateKey] = (),
) -> RoundAudit:
    """Rebuild and check one finalized round (`threads`: run the rebuild on this many threads
    instead of the record's; the result does not depend on it). An encrypted project's round is
    rebuilt with a recipient's `decryption_keys`; without them `keyless_audit` checks it."""
    r = event.round
    status = client.round(project_id, r).status
    out = RoundAudit(r, status.name.lower(), event.allocation, event.record_cid)
    for check in CHECKS:
        out.checks[check] = True
    chain_root = "0x" + event.rewards_root.hex()

    try:
        record = load_record(store, event.record_cid)
    except MarketError as exc:
        out.fail("record", f"record {event.record_cid} cannot be read: {exc}")
        return out
    out.inputs = len(record.verdicts)
    out.accepted = sum(1 for v in record.verdicts if v.accepted)

    # what can be checked without rebuilding: the chain against the record itself
    if record.allocation != event.allocation:
        out.fail("rewards", f"allocation: the record says {record.allocation}, the chain {event.allocation}")
    if record.rewards_root.lower() != chain_root.lower():
        out.fail("root", f"rewards root: the record says {record.rewards_root}, the chain {chain_root}")
    try:
        own_root = "0x" + RewardTree.build(record.cumulative_rewards or {ZERO_ADDRESS: 0}).root.hex()
    except ValueError as exc:
        own_root = f"(no tree: {exc})"
    if own_root.lower() != chain_root.lower():
        out.fail("root", f"rewards root: the chain's root {chain_root} is not the root of the record's "
                         f"cumulative amounts ({own_root})")
    paid = sum(record.rewards.values())
    if paid not in (0, record.allocation):
        # all of the fixed allocation, or nothing when nobody earned a share (it is swept later)
        out.fail("rewards", f"rewards: increments sum to {paid}, the allocation is {record.allocation}")
    if not same_multihash(record.model_cid, event.model_cid):
        out.fail("model", f"model CID: the record says {record.model_cid}, the chain {event.model_cid}")
    try:
        model_bytes: bytes | None = store.cat(event.model_cid, max_bytes=200_000_000)
        if model_bytes is not None and is_envelope(model_bytes):
            # a sealed model (spec.model_readers): the record's digest is of the plaintext inside
            if decryption_keys:
                model_bytes = open_envelope(model_bytes, list(decryption_keys), model_context(project_id, r))
            else:
                model_bytes = None
                out.unverified.append(f"model digest: the model is sealed for the project's model readers: {UNVERIFIED}")
        got = None if model_bytes is None else "0x" + hashlib.sha256(model_bytes).hexdigest()
        if got is not None and got != record.model_digest:
            out.fail("model", f"model digest: the bytes at {event.model_cid} hash to {got}, the record says {record.model_digest}")
    except MarketError as exc:
        out.fail("model", f"model {event.model_cid} cannot be read: {exc}")

    # rebuild the round from chain + IPFS
    try:
        spec = spec or load_spec(client, store, project_id)
    except Exception as exc:  # noqa: BLE001 - whatever stops the rebuild is the finding
        out.fail("record", f"the project spec cannot be read: {type(exc).__name__}: {exc}")
        return out
    _check_policy(out, store, spec, record)
    if spec.validation_data is not None:
        _check_validation_part(out, store, spec.validation_data, record)
    if spec.encrypted and not decryption_keys:
        audit_without_keys(out, client, store, project_id, event, record, spec)
        return out
    reason = _unverifiable(record, spec, allow_user_models)
    if reason is not None:
        out.cannot_verify = reason
        for check in ("model", "evaluations", "verdicts", "scores"):
            out.checks.setdefault(check, None)
            if out.checks[check]:
                out.checks[check] = None
        return out
    try:
        valset = ValidationSet.from_npz(
            store.cat(record.validation_cid, max_bytes=VALSET_MAX_BYTES), spec.model, record.validation_cid
        )
        # The allocation is an input: the chain's, which the contract fixes from the project's terms.
        ctx = load_context(client, store, project_id, r, event.allocation, spec=spec, decryption_keys=decryption_keys)
        config = config_from_record(record, allow_user_models=allow_user_models, run_threads=threads)
        computed = compute_round(ctx, store, config, valset, record.validation_cid, code_version=record.code_version,
                                 recorded=record.evaluations)
    except Exception as exc:  # noqa: BLE001 - whatever stops the rebuild is the finding
        out.fail("record", f"the round cannot be rebuilt: {type(exc).__name__}: {exc}")
        return out
    if spec.validation_data is not None and DISCLOSURE_KEY in record.aggregation:
        # checked on its own above (`_check_validation_part`); the rebuild cannot derive it
        aggregation = {**computed.fields["aggregation"], DISCLOSURE_KEY: record.aggregation[DISCLOSURE_KEY]}
        computed = dataclasses.replace(computed, fields={**computed.fields, "aggregation": aggregation})
    rebuilt = out.rebuilt = computed.record(event.model_cid)
    _check_evaluations(out, record, computed.ledger)
    if computed.model_digest != record.model_digest:
        out.fail("model", f"model digest: the inputs give {computed.model_digest}, the record says {record.model_digest}")
    _compare(out, record, rebuilt)
    if rebuilt.rewards_root.lower() != chain_root.lower():
        out.fail("root", f"rewards root: the rebuilt round gives {rebuilt.rewards_root}, the chain holds {chain_root}")
    if out.ok and rebuilt.to_bytes() != record.to_bytes():
        mine, theirs = json.loads(record.to_bytes()), json.loads(rebuilt.to_bytes())
        keys = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
        out.fail("record", f"record bytes differ from the rebuilt record in {', '.join(keys) or 'their encoding'}"
                           f" ({_short(mine.get(keys[0]) if keys else None, 60)} vs "
                           f"{_short(theirs.get(keys[0]) if keys else None, 60)})")
    return out


#: The checks of a round, in the order the table shows them.
CHECKS = ("record", "model", "evaluations", "verdicts", "scores", "rewards", "root")

_CHECK_OF = {
    "verdicts": "verdicts", "inputs": "verdicts", "scores": "scores", "cumulative_scores": "scores",
    "rewards": "rewards", "cumulative_rewards": "rewards", "allocation": "rewards",
    "rewards_root": "root", "proofs": "root",
}


def _check_policy(out: RoundAudit, store: Store, spec: ProjectSpec, record: RoundRecord) -> None:
    """The record's choices are the ones the spec's policy fixes (None: the spec fixes none)."""
    policy = policy_of(spec)
    if policy is None:
        out.checks["policy"] = None
        return
    out.checks["policy"] = True
    for d in record_deviations(record, policy):
        out.fail("policy", d.message(record.round), recorded=_short(d.recorded), rebuilt=_short(d.fixed))
    if spec.validation_data is None:
        try:
            data = store.cat(record.validation_cid, max_bytes=VALSET_MAX_BYTES)
        except MarketError as exc:
            out.fail("policy", f"the validation set {record.validation_cid} cannot be read: {exc}")
            return
        why = validation_deviation(data, policy, spec, record)
        if why is not None:
            out.fail("policy", why)


def _check_validation_part(out: RoundAudit, store: Store, commitment: ValidationCommitment,
                           record: RoundRecord) -> None:
    """The round's disclosed validation part (at `validation_cid`) is the part the spec committed
    to for this round (`valset.check_disclosed_part`)."""
    out.checks["validation"] = True
    try:
        data = store.cat(record.validation_cid, max_bytes=VALSET_MAX_BYTES)
        check_disclosed_part(commitment, record.round, record.aggregation, data)
    except MarketError as exc:
        out.fail("validation", str(exc).removeprefix(f"round {record.round}: "))


def _unverifiable(record: RoundRecord, spec: ProjectSpec, allow_user_models: bool) -> str | None:
    if record.version < CROSS_MACHINE_VERSION:
        return (f"record format {record.version} predates cross-machine audits (version {CROSS_MACHINE_VERSION}): "
                "its model and utilities only reproduce on the aggregator's CPU kind and PyTorch build")
    if ":" in spec.model.architecture and not allow_user_models:
        return (f"the model is a user architecture ({spec.model.architecture}); rerun with --allow-user-models "
                "to build it (that runs its code)")
    return None


def _coalition(record: RoundRecord, members: tuple[int, ...]) -> str:
    names = [record.verdicts[i].trainer if 0 <= i < len(record.verdicts) else f"#{i}" for i in members]
    return "coalition {" + ", ".join(names) + "}" if names else "the empty coalition (base model)"


def _members(record: RoundRecord, e: RecordedEvaluation) -> str:
    if e.subject == "paired":
        return f"{_coalition(record, e.members)} against {_coalition(record, e.baseline or ())}"
    if e.subject != "coalition":
        return f"the {'base' if e.subject == 'base' else 'new' if e.subject == 'model' else e.subject} model"
    return _coalition(record, e.members)


def _check_evaluations(out: RoundAudit, record: RoundRecord, ledger: EvaluationLedger) -> None:
    out.evaluations = len(ledger.checks)
    out.largest_relative_difference = max((c.check.relative for c in ledger.checks), default=0.0)
    for c in ledger.failures():
        e, chk = c.evaluation, c.check
        out.fail("evaluations",
                 f"{e.metric} of {_members(record, e)}: the record says {chk.recorded!r}, this machine measures "
                 f"{chk.rebuilt!r}, off by {chk.difference:.3g} (tolerance {chk.allowed:.3g})",
                 recorded=chk.recorded, rebuilt=chk.rebuilt, difference=chk.difference, allowed=chk.allowed)
    for e in ledger.missing:
        out.fail("evaluations", f"{e.metric} of {_members(record, e)}: the round needs it and the record lacks it",
                 rebuilt=e.value)
    for e in ledger.unused():
        out.fail("evaluations", f"{e.metric} of {_members(record, e)}: recorded but never used by the round",
                 recorded=e.value)
    out.tolerance_bound_wei = _tolerance_bound(record, ledger)


def _tolerance_bound(record: RoundRecord, ledger: EvaluationLedger) -> int | None:
    """The exact-Shapley bound on what values inside the tolerance could move (docs/audit.md)."""
    if record.scorer != "exact_shapley" or not record.allocation:
        return None
    coalition = [c.check for c in ledger.checks if c.evaluation.subject == "coalition"]
    if not coalition:
        return None
    slack = max(c.allowed for c in coalition)
    positive = sum(max(0.0, v) for v in record.scores.values())
    return shapley_reward_bound(record.allocation, len(record.scores), positive, slack)


def _compare(out: RoundAudit, record: RoundRecord, rebuilt: RoundRecord) -> None:
    for name in _COMPARED:
        got, want = getattr(record, name), getattr(rebuilt, name)
        if got == want:
            continue
        check = _CHECK_OF.get(name, "record")
        if name == "verdicts":
            theirs = {v.trainer: v for v in got}
            for v in want:
                t = theirs.get(v.trainer)
                if t != v:
                    out.fail(check, f"verdict of {v.trainer}: the record says "
                                    f"{_verdict_text(t)}, the rebuild gives {_verdict_text(v)}")
            if len(got) != len(want):
                out.fail(check, f"verdicts: the record has {len(got)}, the rebuild {len(want)}")
        elif isinstance(got, dict) and isinstance(want, dict):
            keys = _diff_keys(got, want)
            shown = ", ".join(f"{k}: {_short(got.get(k), 40)} vs {_short(want.get(k), 40)}" for k in keys[:3])
            more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
            k0 = keys[0] if keys else None
            a, b = (got.get(k0), want.get(k0)) if k0 is not None else (None, None)
            diff = abs(a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
            out.fail(check, f"{name}: the record differs from the rebuild for {shown}{more}",
                     recorded=a, rebuilt=b, difference=None if diff is None else float(diff))
        else:
            out.fail(check, f"{name}: the record says {_short(got)}, the rebuild gives {_short(want)}",
                     recorded=_short(got), rebuilt=_short(want))


def _verdict_text(v: Any) -> str:
    if v is None:
        return "nothing"
    return "accepted" if v.accepted else f"rejected ({v.reason})"


def audit_project(
    client: MarketClient,
    store: Store,
    project_id: int,
    *,
    rounds: list[int] | None = None,
    allow_user_models: bool = False,
    threads: int | None = None,
    decryption_keys: Sequence[X25519PrivateKey] = (),
) -> list[RoundAudit]:
    """Audit every finalized round of `project_id` (or only `rounds`)."""
    spec = load_spec(client, store, project_id)
    events = sorted(client.finalized(project_id), key=lambda f: f.round)
    out = []
    for ev in events:
        if rounds is not None and ev.round not in rounds:
            continue
        out.append(audit_round(client, store, project_id, ev, spec=spec, allow_user_models=allow_user_models,
                               threads=threads, decryption_keys=decryption_keys))
    return out


def status_name(status: RoundStatus) -> str:
    return status.name.lower()
