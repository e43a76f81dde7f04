"""Making one round's update: fetch and check the global model, load the trainer's data, train,
apply the scripted behaviour (its context filled by `trainer.context`), encode and self-check the
update, and keep it in the state directory. Submitting it is `trainer.participant`'s job.

Everything here raises from the error trees (`trainer.errors`, `market.errors`); the CLI turns
them into one line and an exit code.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from market.chain import MarketClient
from market.errors import ConfigError as MarketConfigError
from market.errors import UpdateRejected
from market.files import atomic_write
from market.models import build_model, tensor_spec
from market.protocol.codec import (
    DecodeLimits,
    UpdateHeader,
    decode_model,
    decode_update,
    encode_update,
    parse_update_header,
    read_layout,
)
from market.protocol.documents import ProjectSpec
from market.protocol.privacy import DpPolicy, privatize_update
from market.protocol.reading import RoundBase, load_record, round_base
from market.protocol.validation import update_spec, validate_update
from market.storage import cid_of, parse_cid, raw_cid, same_multihash
from trainer.behaviours import parse_behaviour
from trainer.config import TrainerSettings, parse_shard
from trainer.context import ContextSources, fill_context
from trainer.data import BUILTIN_DATASETS, Dataset, load_dataset
from trainer.errors import ConfigError, InvalidUpdate, ModelSpecError, RoundMismatch
from trainer.participant import effective_privacy, own_privacy
from trainer.partition import parse_partition, partition, with_label_noise
from trainer.training import TrainConfig, TrainProgress, train_local

__all__ = [
    "GlobalModel",
    "TrainedUpdate",
    "check_update",
    "decode_own_update",
    "fetch_global_model",
    "load_trainer_data",
    "model_template",
    "read_update_file",
    "train_update",
    "update_path",
    "write_update_file",
]

#: The largest global model file a trainer downloads.
MODEL_MAX_BYTES = 1 << 30


# --------------------------------------------------------------------------- the global model


@dataclass(frozen=True)
class GlobalModel:
    """The weights round `round` trains from, checked against the project's spec."""

    round: int
    cid: str
    state: dict[str, torch.Tensor]
    hyperparams: dict[str, Any]
    sha256: str


def model_template(spec: ProjectSpec, *, allow_model_code: bool) -> torch.nn.Module:
    """The spec's architecture, built and checked (user code only when allowed)."""
    try:
        with torch.random.fork_rng(devices=[]):
            return build_model(spec.model, allow_import=allow_model_code)
    except MarketConfigError as exc:  # a refused user model names the flag (--allow-user-models) itself
        raise ModelSpecError(f"the project's model spec cannot be built: {exc}") from None


def content_matches(cid: str, data: bytes) -> bool:
    """Whether `cid` addresses `data`: the IPFS CIDv0 of default `ipfs add`, or a raw CID."""
    parsed = parse_cid(cid)
    if parsed.codec.name == "raw":
        return same_multihash(cid, raw_cid(data))
    return same_multihash(cid, cid_of(data))


def _open_sealed_model(
    data: bytes, spec: ProjectSpec, project_id: int, model_round: int, keys: Sequence[Any], cid: str
) -> bytes:
    """`data` as it is, or the model inside round `model_round`'s sealed model for `keys`."""
    from market.protocol.envelope import is_envelope, open_model

    if not spec.encrypts_models or model_round < 0 or not is_envelope(data):  # the initial weights are the owner's
        return data
    if not keys:
        raise ModelSpecError(
            f"global model {cid} is sealed for the project's model readers and no encryption key was given: use an"
            " account whose key the owner lists in model_readers"
        )
    try:
        return open_model(data, list(keys), project_id, model_round, spec.model_reader_keys(), max_bytes=MODEL_MAX_BYTES)
    except UpdateRejected as exc:
        raise ModelSpecError(
            f"global model {cid} does not open with this account's key ({exc.detail}): ask the owner to list your"
            " key in the project's model_readers"
        ) from None


def fetch_global_model(
    client: MarketClient, store: Any, spec: ProjectSpec, project_id: int, round_: int, *,
    allow_model_code: bool = False, base: RoundBase | None = None, model_keys: Sequence[Any] = (),
) -> GlobalModel:
    """Download round `round_`'s base model, check it addresses its CID (and, after round 0, the
    digest in the previous round record), decode it and check it fits the spec's architecture.
    A sealed model (`ProjectSpec.model_readers`) is opened with `model_keys` (X25519 private keys
    of one of its readers) first; the record's digest is of the plaintext."""
    base = base or round_base(client, store, project_id, round_, spec)
    data = store.cat(base.model_cid, max_bytes=MODEL_MAX_BYTES)
    if not content_matches(base.model_cid, data):
        raise ModelSpecError(
            f"the bytes served for model {base.model_cid} do not hash to that CID: the IPFS node is faulty; use another"
        )
    data = _open_sealed_model(data, spec, project_id, round_ - 1, model_keys, base.model_cid)
    digest = "0x" + hashlib.sha256(data).hexdigest()
    if base.previous is not None:
        record = load_record(store, base.previous.record_cid)
        if record.model_digest.lower() != digest:
            raise ModelSpecError(
                f"model {base.model_cid} has sha256 {digest[:18]}..., round {round_ - 1}'s record says"
                f" {record.model_digest[:18]}...: the round is inconsistent; dispute it"
            )
    try:
        header, tensors = decode_model(data, DecodeLimits(max_bytes=MODEL_MAX_BYTES))
    except UpdateRejected as exc:
        raise ModelSpecError(f"global model {base.model_cid} is not a model file ({exc.detail}): the project is misconfigured") from None
    if header.architecture != spec.model.architecture:
        raise ModelSpecError(
            f"global model {base.model_cid} is a {header.architecture!r} but the spec names"
            f" {spec.model.architecture!r}: the project is misconfigured; do not train on it"
        )
    want = tensor_spec(model_template(spec, allow_model_code=allow_model_code))
    got = tensor_spec(tensors)
    if set(want) != set(got):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ModelSpecError(
            f"global model {base.model_cid} does not fit the spec's {spec.model.architecture}: missing {missing[:3]},"
            f" unexpected {extra[:3]}; the project is misconfigured"
        )
    for name, (shape, dtype) in want.items():
        if got[name] != (shape, dtype):
            raise ModelSpecError(
                f"global tensor {name!r} is {got[name][1]} {list(got[name][0])}, the spec's model has {dtype} {list(shape)}:"
                " the project is misconfigured"
            )
    state = {name: tensors[name] for name in want}
    return GlobalModel(round_, base.model_cid, state, dict(base.hyperparams), digest)


# --------------------------------------------------------------------------- the trainer's data


def load_trainer_data(settings: TrainerSettings, spec: ProjectSpec) -> Dataset:
    """The trainer's data (`settings.data`, else the spec's built-in dataset), checked against the
    spec, cut to `settings.shard` of `settings.partition`, with `settings.label_noise`."""
    source = settings.data
    if source is None:
        if spec.model.dataset in BUILTIN_DATASETS:
            source = spec.model.dataset
        else:
            raise ConfigError(
                "no data given: pass --data (mnist5k, digits, a .npz/.csv file or an image folder) or set data in the [trainer] table of market.toml"
            )
    ds = load_dataset(source, spec=spec.model, label_column=settings.label_column)
    shard_index = 0
    if settings.shard is not None:
        shard_index, n = parse_shard(settings.shard)
        scheme, params = parse_partition(settings.partition)
        parts = partition(ds.y, n, scheme, seed=settings.partition_seed, **params)
        ds = ds.subset(parts[shard_index], name=f"{ds.name}[{shard_index}/{n}]")
    if settings.label_noise > 0:
        ds = with_label_noise(ds, settings.label_noise, seed=settings.partition_seed + 7919 * (shard_index + 1))
    return ds


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainedUpdate:
    """An encoded update and how it was made."""

    project_id: int
    round: int
    base_model_cid: str
    trainer: str
    data: bytes
    num_samples: int
    claimed_samples: int
    behaviour: str
    loss: float | None
    steps: int
    config: dict[str, Any]
    ignored_hyperparams: list[str]
    norm: float
    #: The DP applied before encoding (policy, its source, norm before clipping, clip factor,
    #: noise std); None: no DP.
    privacy: dict[str, Any] | None = None

    @property
    def sha256(self) -> str:
        return "0x" + hashlib.sha256(self.data).hexdigest()

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "data"}
        return d | {"bytes": len(self.data), "sha256": self.sha256}


def trainer_seed(address: str, project_id: int, round_: int) -> int:
    """A default training seed per (trainer, project, round): reproducible, and not shared."""
    h = hashlib.sha256(f"{address.lower()}:{project_id}:{round_}".encode()).digest()
    return int.from_bytes(h[:4], "big")


def _split_overrides(hyperparams: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    known = set(TrainConfig.model_fields)
    return {k: v for k, v in hyperparams.items() if k in known}, sorted(k for k in hyperparams if k not in known)


def train_update(
    settings: TrainerSettings,
    spec: ProjectSpec,
    model: GlobalModel,
    dataset: Dataset,
    *,
    project_id: int,
    trainer: str,
    encoding: str = "f32",
    progress: Callable[[TrainProgress], None] | None = None,
    sources: ContextSources | None = None,
    dp: DpPolicy | None = None,
) -> TrainedUpdate:
    """Train on `dataset` from `model` (hyper-parameters: the trainer's defaults, then the round
    record's) if the scripted behaviour needs it, give the behaviour what it declares (from
    `sources`), apply client-level DP (clip, then Gaussian noise: the spec's policy, else `dp`, the
    trainer's own, by default its `[trainer.dp]`), and encode what it produces. The update stays
    plaintext here: `Participant.submit` seals it for an encrypted project before upload."""
    dp = dp if dp is not None else own_privacy(settings.dp)
    behaviour = parse_behaviour(settings.behaviour)
    defaults = settings.train_config()
    if "seed" not in settings.train:
        defaults = defaults.with_overrides({"seed": trainer_seed(trainer, project_id, model.round)})
    overrides, ignored = _split_overrides(model.hyperparams)
    config = defaults.with_overrides(overrides)
    data = behaviour.transform_dataset(dataset)
    honest = None
    if behaviour.needs_training:
        honest = train_local(spec.model, model.state, data, config, progress=progress, num_threads=settings.threads)
    context = fill_context(
        behaviour, global_state=model.state, round=model.round, seed=config.seed, num_samples=len(dataset),
        trainer_id=trainer, sources=sources,
    )
    delta, claimed = behaviour.produce(honest, context)
    delta = {k: delta[k].to(torch.float32).contiguous() for k in model.state}
    policy = effective_privacy(spec, dp)
    privacy = None
    if policy is not None:
        # the noise must stay secret (known noise can be subtracted): a fresh OS seed, never the
        # training seed, which is derivable from public data
        generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big") >> 1)
        delta, applied = privatize_update(delta, policy, generator)
        privacy = {
            "source": "project" if spec.privacy is not None else "trainer", "policy": policy.model_dump(mode="json"),
            "norm_before": applied.norm, "clip_factor": applied.factor, "noise_std": applied.noise_std,
        }
    header = UpdateHeader(project_id, model.round, model.cid, trainer, int(claimed), encoding=encoding)  # type: ignore[arg-type]
    blob = encode_update(delta, header)
    norm = float(torch.sqrt(sum((v.double().square().sum() for v in delta.values()), torch.zeros((), dtype=torch.float64))))
    return TrainedUpdate(
        project_id=project_id, round=model.round, base_model_cid=model.cid, trainer=trainer, data=blob,
        num_samples=len(dataset), claimed_samples=int(claimed), behaviour=behaviour.describe(),
        loss=honest.loss if honest is not None else None, steps=honest.steps if honest is not None else 0,
        config=config.model_dump(), ignored_hyperparams=ignored, norm=norm, privacy=privacy,
    )


# --------------------------------------------------------------------------- checking an update


def check_update(
    data: bytes, spec: ProjectSpec, template: torch.nn.Module, *, project_id: int, round_: int,
    base_model_cid: str, trainer: str,
) -> UpdateHeader:
    """Refuse (InvalidUpdate, or RoundMismatch for a stale round) an update that the aggregator
    would reject: the same checks, against the same spec, before anything is uploaded."""
    try:
        header = parse_update_header(read_layout(data, DecodeLimits(max_bytes=max(len(data), 8))))
    except UpdateRejected as exc:
        raise InvalidUpdate(f"the update file is not an update ({exc.detail}): run `trainer train` again") from None
    if header.project_id != project_id:
        raise InvalidUpdate(f"the update is for project {header.project_id}, not {project_id}: pass the right file")
    if header.round != round_:
        raise RoundMismatch(
            f"the update was trained for round {header.round} but round {round_} is open: run `trainer train {project_id}` again"
        )
    verdict = validate_update(
        data, expected_digest=None, project_id=project_id, round=round_, base_model_cid=base_model_cid,
        trainer=trainer, spec=update_spec(template.state_dict()), max_bytes=spec.validation.max_update_bytes,
        max_norm=spec.validation.max_norm, max_header_bytes=spec.validation.max_header_bytes,
    )
    if not verdict.accepted:
        raise InvalidUpdate(
            f"the update would be rejected ({verdict.reason}: {verdict.detail}); nothing was uploaded or committed"
        )
    assert verdict.header is not None
    return verdict.header


# --------------------------------------------------------------------------- update files


def update_path(state_dir: Path, project_id: int, round_: int, trainer: str) -> Path:
    return Path(state_dir) / "updates" / f"p{project_id}" / f"{trainer.lower()}-r{round_}.safetensors"


def write_update_file(state_dir: Path, update: TrainedUpdate) -> Path:
    """Write the update (and a `.json` summary beside it) atomically; returns the update's path."""
    path = update_path(state_dir, update.project_id, update.round, update.trainer)
    try:
        atomic_write(path.with_suffix(".json"), json.dumps(update.summary(), indent=2).encode())
        atomic_write(path, update.data)
    except OSError as exc:
        raise ConfigError(f"cannot write the update to {path} ({exc.strerror}): check --state and its permissions") from None
    return path


def read_update_file(path: Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise InvalidUpdate(f"no update file at {path}: run `trainer train` first (or pass --update)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidUpdate(f"cannot read update file {path} ({exc.strerror}): check its permissions") from None


def decode_own_update(path: Path) -> dict[str, torch.Tensor] | None:
    """The tensors of a previous update of ours, if its file is there (for free_rider:stale)."""
    if not path.is_file():
        return None
    try:
        return decode_update(path.read_bytes())[1]
    except UpdateRejected:
        return None
