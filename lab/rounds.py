"""One large round without a federation: `synthetic_round(n)` builds the `RoundInputs` of a
round with n trainers for the aggregator's round computation (`compute_from_inputs`), fast.

A few real deltas (`train_local` on disjoint slices of the dataset's training split) are dealt
to the n trainers, each scaled and perturbed by its own seeded noise, so every trainer's update
differs and the scorer has something to tell apart; every byte goes through `lab.inprocess`'s
`LocalProject` (the chain and the store in memory) exactly as a simulated round's does.
"""

from __future__ import annotations

import torch

from aggregator.round import RoundInputs
from aggregator.valset import ValidationSet
from lab.inprocess import ETHER, MODELS, PROJECT_ID, LocalProject, derive_seed, splits, trainer_address
from market.models import init_model
from market.protocol.codec import ModelHeader, UpdateHeader, encode_model, encode_update
from market.protocol.documents import ProjectSpec
from trainer.training import TrainConfig, train_local

__all__ = ["synthetic_round"]

_REAL_DELTAS = 4


def synthetic_round(n: int, *, dataset: str = "digits", seed: int = 0, noise: float = 0.3) -> RoundInputs:
    """Round 0 of a project with `n` trainers (positions in commit order), ready to compute."""
    model_spec = MODELS[dataset]
    train, val, _ = splits(dataset, seed)
    like = {k: v.detach().clone() for k, v in init_model(model_spec, seed).state_dict().items()}
    slice_len = len(train) // _REAL_DELTAS
    cfg = TrainConfig(epochs=1, lr=0.05, batch_size=32)
    real = [
        train_local(model_spec, like, train.subset(range(k * slice_len, (k + 1) * slice_len)),
                    cfg.with_overrides({"seed": derive_seed("synthetic", seed, k)}), num_threads=1).delta
        for k in range(_REAL_DELTAS)
    ]
    project = LocalProject(
        spec=ProjectSpec(model=model_spec, hyperparams={"epochs": 1, "lr": 0.05, "batch_size": 32}),
        initial_model=encode_model(like, ModelHeader(PROJECT_ID, 0, model_spec.architecture)),
        num_rounds=1, reward_per_round=ETHER, seed=seed,
    )
    submissions = []
    for i in range(n):
        gen = torch.Generator().manual_seed(derive_seed("synthetic-noise", seed, i))
        base = real[i % _REAL_DELTAS]
        delta = {}
        for key, t in base.items():
            jitter = torch.randn(t.shape, generator=gen, dtype=torch.float32) * float(t.abs().mean()) * noise
            delta[key] = (t * (0.5 + i % 3 * 0.25) + jitter).contiguous()
        header = UpdateHeader(PROJECT_ID, 0, project.base_model_cid, trainer_address(i), slice_len)
        submissions.append((trainer_address(i), encode_update(delta, header)))
    valset = ValidationSet(val.x, val.y, f"{dataset}:val")
    validation_cid = project.publish(valset.to_npz())
    ctx = project.context(project.reveal(submissions))
    return project.inputs(ctx, valset, validation_cid)
