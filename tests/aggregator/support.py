"""Helpers shared by the aggregator tests: honest updates from real training on `digits`, a
project on a chain with trainers who commit and reveal directly with MarketClient + codec, and
ports for a real js-ipfs node. Not a test module (no tests here)."""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from eth_account.signers.local import LocalAccount

from devnet.anvil import rpc_call
from market.chain import MarketClient, ProjectParams, commitment_of
from market.chain.accounts import dev_account
from market.models import ModelSpec, init_model
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update
from market.protocol.documents import ProjectSpec, ValidationPolicy

ETHER = 10**18
OWNER, AGGREGATOR, ARBITER = 0, 1, 2
MODEL = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits")
VALIDATION = "digits:size=300,seed=1"


@functools.cache
def initial_state() -> dict[str, torch.Tensor]:
    return init_model(MODEL, 0).state_dict()


def initial_model_bytes(project_id: int = 0) -> bytes:
    return encode_model(initial_state(), ModelHeader(project_id, 0, MODEL.architecture))


@functools.cache
def honest_deltas(n: int = 6, steps: int = 5) -> tuple[dict[str, torch.Tensor], ...]:
    """n honest deltas: a few SGD steps of real training from the initial weights on disjoint
    250-sample slices of scikit-learn's digits."""
    from trainer.data import load_builtin
    from trainer.training import TrainConfig, train_local

    ds = load_builtin("digits")
    out = []
    for i in range(n):
        part = ds.subset(range(i * 250, (i + 1) * 250))
        res = train_local(MODEL, initial_state(), part, TrainConfig(epochs=1, max_batches=steps, lr=0.1, seed=i), num_threads=1)
        out.append(res.delta)
    return tuple(out)


def encode(delta: Mapping[str, torch.Tensor], project_id: int, round_: int, base_cid: str, trainer: str,
           samples: int = 250, scale: float = 1.0) -> bytes:
    tensors = {k: (v * scale).contiguous() for k, v in delta.items()}
    return encode_update(tensors, UpdateHeader(project_id, round_, base_cid, trainer, samples))


def zero_delta() -> dict[str, torch.Tensor]:
    return {k: torch.zeros_like(v) for k, v in initial_state().items()}


def make_spec(base_cid: str, max_norm: float = 100.0) -> ProjectSpec:
    return ProjectSpec(
        model=MODEL.model_copy(update={"initial_weights_cid": base_cid}),
        validation=ValidationPolicy(max_norm=max_norm),
    )


@dataclass
class ChainProject:
    """A project on a real anvil node, its trainers and a content store."""

    owner: MarketClient
    anvil_url: str
    store: object
    project_id: int
    spec: ProjectSpec
    spec_cid: str
    base_cid: str
    trainers: list[LocalAccount]
    params: ProjectParams
    salts: dict[tuple[int, str], tuple[str, bytes, bytes]] = field(default_factory=dict)

    @property
    def w3(self):  # type: ignore[no-untyped-def]
        return self.owner.w3

    def client_of(self, acct: LocalAccount) -> MarketClient:
        return self.owner.with_account(acct)

    def mine_to(self, block: int) -> None:
        gap = block - int(self.w3.eth.block_number)
        if gap > 0:
            rpc_call(self.anvil_url, "anvil_mine", [hex(gap)], timeout=60.0)

    def submit(self, round_: int, updates: Mapping[str, bytes], *, reveal: Sequence[str] | None = None,
               mine_past_reveal: bool = True) -> None:
        """Every trainer in `updates` (address -> bytes) uploads, commits (in the mapping's
        order), then after the commit deadline reveals; the chain is mined to the reveal deadline."""
        by_addr = {a.address: a for a in self.trainers}
        for addr, data in updates.items():
            cid = self.store.add(data)  # type: ignore[attr-defined]
            digest = hashlib.sha256(data).digest()
            salt = os.urandom(32)
            self.salts[(round_, addr)] = (cid, digest, salt)
            c = self.client_of(by_addr[addr])
            c.commit(self.project_id, round_, commitment_of(self.project_id, round_, addr, cid, digest, salt))
        info = self.owner.project(self.project_id)
        self.mine_to(info.commit_deadline + 1)
        for addr in reveal if reveal is not None else list(updates):
            cid, digest, salt = self.salts[(round_, addr)]
            self.client_of(by_addr[addr]).reveal(self.project_id, round_, cid, digest, salt)
        if mine_past_reveal:
            self.mine_to(info.reveal_deadline + 1)

    def settle_previous(self) -> None:
        """Mine past the block after which the open round's predecessor is settled (its challenge
        window, and the ruling deadline of any dispute opened in it)."""
        info = self.owner.project(self.project_id)
        if info.current_round > 0:
            self.mine_to(self.owner.settles_after(self.project_id, info.current_round - 1) + 1)


def create_project(
    owner: MarketClient,
    anvil_url: str,
    store: object,
    *,
    trainers: int = 4,
    rounds: int = 2,
    reward: int = ETHER,
    commit_window: int = 30,
    reveal_window: int = 30,
    challenge_window: int = 3,
) -> ChainProject:
    """A project whose aggregator is dev account 1, with `trainers` registered trainers
    (dev accounts 3, 4, ...)."""
    base_cid = store.add(initial_model_bytes())  # type: ignore[attr-defined]
    spec = make_spec(base_cid)
    spec_cid = store.add(spec.to_bytes())  # type: ignore[attr-defined]
    params = ProjectParams(
        aggregator=dev_account(AGGREGATOR).address,
        arbiter=dev_account(ARBITER).address,
        num_rounds=rounds,
        reward_per_round=reward,
        commit_window=commit_window,
        reveal_window=reveal_window,
        challenge_window=challenge_window,
        spec_cid=spec_cid,
    )
    pid, _ = owner.create_project(params)
    accts = [dev_account(3 + i) for i in range(trainers)]
    for a in accts:
        owner.with_account(a).register(pid)
    return ChainProject(owner, anvil_url, store, pid, spec, spec_cid, base_cid, accts, params)


def snapshot(url: str) -> str:
    return str(rpc_call(url, "evm_snapshot"))


def revert(url: str, snap: str) -> None:
    assert rpc_call(url, "evm_revert", [snap]) is True
