"""The documents the protocol publishes on IPFS, shared by aggregator, trainers and auditors:
the project spec (its CID is on chain at creation) and the round record (its CID is on chain at
each finalize).

Everything an auditor needs to replay a round from chain + IPFS alone is in the record or derivable
from chain data: the inputs (from reveal events), the seed (from a block hash), the rule, filter
and scorer settings, the code version, and the validation set's CID.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from eth_utils import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from market.errors import StorageError
from market.protocol.evaluations import CROSS_MACHINE_VERSION, RecordedEvaluation
from market.protocol.model_spec import ModelSpec
from market.protocol.privacy import DpPolicy
from market.protocol.tolerance import DefencePolicy
from market.protocol.valsplit import ValidationCommitment

RECORD_VERSION = 1


class ValidationPolicy(BaseModel):
    """What the aggregator accepts from trainers; published with the spec."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_update_bytes: int = Field(default=50_000_000, gt=0)
    max_norm: float = Field(default=1_000.0, gt=0)
    max_header_bytes: int = Field(default=1_000_000, gt=0)
    #: Sample counts claimed by trainers are capped at this in weights (never trusted blindly).
    max_claimed_samples: int = Field(default=100_000, gt=0)
    #: The defence the project requires (rule, validation gate, round sizes), checked at creation
    #: by `market.protocol.tolerance.check_defence`. None: the aggregator's default.
    defence: DefencePolicy | None = None


_RECIPIENT_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_PUBLIC_KEY = re.compile(r"^[0-9a-f]{64}$")
#: Must equal market.protocol.envelope.MAX_RECIPIENTS (checked by a test; kept apart so reading a
#: spec does not import the cryptography package).
MAX_RECIPIENTS = 16


class Recipient(BaseModel):
    """One party an encrypted update is wrapped for: its role and X25519 public key (hex)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["aggregator", "auditor", "arbiter"]
    public_key: str

    @field_validator("public_key")
    @classmethod
    def _hex_key(cls, value: str) -> str:
        if not _PUBLIC_KEY.match(value):
            raise ValueError("public_key must be 64 lowercase hex digits (an X25519 public key)")
        return value


class ProjectSpec(BaseModel):
    """The document behind a project's `specCID`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = RECORD_VERSION
    model: ModelSpec
    validation: ValidationPolicy = ValidationPolicy()
    #: Hyper-parameters for round 0 (later rounds take them from the previous round record).
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    #: Who encrypted updates are wrapped for (name -> role and public key), bound on chain with the
    #: spec CID. Empty: updates travel as plaintext (projects created before encryption).
    recipients: dict[str, Recipient] = Field(default_factory=dict)
    #: Client-level differential privacy every trainer applies (None: no DP required).
    privacy: DpPolicy | None = None
    #: The owner's commitment to secret per-round validation parts (`market.protocol.valsplit`).
    #: None: the aggregator's validation set is public (projects created before secret parts).
    validation_data: ValidationCommitment | None = None
    #: Who may read the global models the aggregator publishes, beside `recipients` (name -> X25519
    #: public key hex): the owner, and every trainer the owner admits (a trainer trains on each
    #: round's model, so it must read it). Non-empty: every published model is an envelope sealed
    #: for `recipients` and these (`market.protocol.envelope.seal_model`); empty: models are public.
    model_readers: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_recipients(self) -> ProjectSpec:
        if not self.recipients:
            return self
        if len(self.recipients) > MAX_RECIPIENTS:
            raise ValueError(f"at most {MAX_RECIPIENTS} recipients, got {len(self.recipients)}")
        bad = [name for name in self.recipients if not _RECIPIENT_NAME.match(name)]
        if bad:
            raise ValueError(f"recipient name {bad[0][:70]!r} is not 1-64 of [A-Za-z0-9_.:-]")
        if sum(r.role == "aggregator" for r in self.recipients.values()) != 1:
            raise ValueError("recipients must name exactly one aggregator")
        if len({r.public_key for r in self.recipients.values()}) != len(self.recipients):
            raise ValueError("two recipients share a public key: each needs its own")
        return self

    @model_validator(mode="after")
    def _check_model_readers(self) -> ProjectSpec:
        if not self.model_readers:
            return self
        if not self.recipients:
            raise ValueError("model_readers need recipients: name the aggregator's key, which seals the models")
        everyone = self.model_reader_keys()
        if len(everyone) != len(self.recipients) + len(self.model_readers):
            raise ValueError("a model reader has the name of a recipient: give it its own name")
        if len(everyone) > MAX_RECIPIENTS:
            raise ValueError(f"recipients and model_readers together are at most {MAX_RECIPIENTS}, got {len(everyone)}")
        for name, key in self.model_readers.items():
            if not _RECIPIENT_NAME.match(name):
                raise ValueError(f"model reader name {name[:70]!r} is not 1-64 of [A-Za-z0-9_.:-]")
            if not _PUBLIC_KEY.match(key):
                raise ValueError(f"model reader {name!r}: the key must be 64 lowercase hex digits (X25519 public key)")
        if len(set(everyone.values())) != len(everyone):
            raise ValueError("a model reader shares a public key with another reader or recipient: each needs its own")
        return self

    @property
    def encrypts_models(self) -> bool:
        """Whether the global models the aggregator publishes are sealed envelopes."""
        return bool(self.model_readers)

    def model_reader_keys(self) -> dict[str, str]:
        """name -> public key hex of everyone a sealed model is wrapped for: the recipients (the
        aggregator reads the base model, auditors and the arbiter replay lineage) and the readers."""
        return {**self.recipient_keys(), **self.model_readers} if self.model_readers else {}

    @property
    def encrypted(self) -> bool:
        """Whether updates to this project must be sealed envelopes."""
        return bool(self.recipients)

    def recipient_keys(self) -> dict[str, str]:
        """name -> public key hex: what `envelope.seal` and `envelope.require_recipients` take."""
        return {name: r.public_key for name, r in self.recipients.items()}

    def to_bytes(self) -> bytes:
        # Fields added after wave 1 are left out while unset, so a spec without them keeps its bytes
        # (and CID) across versions.
        dumped = self.model_dump(mode="json")
        if not self.recipients:
            del dumped["recipients"]
        if self.privacy is None:
            del dumped["privacy"]
        if self.validation_data is None:
            del dumped["validation_data"]
        if not self.model_readers:
            del dumped["model_readers"]
        if self.validation.defence is None:
            del dumped["validation"]["defence"]
        return canonical_json(dumped)

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


class RecordedVerdict(BaseModel):
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
    verdicts: list[RecordedVerdict]
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
    #: Every validation evaluation that fed a filter, a gate or a score, with the value used
    #: (`market.protocol.evaluations`); from record version CROSS_MACHINE_VERSION on. Left out
    #: of the bytes while empty, so an older record keeps its bytes (and CID).
    evaluations: list[RecordedEvaluation] = Field(default_factory=list)

    @property
    def predates_cross_machine_audits(self) -> bool:
        """Whether this record's format predates bit-exact models and recorded evaluations."""
        return self.version < CROSS_MACHINE_VERSION

    def to_bytes(self) -> bytes:
        dumped = self.model_dump(mode="json")
        if not self.evaluations:
            del dumped["evaluations"]
        for e in dumped.get("evaluations", ()):
            if e["baseline"] is None:
                del e["baseline"]
        return canonical_json(dumped)

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
