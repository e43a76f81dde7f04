"""The audit: rebuild every finalized round of a project from chain + IPFS alone and check it.

For each `RoundFinalized` event, in round order:

- the record behind the event's `recordCID` is fetched and parsed;
- the round is rebuilt with `round.compute_round` from the chain (spec from `specCID`,
  reveals and commits from events, the seed from the reveal-deadline block's hash, the
  allocation from the event) and from IPFS (updates, base model, validation set from the
  record's `validation_cid`), with the rule, filter, scorer and adaptation settings the record
  states (so an auditor checks the aggregator's computation, not its choice of settings);
- and compared: the **model** (sha256 of the bytes at the chain's model CID equals the record's
  `model_digest`, which equals the rebuilt model's), the **verdicts**, the **scores** (exact
  equality: every operation is deterministic, see `aggregator.round.compute`), the **rewards** (increments,
  cumulative amounts, and the allocation, which must equal the chain's: the contract fixes it from
  the project's terms, so the aggregator cannot withhold it), the **root** (the chain's root must
  equal the record's, the rebuilt one, and the root of the record's own cumulative amounts) and
  every other field of the record (inputs, seed, proofs, hyper-parameters, metrics, ...).

Each round is rebuilt on the records published before it (what trainers claim against), so a
tampered round is reported once, at that round, and does not cascade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from aggregator.round import ZERO_ADDRESS, compute_round, config_from_record, load_context
from aggregator.valset import MAX_BYTES as VALSET_MAX_BYTES
from aggregator.valset import ValidationSet
from market.chain import Finalized, MarketClient, RoundStatus
from market.errors import MarketError
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.merkle import RewardTree
from market.protocol.reading import load_record, load_spec
from market.storage import Store, same_multihash

__all__ = ["RoundAudit", "audit_project", "audit_round"]

#: Record fields compared one by one (each mismatch names the field).
_COMPARED = (
    "project_id", "round", "chain_id", "contract", "seed", "base_model_cid", "validation_cid",
    "inputs", "verdicts", "scores", "cumulative_scores", "rewards", "cumulative_rewards",
    "allocation", "rewards_root", "proofs", "hyperparams", "metrics", "aggregation",
)


@dataclass
class RoundAudit:
    """The outcome of auditing one round: `problems` is empty when everything matched."""

    round: int
    status: str
    allocation: int
    record_cid: str
    checks: dict[str, bool] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    accepted: int = 0
    inputs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, check: str, message: str) -> None:
        self.checks[check] = False
        self.problems.append(f"round {self.round}: {message}")

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round, "status": self.status, "allocation": self.allocation,
            "record_cid": self.record_cid, "ok": self.ok, "checks": self.checks,
            "problems": self.problems, "accepted": self.accepted, "inputs": self.inputs,
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
) -> RoundAudit:
    """Rebuild and check one finalized round."""
    r = event.round
    status = client.round(project_id, r).status
    out = RoundAudit(r, status.name.lower(), event.allocation, event.record_cid)
    for check in ("record", "model", "verdicts", "scores", "rewards", "root"):
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
        model_bytes = store.cat(event.model_cid, max_bytes=200_000_000)
        got = "0x" + hashlib.sha256(model_bytes).hexdigest()
        if got != record.model_digest:
            out.fail("model", f"model digest: the bytes at {event.model_cid} hash to {got}, the record says {record.model_digest}")
    except MarketError as exc:
        out.fail("model", f"model {event.model_cid} cannot be read: {exc}")

    # rebuild the round from chain + IPFS
    try:
        spec = spec or load_spec(client, store, project_id)
        valset = ValidationSet.from_npz(
            store.cat(record.validation_cid, max_bytes=VALSET_MAX_BYTES), spec.model, record.validation_cid
        )
        # The allocation is an input: the chain's, which the contract fixes from the project's terms.
        ctx = load_context(client, store, project_id, r, event.allocation, spec=spec)
        config = config_from_record(record, allow_user_models=allow_user_models)
        computed = compute_round(ctx, store, config, valset, record.validation_cid, code_version=record.code_version)
    except Exception as exc:  # noqa: BLE001 - whatever stops the rebuild is the finding
        out.fail("record", f"the round cannot be rebuilt: {type(exc).__name__}: {exc}")
        return out
    rebuilt = computed.record(event.model_cid)
    if computed.model_digest != record.model_digest:
        out.fail("model", f"model digest: the inputs give {computed.model_digest}, the record says {record.model_digest}")
    _compare(out, record, rebuilt)
    if rebuilt.rewards_root.lower() != chain_root.lower():
        out.fail("root", f"rewards root: the rebuilt round gives {rebuilt.rewards_root}, the chain holds {chain_root}")
    if out.ok and rebuilt.to_bytes() != record.to_bytes():
        out.fail("record", "record bytes differ from the rebuilt record (field order or encoding)")
    return out


_CHECK_OF = {
    "verdicts": "verdicts", "inputs": "verdicts", "scores": "scores", "cumulative_scores": "scores",
    "rewards": "rewards", "cumulative_rewards": "rewards", "allocation": "rewards",
    "rewards_root": "root", "proofs": "root",
}


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
            out.fail(check, f"{name}: the record differs from the rebuild for {shown}{more}")
        else:
            out.fail(check, f"{name}: the record says {_short(got)}, the rebuild gives {_short(want)}")


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
) -> list[RoundAudit]:
    """Audit every finalized round of `project_id` (or only `rounds`)."""
    spec = load_spec(client, store, project_id)
    events = sorted(client.finalized(project_id), key=lambda f: f.round)
    out = []
    for ev in events:
        if rounds is not None and ev.round not in rounds:
            continue
        out.append(audit_round(client, store, project_id, ev, spec=spec, allow_user_models=allow_user_models))
    return out


def status_name(status: RoundStatus) -> str:
    return status.name.lower()
