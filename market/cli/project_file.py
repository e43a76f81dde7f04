"""The project file an owner writes (TOML) and its translation to contract parameters.

```toml
[project]
rounds = 5
reward_per_round = "1 ether"     # or an integer of wei / token base units
token = "ETH"                    # or an ERC-20 address
stake = "0.1 ether"              # optional, per trainer
dispute_bond = "0.05 ether"      # optional
commit_window = 20               # blocks
reveal_window = 20
challenge_window = 10
aggregator = "dev:1"             # an address, or dev:N for anvil's dev account N (local chains only)
arbiter = "dev:2"

[model]                          # the model spec, published on IPFS; its CID goes on chain
architecture = "mnist_cnn"       # a registered name or package.module:factory
input_shape = [1, 28, 28]
num_classes = 10
dataset = "mnist5k"
seed = 0                         # initial weights drawn from this seed unless initial_weights_cid is given

[validation]                     # published with the spec; the aggregator enforces it
max_update_bytes = 50_000_000
max_norm = 100.0

[validation.defence]             # the aggregation policy, fixed in the spec (every key optional:
rule = "fedavg"                  #   the defaults shown; the spec always holds all of them). The
gate = true                      #   aggregator refuses a setting that contradicts it, the audit
min_trainers = 3                 #   fails a record that declares anything else, and creation
max_trainers = 100               #   refuses a defence that tolerates no attacker at some round
outlier_min_updates = 5          #   size in [min_trainers, max_trainers] (market.protocol.tolerance)
scorer = "auto"                  # exact_shapley up to 8 accepted updates, gtg_shapley above
server_lr = 1.0                  # round 0's; later rounds follow [validation.defence.adapt]
validation = "mnist5k:size=500,seed=0"   # a built-in split; default: the [model] dataset's, 500, seed 0
[validation.defence.filters]     # thresholds (market.protocol.policy.FilterThresholds lists them)
zero_rel_norm = 0.01
[validation.defence.adapt]       # plateau schedule (market.protocol.policy.AdaptSchedule)
patience = 2

[validation.data]                # optional: secret per-round validation parts (market.protocol.valsplit)
pool = "private_val.npz"         # arrays x and y (or a built-in name, for demos: it is public)
samples_per_round = 200          # default: the pool's size // rounds
key_file = "project.valkey.json" # written at creation (0600) unless it exists; give it to the aggregator

[recipients.aggregator]          # optional (but the default of `market demo`): updates are sealed for
role = "aggregator"              #   exactly these parties (market.protocol.envelope); one aggregator,
key = "account:agg"              #   any auditors, the arbiter; key: 64 hex digits of an X25519 public
[recipients.arbiter]             #   key, or account:NAME for the encryption key of keystore account
role = "arbiter"                 #   NAME (`Keystore.new_encryption_key`; its password is asked for)
key = "3b6a27bc..."

[model_readers.owner]            # optional: every round's model is sealed for the recipients and these
key = "account:owner"            #   readers (ProjectSpec.model_readers); list every admitted trainer's
[model_readers.alice]            #   key too, or it cannot train. key: as in [recipients]
key = "9f3c01de..."

[privacy]                        # optional: client-level DP every trainer applies (market.protocol.privacy.DpPolicy)
max_epsilon = 8.0
delta = 1e-5
noise_multiplier = 3.0
clip_norm = 1.0

[hyperparams]                    # round 0's training defaults (later rounds: from round records)
epochs = 1
lr = 0.05
```
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from market.chain import ETH, ProjectParams, checksum
from market.chain.accounts import dev_account
from market.cli.config import check_keys, parse_amount, read_toml
from market.errors import ConfigError
from market.files import atomic_write
from market.protocol.documents import ProjectSpec, Recipient, ValidationPolicy
from market.protocol.policy import AdaptSchedule, FilterThresholds, default_validation
from market.protocol.privacy import DpPolicy
from market.protocol.tolerance import DefencePolicy, check_defence
from market.protocol.valsplit import ValidationCommitment, ValSplit, load_pool


def resolve_address(value: str, what: str) -> str:
    """An address, or `dev:N` for anvil's dev account N."""
    if isinstance(value, str) and value.startswith("dev:"):
        try:
            return str(dev_account(int(value[4:])).address)
        except ValueError:
            raise ConfigError(f"{what}: {value!r} is not dev:N with N a number") from None
    return checksum(value, what)


class ProjectSection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rounds: int = Field(gt=0, le=2**32 - 1)
    reward_per_round: int | str
    token: str = "ETH"
    #: None: the protocol minimum (market.protocol.allocation.minimums), which covers one commit deposit
    stake: int | str | None = None
    dispute_bond: int | str | None = None
    aggregator_bond: int | str | None = None
    commit_deposit: int | str | None = None
    commit_window: int = Field(gt=0, le=2**32 - 1)
    reveal_window: int = Field(gt=0, le=2**32 - 1)
    challenge_window: int = Field(gt=0, le=2**32 - 1)
    #: None: the protocol defaults (market.protocol.allocation.windows)
    finalize_window: int | None = Field(default=None, gt=0, le=2**32 - 1)
    rule_window: int | None = Field(default=None, gt=0, le=2**32 - 1)
    claim_window: int | None = Field(default=None, gt=0, le=2**32 - 1)
    aggregator: str
    arbiter: str

    @field_validator("challenge_window")
    @classmethod
    def _fits(cls, v: int, info: Any) -> int:
        data = info.data
        if "commit_window" in data and "reveal_window" in data and v > data["commit_window"] + data["reveal_window"]:
            raise ValueError("must be <= commit_window + reveal_window (a round cannot close before the last one settles)")
        return v


class ValidationData(BaseModel):
    """`[validation.data]`: the private pool dealt into one secret validation part per round."""

    model_config = ConfigDict(extra="forbid")

    pool: str
    samples_per_round: int | None = Field(default=None, ge=1)
    #: Where the split's key goes (relative to the project file); None: <project file>.valkey.json.
    key_file: str | None = None


class RecipientEntry(BaseModel):
    """One `[recipients.NAME]` table: who an encrypted update is wrapped for."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["aggregator", "auditor", "arbiter"]
    #: 64 hex digits (an X25519 public key) or `account:NAME` (that keystore account's encryption key)
    key: str


class ModelReaderEntry(BaseModel):
    """One `[model_readers.NAME]` table: who a sealed global model is wrapped for, next to the recipients."""

    model_config = ConfigDict(extra="forbid")

    #: as in `RecipientEntry.key`
    key: str


#: `password(account_name)`: the keystore password of an account named by `account:NAME`.
PasswordFor = Callable[[str], str]


def resolve_recipient_key(value: str, what: str, keystore: Path | None, password: PasswordFor | None) -> str:
    """The public key hex a `key = ...` entry names: itself, or a keystore account's encryption key."""
    if not value.startswith("account:"):
        key = value.lower().removeprefix("0x")
        if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
            raise ConfigError(f"{what}: {value[:20]!r} is not 64 hex digits nor account:NAME; give an X25519 public key")
        return key
    name = value.removeprefix("account:")
    if keystore is None or password is None:
        raise ConfigError(f"{what}: {value!r} needs the local keystore: create the project with `market project create`")
    from market.chain.accounts import Keystore
    from market.protocol.envelope import public_key_hex

    return public_key_hex(Keystore(keystore).load_encryption_key(name, password(name)))


class ProjectFile(BaseModel):
    """A parsed, validated project file."""

    model_config = ConfigDict(extra="forbid")

    project: ProjectSection
    model: dict[str, Any] = Field(default_factory=dict)
    validation: dict[str, Any] = Field(default_factory=dict)
    hyperparams: dict[str, Any] = Field(default_factory=dict)
    recipients: dict[str, RecipientEntry] = Field(default_factory=dict)
    model_readers: dict[str, ModelReaderEntry] = Field(default_factory=dict)
    privacy: DpPolicy | None = None
    spec_cid: str | None = None
    _path: Path | None = PrivateAttr(default=None)

    def policy(self) -> tuple[ValidationPolicy, ValidationData | None]:
        """The `[validation]` policy and the `[validation.data]` section (None: public validation).
        The policy always holds the aggregation policy (`defence`): the file's, else the defaults."""
        table = dict(self.validation)
        data = table.pop("data", None)
        defence = table.get("defence")
        if isinstance(defence, dict):
            check_keys(defence, DefencePolicy.model_fields, "[validation.defence]")
            for key, model in (("filters", FilterThresholds), ("adapt", AdaptSchedule)):
                if isinstance(defence.get(key), dict):
                    hint = {"validation_gate": "gate", "outlier_min_updates": "outlier_min_updates"}
                    for name in defence[key]:
                        if name in hint:
                            raise ConfigError(f"[validation.defence.{key}]: {name} is set in [validation.defence]"
                                              f" itself: write {hint[name]} = ... there")
                    check_keys(defence[key], model.model_fields, f"[validation.defence.{key}]")
        try:
            policy = ValidationPolicy.model_validate(table)
            section = ValidationData.model_validate(data) if data else None
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"[validation]: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        defence = policy.defence or DefencePolicy()
        if section is None and defence.validation is None:
            # written out, so the spec names its set even if the default ever changes
            defence = defence.model_copy(update={"validation": default_validation(str(self.model.get("dataset", "")))})
        return policy.model_copy(update={"defence": defence}), section

    def check_defence(self, validation_samples: int | None = None) -> None:
        """Refuse (ConfigError) an aggregation policy naming an unknown rule, scorer or validation set,
        a public validation set the audit could not rebuild, or a defence that tolerates no attacker
        at some allowed round size."""
        policy, data = self.policy()
        defence = policy.defence
        assert defence is not None
        if validation_samples is None and data is not None:
            validation_samples = data.samples_per_round
        if data is not None and defence.validation is not None:
            raise ConfigError(f"[validation.defence] validation = {defence.validation!r} and [validation.data] both name"
                              " the validation data: keep [validation.data] (secret parts) and drop the other")
        check_defence(defence, validation_samples=validation_samples)

    def key_path(self, data: ValidationData) -> Path:
        base = self._path.parent if self._path is not None else Path.cwd()
        if data.key_file is not None:
            return base / data.key_file
        stem = self._path.stem if self._path is not None else "project"
        return base / f"{stem}.valkey.json"

    def secret_parts(self, data: ValidationData) -> ValidationCommitment:
        """The commitment to one secret validation part per round; the key file is written (0600)
        unless it exists, in which case its split is reused (creating again gives the same root)."""
        path = self.key_path(data)
        if path.is_file():
            split, pool = ValSplit.from_key_document(path.read_bytes(), str(path))
            if pool != data.pool or split.parts != self.project.rounds:
                raise ConfigError(f"{path} splits {pool!r} into {split.parts} parts, the project file asks for"
                                  f" {data.pool!r} over {self.project.rounds} rounds; move the old key file away")
            return split.commitment()
        x, y = load_pool(data.pool)
        split = ValSplit.make(x, y, self.project.rounds, data.samples_per_round)
        try:
            atomic_write(path, split.key_document(data.pool), mode=0o600)
        except OSError as exc:
            raise ConfigError(f"cannot write the validation key file {path} ({exc.strerror}); choose another key_file")
        return split.commitment()

    def recipient_keys(self, keystore: Path | None = None, password: PasswordFor | None = None) -> dict[str, Recipient]:
        """`[recipients]` with every `account:NAME` resolved from `keystore`."""
        return {
            name: Recipient(role=entry.role, public_key=resolve_recipient_key(entry.key, f"[recipients.{name}].key", keystore, password))
            for name, entry in self.recipients.items()
        }

    def model_reader_keys(self, keystore: Path | None = None, password: PasswordFor | None = None) -> dict[str, str]:
        """`[model_readers]` with every `account:NAME` resolved from `keystore`."""
        return {
            name: resolve_recipient_key(entry.key, f"[model_readers.{name}].key", keystore, password)
            for name, entry in self.model_readers.items()
        }

    def spec(self, store: Any, *, keystore: Path | None = None, password: PasswordFor | None = None) -> ProjectSpec:
        """The project spec; initial weights drawn from `[model].seed` and uploaded when the file
        names no `initial_weights_cid`. Weights files of initial models carry project id 0.
        `keystore` and `password` resolve `account:NAME` recipient keys."""
        from market.models import ModelSpec, init_model
        from market.protocol.codec import ModelHeader, encode_model

        table = dict(self.model)
        seed = int(table.pop("seed", 0))
        try:
            model = ModelSpec.model_validate(table)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"[model]: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        policy, data = self.policy()
        if data is None and policy.defence is not None and policy.defence.validation is None:
            raise ConfigError(f"[model] dataset {model.dataset!r} has no built-in validation split, so the audit could not"
                              " rebuild a public one: commit secret validation parts with [validation.data]"
                              ' (pool = "file.npz"), or name a built-in split in [validation.defence] validation')
        commitment = self.secret_parts(data) if data is not None else None
        self.check_defence(commitment.samples_per_part if commitment is not None else None)
        if model.initial_weights_cid is None:
            net = init_model(model, seed)
            blob = encode_model(net.state_dict(), ModelHeader(project_id=0, round=0, architecture=model.architecture))
            model = model.model_copy(update={"initial_weights_cid": store.add(blob)})
        recipients = self.recipient_keys(keystore, password)
        readers = self.model_reader_keys(keystore, password)
        try:
            return ProjectSpec(model=model, validation=policy, hyperparams=self.hyperparams, validation_data=commitment,
                               recipients=recipients, model_readers=readers, privacy=self.privacy)
        except ValidationError as exc:
            msg = exc.errors()[0]["msg"]
            # both tables meet in one spec validator: name the one the message is about
            where = "model_readers" if re.search(r"model[ _]reader", msg) else "recipients"
            raise ConfigError(f"[{where}]: {msg}") from None

    @classmethod
    def load(cls, path: Path) -> ProjectFile:
        data = read_toml(path)
        try:
            pf = cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None
        pf._path = Path(path)
        try:
            pf.check_defence()
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return pf

    def params(self, spec_cid: str, decimals: int = 18) -> ProjectParams:
        p = self.project
        token = ETH if p.token.upper() == "ETH" else checksum(p.token, "token")
        return ProjectParams(
            aggregator=resolve_address(p.aggregator, "aggregator"),
            arbiter=resolve_address(p.arbiter, "arbiter"),
            num_rounds=p.rounds,
            reward_per_round=parse_amount(p.reward_per_round, "reward_per_round", decimals),
            commit_window=p.commit_window,
            reveal_window=p.reveal_window,
            challenge_window=p.challenge_window,
            spec_cid=spec_cid,
            token=token,
            stake=_optional_amount(p.stake, "stake", decimals),
            dispute_bond=_optional_amount(p.dispute_bond, "dispute_bond", decimals),
            aggregator_bond=_optional_amount(p.aggregator_bond, "aggregator_bond", decimals),
            commit_deposit=_optional_amount(p.commit_deposit, "commit_deposit", decimals),
            finalize_window=p.finalize_window,
            rule_window=p.rule_window,
            claim_window=p.claim_window,
        )


def _optional_amount(value: int | str | None, what: str, decimals: int) -> int | None:
    return None if value is None else parse_amount(value, what, decimals)
