"""A fabricated but protocol-valid history for dashboard tests and the benchmark: trainers commit
and reveal real commitments, the aggregator finalizes with a round record whose root is the real
Merkle root of its cumulative rewards, stored in the test's content store. No training: the
dashboard only reads. Not a test module."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence

from eth_account.signers.local import LocalAccount

from market.chain import MarketClient, ProjectParams, commitment_of
from market.chain.accounts import dev_account
from market.protocol.documents import ProjectSpec, RecordedVerdict, RoundRecord, UpdateInput
from market.protocol.merkle import RewardTree
from market.protocol.model_spec import ModelSpec
from market.storage import Store

ETHER = 10**18
OWNER, AGGREGATOR, ARBITER = 0, 1, 2


def make_spec(store: Store) -> tuple[str, str]:
    base = store.add(b"initial weights")
    spec = ProjectSpec(model=ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits",
                                       initial_weights_cid=base))
    return store.add(spec.to_bytes()), base


def params(spec_cid: str, rounds: int, commit: int = 4, reveal: int = 4, challenge: int = 2,
           reward: int = ETHER) -> ProjectParams:
    return ProjectParams(
        aggregator=dev_account(AGGREGATOR).address, arbiter=dev_account(ARBITER).address, num_rounds=rounds,
        reward_per_round=reward, commit_window=commit, reveal_window=reveal, challenge_window=challenge,
        spec_cid=spec_cid,
    )


def make_record(
    project_id: int, round_: int, chain_id: int, contract: str, base_cid: str, model_cid: str, model_bytes: bytes,
    inputs: Sequence[UpdateInput], rejected: dict[str, str], allocation: int, previous: dict[str, int],
    previous_scores: dict[str, float],
) -> RoundRecord:
    """A record paying `allocation` to the accepted trainers in proportion to a made-up score;
    `rejected` maps trainer -> reason code."""
    accepted = [i.trainer for i in inputs if i.trainer not in rejected]
    scores = {i.trainer: (0.0 if i.trainer in rejected else 1.0 + (k % 5) / 10) for k, i in enumerate(inputs)}
    total = sum(scores[t] for t in accepted) or 1.0
    rewards = {t: int(allocation * scores[t] / total) if t in accepted else 0 for t in scores}
    if accepted:
        rewards[accepted[0]] += allocation - sum(rewards.values())
    cumulative = dict(previous)
    for t, v in rewards.items():
        cumulative[t] = cumulative.get(t, 0) + v
    cum_scores = dict(previous_scores)
    for t, score in scores.items():
        cum_scores[t] = cum_scores.get(t, 0.0) + score
    tree = RewardTree.build(cumulative)
    verdicts = [RecordedVerdict(trainer=i.trainer, accepted=i.trainer not in rejected, reason=rejected.get(i.trainer),
                        detail=f"fabricated {rejected[i.trainer]}" if i.trainer in rejected else "",
                        claimed_samples=250) for i in inputs]
    return RoundRecord(
        project_id=project_id, round=round_, chain_id=chain_id, contract=contract, code_version="test", seed=round_,
        base_model_cid=base_cid, model_cid=model_cid, model_digest="0x" + hashlib.sha256(model_bytes).hexdigest(),
        validation_cid=base_cid, rule="fedavg", filters={}, scorer="loo", hyperparams={}, inputs=list(inputs),
        verdicts=verdicts, scores=scores, cumulative_scores=cum_scores, rewards=rewards,
        cumulative_rewards=cumulative, allocation=allocation, rewards_root="0x" + tree.root.hex(),
        proofs={a: ["0x" + p.hex() for p in tree.proof(a)] for a in cumulative},
        metrics={"accuracy_after": min(0.99, 0.3 + 0.1 * round_)},
    )


def run_rounds(
    owner: MarketClient, store: Store, project_id: int, trainers: Sequence[LocalAccount], rounds: Sequence[int],
    mine_to: Callable[[int], None], *, rejected: dict[int, dict[str, str]] | None = None,
    base_cid: str, finalize: bool = True, previous: RoundRecord | None = None,
) -> list[RoundRecord]:
    """Commit, reveal and (if `finalize`) finalize each of `rounds` with MarketClient transactions."""
    agg = owner.with_account(dev_account(AGGREGATOR))
    chain_id = int(owner.w3.eth.chain_id)
    out: list[RoundRecord] = []
    for r in rounds:
        info = owner.project(project_id)
        if r > 0:
            prev = owner.round(project_id, r - 1)
            mine_to(prev.finalized_at + info.challenge_window + 1)
        salts = {}
        commit_blocks: dict[str, tuple[int, int]] = {}
        for t in trainers:
            data = f"update {project_id}/{r}/{t.address}".encode()
            cid, digest, salt = store.add(data), hashlib.sha256(data).digest(), os.urandom(32)
            salts[t.address] = (cid, digest, salt)
            rc = owner.with_account(t).commit(project_id, r, commitment_of(project_id, r, t.address, cid, digest, salt))
            commit_blocks[t.address] = (rc.block_number, 0)
        info = owner.project(project_id)
        mine_to(info.commit_deadline + 1)
        inputs = []
        for t in trainers:
            cid, digest, salt = salts[t.address]
            rc = owner.with_account(t).reveal(project_id, r, cid, digest, salt)
            inputs.append(UpdateInput(trainer=t.address, cid=cid, digest="0x" + digest.hex(),
                                      commit_block=commit_blocks[t.address][0], commit_log_index=0,
                                      reveal_block=rc.block_number))
        if not finalize:
            return out
        mine_to(info.reveal_deadline + 1)
        model = f"model {project_id}/{r}".encode()
        model_cid = store.add(model)
        previous = out[-1] if out else previous
        record = make_record(project_id, r, chain_id, owner.address, base_cid, model_cid, model, inputs,
                             (rejected or {}).get(r, {}), info.reward_per_round,
                             dict(previous.cumulative_rewards) if previous else {},
                             dict(previous.cumulative_scores) if previous else {})
        record_cid = store.add(record.to_bytes())
        agg.finalize_round(project_id, r, model_cid, record_cid, bytes.fromhex(record.rewards_root[2:]),
                           record.allocation)
        out.append(record)
    return out
