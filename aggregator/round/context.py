"""What a round is built on, read from the chain alone (and the documents the chain points at).

`load_context` reads the project, its spec, the round's commits and reveals (in commit order),
the reveal-deadline block (the round's seed), the previous round's record (base model,
hyper-parameters, adaptation state), the previous round's reveals (the free-rider reference) and
the cumulative amounts of the latest round that was not voided.

The one thing not read from the chain is who is reading: the private keys a recipient of the
project's encrypted updates opens them with (`decryption_keys`, none for a keyless reader).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from market.chain import MarketClient, RoundStatus
from market.errors import ChainError
from market.protocol.documents import ProjectSpec, UpdateInput, round_seed
from market.protocol.reading import ProtocolError, load_record, load_spec, paying_record

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = ["ReadStore", "RoundContext", "load_context"]


class ReadStore(Protocol):
    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes: ...


@dataclass(frozen=True)
class RoundContext:
    """What round `round` of a project is built on, read from the chain alone."""

    project_id: int
    round: int
    chain_id: int
    contract: str
    spec: ProjectSpec
    base_model_cid: str
    base_hyperparams: dict[str, Any]
    #: The previous round's record `aggregation` (adaptation state); {} for round 0.
    previous_aggregation: dict[str, Any]
    reveal_deadline: int
    seed: int
    #: Revealed updates in commit order (block, log index).
    inputs: tuple[UpdateInput, ...]
    #: Round r-1's revealed updates (free-rider reference) and the model they were built on.
    previous_inputs: tuple[UpdateInput, ...]
    previous_base_model_cid: str | None
    #: Cumulative amounts and scores of the latest round before this one that was not voided.
    cumulative_rewards: dict[str, int]
    cumulative_scores: dict[str, float]
    #: What the contract lets this round allocate (all of it goes out if anyone earns a share).
    available: int
    #: The reader's keys for the spec's encrypted updates (current key first, then retired ones);
    #: empty: the reader holds none (a keyless audit, or a plaintext project).
    decryption_keys: tuple[X25519PrivateKey, ...] = field(default=(), repr=False, compare=False)


def _opened_at(client: MarketClient, project_id: int, round_: int, finalized: Mapping[int, Any]) -> int:
    if round_ == 0:
        return client.project_created(project_id).block_number
    prev = finalized.get(round_ - 1)
    if prev is None:
        raise ProtocolError(f"round {round_ - 1} of project {project_id} is not finalized: round {round_} has not opened")
    return int(prev.block_number)


def _inputs(client: MarketClient, project_id: int, round_: int, opened: int) -> tuple[UpdateInput, ...]:
    """Revealed updates with their commit position, sorted by commit order; the round's events are
    read in one query from the block it opened at (nothing of it is older)."""
    commits_, reveals = client.submissions(project_id, round_, from_block=opened)
    commits = {c.trainer.lower(): c for c in commits_}
    out = []
    for rv in reveals:
        c = commits.get(rv.trainer.lower())
        if c is None:  # the contract only accepts reveals of commitments: never happens
            raise ProtocolError(f"reveal by {rv.trainer} in round {round_} has no UpdateCommitted event")
        out.append(
            UpdateInput(
                trainer=rv.trainer,
                cid=rv.cid,
                digest="0x" + rv.digest.hex(),
                commit_block=c.block_number,
                commit_log_index=c.log_index,
                reveal_block=rv.block_number,
            )
        )
    out.sort(key=lambda u: (u.commit_block, u.commit_log_index, u.trainer.lower()))
    return tuple(out)


def _wait_buried(client: MarketClient, block: int, timeout: float, poll_interval: float) -> None:
    """Return once `block` is `client.confirmations` deep; ChainError after `timeout` seconds."""
    give_up = time.monotonic() + timeout
    while (head := client.block_number) < block + client.confirmations:
        if time.monotonic() > give_up:
            raise ChainError(
                f"block {block} (a reveal deadline) is not {client.confirmations} blocks deep after {timeout:.0f} s"
                f" (the head is {head}): is the chain producing blocks? lower the profile's confirmations otherwise"
            )
        time.sleep(poll_interval)


def load_context(
    client: MarketClient,
    store: ReadStore,
    project_id: int,
    round_: int,
    available: int,
    *,
    spec: ProjectSpec | None = None,
    decryption_keys: Sequence[X25519PrivateKey] = (),
    confirmation_timeout: float = 600.0,
    poll_interval: float = 1.0,
) -> RoundContext:
    """The chain's view of round `round_`; `available` is what the contract lets it allocate
    (the service reads it once and journals it; an auditor uses the chain's allocation);
    `decryption_keys` open the spec's encrypted updates at fetch.

    On a chain read with `client.confirmations` > 0, the round is read once its reveal deadline
    is buried that deep (waiting up to `confirmation_timeout` seconds, polling every
    `poll_interval`): a reveal in a block that a reorganisation could still drop never enters a
    record. Nothing waits on a local chain (0 confirmations)."""
    info = client.project(project_id)
    spec = spec or load_spec(client, store, project_id)
    finalized = {f.round: f for f in client.finalized(project_id)}
    opened = _opened_at(client, project_id, round_, finalized)
    deadline = opened + info.commit_window + info.reveal_window
    if client.confirmations:
        _wait_buried(client, deadline, confirmation_timeout, poll_interval)
    block = client.w3.eth.get_block(deadline)
    seed = round_seed(bytes(block["hash"]), project_id, round_)

    if round_ == 0:
        if not spec.model.initial_weights_cid:
            raise ProtocolError(
                f"project {project_id}'s spec names no initial weights CID: the owner must publish them"
            )
        base_cid, hyper, prev_agg = spec.model.initial_weights_cid, dict(spec.hyperparams), {}
        prev_base = None
        prev_inputs: tuple[UpdateInput, ...] = ()
    else:
        prev = finalized[round_ - 1]
        prev_record = load_record(store, prev.record_cid)
        base_cid, hyper, prev_agg = prev.model_cid, dict(prev_record.hyperparams), dict(prev_record.aggregation)
        prev_base = prev_record.base_model_cid
        prev_inputs = _inputs(client, project_id, round_ - 1, _opened_at(client, project_id, round_ - 1, finalized))

    cum_rewards: dict[str, int] = {}
    cum_scores: dict[str, float] = {}
    for r in range(round_ - 1, -1, -1):
        chain_round = client.round(project_id, r)
        if chain_round.status == RoundStatus.VOIDED:
            continue
        # The amounts build on what round r pays by: its correction if an upheld dispute replaced
        # its root (else the next round would take the correction back). The previous record was
        # just read (a thousand trainers' proofs: parse it once).
        if bytes.fromhex(chain_round.rewards_root.removeprefix("0x")) == finalized[r].rewards_root:
            rec = prev_record if r == round_ - 1 else load_record(store, finalized[r].record_cid)
        else:
            rec = paying_record(client, store, finalized[r])
        cum_rewards, cum_scores = dict(rec.cumulative_rewards), dict(rec.cumulative_scores)
        break

    return RoundContext(
        project_id=project_id,
        round=round_,
        chain_id=int(client.w3.eth.chain_id),
        contract=client.address,
        spec=spec,
        base_model_cid=base_cid,
        base_hyperparams=hyper,
        previous_aggregation=prev_agg,
        reveal_deadline=deadline,
        seed=seed,
        inputs=_inputs(client, project_id, round_, opened),
        previous_inputs=prev_inputs,
        previous_base_model_cid=prev_base,
        cumulative_rewards=cum_rewards,
        cumulative_scores=cum_scores,
        available=int(available),
        decryption_keys=tuple(decryption_keys),
    )
