"""The documents the protocol publishes on IPFS, shared by aggregator, trainers and auditors:
the project spec (its CID is on chain at creation) and the round record (its CID is on chain at
each finalize).

Everything an auditor needs to replay a round from chain + IPFS alone is in the record or derivable
from chain data: the inputs (from reveal events), the seed (from a block hash), the rule, filter
and scorer settings, the code version, and the validation set's CID.
"""

from __future__ import annotations

import json
from typing import Any

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from market.errors import StorageError
from market.protocol.model_spec import ModelSpec

RECORD_VERSION = 1


class ValidationPolicy(BaseModel):
    """What the aggregator accepts from trainers; published with the spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_update_bytes: int = Field(default=50_000_000, gt=0)
    max_norm: float = Field(default=1_000.0, gt=0)
    max_header_bytes: int = Field(default=1_000_000, gt=0)
    #: Sample counts claimed by trainers are capped at this in weights (never trusted blindly).
    max_claimed_samples: int = Field(default=100_000, gt=0)


class ProjectSpec(BaseModel):
    """The document behind a project's `specCID`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = RECORD_VERSION
    model: ModelSpec
    validation: ValidationPolicy = ValidationPolicy()
    #: Hyper-parameters for round 0 (later rounds take them from the previous round record).
    hyperparams: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> ProjectSpec:
        return _parse(cls, data, "project spec")


class UpdateInput(BaseModel):
    """One revealed update, as the chain recorded it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer: str
    cid: str
    digest: str  # 0x-hex sha256 of the update bytes
    commit_block: int
    commit_log_index: int
    reveal_block: int


class Verdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer: str
    accepted: bool
    reason: str | None = None  # a stable code: too_large, non_finite, outlier, copy_of:0x..., ...
    detail: str = ""
    claimed_samples: int | None = None


class RoundRecord(BaseModel):
    """The document behind a round's `recordCID`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = RECORD_VERSION
    project_id: int
    round: int
    chain_id: int
    contract: str
    code_version: str
    seed: int
    base_model_cid: str
    model_cid: str
    model_digest: str  # 0x-hex sha256 of the model bytes
    validation_cid: str
    rule: str
    filters: dict[str, Any]
    scorer: str
    hyperparams: dict[str, Any]  # used by the next round's trainers
    inputs: list[UpdateInput]
    verdicts: list[Verdict]
    scores: dict[str, float]
    cumulative_scores: dict[str, float]
    rewards: dict[str, int]  # this round's increments
    cumulative_rewards: dict[str, int]
    allocation: int
    rewards_root: str  # 0x-hex
    proofs: dict[str, list[str]]
    metrics: dict[str, float]
    #: The aggregator's own settings for this round, beyond rule/filters/scorer: the server
    #: learning rate applied, the adaptation policy and its state in and out, the thread count.
    #: `hyperparams` stays for trainers only (they refuse unknown keys). Optional: a record
    #: without it is still valid.
    aggregation: dict[str, Any] = Field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> RoundRecord:
        return _parse(cls, data, "round record")


def canonical_json(obj: Any) -> bytes:
    """Deterministic JSON bytes (sorted keys, no spaces): the same record always has the same CID."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _parse(cls: type[Any], data: bytes, what: str) -> Any:
    try:
        return cls.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise StorageError(f"malformed {what}: {where}: {first['msg']}") from None


def round_seed(block_hash: bytes, project_id: int, round_: int) -> int:
    """The round's seed: derived from the hash of the reveal-deadline block, which no trainer and
    no aggregator controls when updates are committed, and which every auditor can read."""
    return int.from_bytes(keccak(block_hash + project_id.to_bytes(32, "big") + round_.to_bytes(32, "big"))[:8], "big")
