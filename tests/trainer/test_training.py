"""trainer.training: local training learns, is bit-for-bit deterministic, honours FedProx,
max_batches and validated overrides, and reports progress."""

from __future__ import annotations

import functools

import pydantic
import pytest
import torch
from torch import nn

from market.models import ModelSpec, apply_delta, evaluate, flatten, init_model
from trainer.data import Dataset, load_builtin, split_dataset
from trainer.errors import ConfigError, ModelSpecError, ShapeMismatch, TrainingError
from trainer.training import TrainConfig, TrainProgress, train_local

# One intra-op thread: deltas are bit-identical for a fixed thread count, and a single thread
# is not slowed down by other processes competing for the cores.
train = functools.partial(train_local, num_threads=1)

MNIST = ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10,
                  dataset="mnist5k")
DIGITS = ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits")


@pytest.fixture(scope="module")
def mnist_split() -> tuple[Dataset, Dataset]:
    train_ds, test_ds = split_dataset(load_builtin("mnist5k"), [1000, 500], seed=0)
    return train_ds, test_ds


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_builtin("digits")


def test_one_epoch_on_mnist_improves_held_out_accuracy(
        mnist_split: tuple[Dataset, Dataset]) -> None:
    train_ds, test_ds = mnist_split
    model = init_model(MNIST, seed=0)
    global_state = model.state_dict()
    acc0, loss0 = evaluate(model, test_ds.x, test_ds.y)
    result = train(MNIST, global_state, train_ds,
                   TrainConfig(epochs=1, batch_size=16, optimizer="adam", lr=2e-3))
    model.load_state_dict(apply_delta(global_state, result.delta))
    acc1, loss1 = evaluate(model, test_ds.x, test_ds.y)
    assert acc0 < 0.2
    assert acc1 - acc0 > 0.5
    assert loss1 < loss0
    assert result.num_samples == 1000 and result.steps == 63
    assert 0 < result.loss < 2.4


def test_same_seed_gives_bit_identical_delta(digits: Dataset) -> None:
    g = init_model(DIGITS, seed=3).state_dict()
    cfg = TrainConfig(epochs=2, batch_size=32, seed=11, fedprox_mu=0.01)
    a = train(DIGITS, g, digits, cfg)
    b = train(DIGITS, g, digits, cfg)
    c = train(DIGITS, g, digits, cfg.with_overrides({"seed": 12}))
    assert torch.equal(flatten(a.delta), flatten(b.delta))
    assert a.loss == b.loss and a.epoch_losses == b.epoch_losses
    assert not torch.equal(flatten(a.delta), flatten(c.delta))


def test_cnn_delta_is_deterministic(mnist_split: tuple[Dataset, Dataset]) -> None:
    train_ds, _ = mnist_split
    g = init_model(MNIST, seed=0).state_dict()
    cfg = TrainConfig(max_batches=5, seed=4)
    a = train(MNIST, g, train_ds, cfg)
    b = train(MNIST, g, train_ds, cfg)
    assert torch.equal(flatten(a.delta), flatten(b.delta))


def test_training_leaves_global_rng_threads_and_inputs_alone(digits: Dataset) -> None:
    model = init_model(DIGITS, seed=0)
    g = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    train_local(model, g, digits, TrainConfig(max_batches=3))  # the caller's thread setting
    train(model, g, digits, TrainConfig(max_batches=3))  # one thread, restored after
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(flatten(model.state_dict()), flatten(g))  # template not trained


def test_delta_layout_and_dtype(digits: Dataset) -> None:
    model = init_model(DIGITS, seed=0)
    r = train(model, None, digits, TrainConfig(max_batches=2))
    assert list(r.delta) == list(model.state_dict())
    assert all(v.dtype == torch.float32 and v.shape == model.state_dict()[k].shape
               for k, v in r.delta.items())
    assert flatten(r.delta).abs().sum() > 0


def test_global_state_none_starts_from_seeded_init(digits: Dataset) -> None:
    cfg = TrainConfig(max_batches=2, seed=9)
    from_none = train(DIGITS, None, digits, cfg)
    explicit = train(DIGITS, init_model(DIGITS, 9).state_dict(), digits, cfg)
    assert torch.equal(flatten(from_none.delta), flatten(explicit.delta))


def test_fedprox_pulls_towards_global(digits: Dataset) -> None:
    g = init_model(DIGITS, seed=0).state_dict()
    norms = [flatten(train(DIGITS, g, digits, TrainConfig(epochs=2, fedprox_mu=mu)).delta)
             .norm().item()
             for mu in (0.0, 1.0, 10.0)]
    assert norms[0] > norms[1] > norms[2] > 0


def test_fedprox_gradient_matches_the_proximal_objective() -> None:
    # plain SGD from g: step 1 has no proximal pull (w0 = g), step 2 adds mu * (w1 - g)
    torch.manual_seed(0)
    ds = Dataset(torch.randn(8, 3), torch.tensor([0, 1, 0, 1, 1, 0, 0, 1]), 2, "tiny")
    model = nn.Linear(3, 2)
    g = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    lr, mu = 0.1, 0.5
    ref = nn.Linear(3, 2)
    ref.load_state_dict(g)
    loss = nn.functional.cross_entropy(ref(ds.x), ds.y)
    loss.backward()
    # train_local starts from g, so the proximal term is zero on the first step...
    r = train(model, g, ds, TrainConfig(batch_size=8, lr=lr, momentum=0.0, fedprox_mu=mu,
                                              max_batches=1))
    expected = {k: -lr * p.grad for k, p in ref.named_parameters()}
    assert torch.allclose(flatten(r.delta), flatten(expected), atol=1e-6)
    # ...and two steps include mu * (w1 - g) in the second gradient
    r2 = train(model, g, ds, TrainConfig(batch_size=8, lr=lr, momentum=0.0, fedprox_mu=mu,
                                               max_batches=2, epochs=2))
    ref.zero_grad()
    with torch.no_grad():
        for k, p in ref.named_parameters():
            p.add_(expected[k])
    w1 = {k: p.detach().clone() for k, p in ref.named_parameters()}
    nn.functional.cross_entropy(ref(ds.x), ds.y).backward()
    expected2 = {k: expected[k] - lr * (p.grad + mu * w1[k]) for k, p in ref.named_parameters()}
    assert torch.allclose(flatten(r2.delta), flatten(expected2), atol=1e-6)


def test_max_batches_caps_total_steps(digits: Dataset) -> None:
    r = train(DIGITS, None, digits, TrainConfig(epochs=3, batch_size=100, max_batches=20))
    assert r.steps == 20 and len(r.epoch_losses) == 2  # 18 steps per epoch
    full = train(DIGITS, None, digits, TrainConfig(epochs=2, batch_size=1000))
    assert full.steps == 4


def test_progress_callback(digits: Dataset) -> None:
    events: list[TrainProgress] = []
    r = train(DIGITS, None, digits, TrainConfig(epochs=2, batch_size=500),
                    progress=events.append)
    assert [e.step for e in events] == list(range(1, 9))
    assert all(e.total_steps == 8 and e.epochs == 2 for e in events)
    assert [e.epoch_loss is not None for e in events] == [False, False, False, True] * 2
    assert events[-1].epoch_loss == r.loss == r.epoch_losses[-1]
    assert [e.epoch for e in events] == [1] * 4 + [2] * 4


def test_adam_and_weight_decay_run(digits: Dataset) -> None:
    r = train(DIGITS, None, digits, TrainConfig(optimizer="adam", lr=1e-3,
                                                      weight_decay=1e-4, max_batches=5))
    assert r.steps == 5 and r.config is not None and r.config.optimizer == "adam"


def test_overrides_apply_on_top_of_defaults(digits: Dataset) -> None:
    base = TrainConfig(epochs=3, lr=0.01)
    cfg = base.with_overrides({"lr": 0.2, "batch_size": 64, "optimizer": "adam", "epochs": 1})
    assert (cfg.lr, cfg.batch_size, cfg.optimizer, cfg.epochs, cfg.momentum) == \
        (0.2, 64, "adam", 1, base.momentum)
    assert base.with_overrides({"max_batches": None}).max_batches is None
    assert base.with_overrides({"lr": 1}).lr == 1.0  # an int is a fine float
    r = train(DIGITS, None, digits, base, overrides={"max_batches": 3, "lr": 0.05})
    assert r.steps == 3 and r.config is not None and r.config.lr == 0.05


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"learning_rate": 0.1}, r"unknown hyper-parameter\(s\) \['learning_rate'\]"),
        ({"epochs": "2"}, "epochs='2'"),
        ({"epochs": 1.5}, "epochs=1.5"),
        ({"epochs": True}, "epochs=True"),
        ({"epochs": 0}, "epochs=0"),
        ({"lr": -1.0}, "lr=-1.0"),
        ({"lr": float("nan")}, "lr=nan"),
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop'"),
        ({"momentum": 1.0}, "momentum=1.0"),
        ({"fedprox_mu": -0.1}, "fedprox_mu"),
        ({"max_batches": 0}, "max_batches"),
    ],
)
def test_bad_overrides_are_refused(overrides: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TrainConfig().with_overrides(overrides)


def test_config_is_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        TrainConfig().lr = 1.0  # type: ignore[misc]


def test_wrong_global_state_and_data_are_refused(digits: Dataset) -> None:
    g = init_model(DIGITS, 0).state_dict()
    bad_keys = {k + "x": v for k, v in g.items()}
    with pytest.raises(ModelSpecError, match="missing"):
        train(DIGITS, bad_keys, digits)
    bad_shape = dict(g)
    bad_shape["1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ModelSpecError, match="1.weight"):
        train(DIGITS, bad_shape, digits)
    with pytest.raises(ShapeMismatch):
        train(MNIST, None, digits)
    with pytest.raises(ModelSpecError, match="unknown architecture"):
        train(ModelSpec(architecture="nope", input_shape=(64,), num_classes=10),
                    None, digits)


def test_divergence_is_reported() -> None:
    ds = Dataset(torch.full((16, 4), 1e6), torch.arange(16) % 2, 2, "huge")
    with pytest.raises(TrainingError, match="diverged"):
        train(nn.Linear(4, 2), None, ds, TrainConfig(lr=1e30, momentum=0.0, epochs=3))
