"""market.models: the architecture registry, user models by path, and the update plumbing."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest
import torch
from torch import nn

from market.errors import ConfigError, UpdateRejected
from market.models import (
    ModelSpec,
    apply_delta,
    build_model,
    evaluate,
    flatten,
    init_model,
    load_factory,
    model_names,
    stack_updates,
    state_delta,
    tensor_spec,
    unflatten,
)

MNIST = ModelSpec(architecture="mnist_cnn", input_shape=(1, 28, 28), num_classes=10,
                  dataset="mnist5k")
DIGITS = ModelSpec(architecture="digits_mlp", input_shape=(64,), num_classes=10, dataset="digits")
LOGREG = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10)


@pytest.fixture
def user_models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))


@pytest.mark.parametrize("spec", [MNIST, DIGITS, LOGREG], ids=lambda s: s.architecture)
def test_builtin_models_build_forward_and_are_float32(spec: ModelSpec) -> None:
    model = build_model(spec)
    out = model(torch.zeros(3, *spec.input_shape))
    assert out.shape == (3, 10)
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_registry_lists_builtins() -> None:
    assert {"mnist_cnn", "digits_mlp", "logreg"} <= set(model_names())


def test_mnist_cnn_is_small() -> None:
    n = sum(p.numel() for p in build_model(MNIST).parameters())
    assert 50_000 < n < 200_000


def test_logreg_in_out_configurable() -> None:
    spec = ModelSpec(architecture="logreg", arch_kwargs={"in_features": 12, "out_features": 3},
                     input_shape=(3, 4), num_classes=3)
    model = build_model(spec)
    assert tensor_spec(model) == {"1.weight": ((3, 12), "float32"), "1.bias": ((3,), "float32")}


def test_arch_kwargs_reach_the_factory() -> None:
    spec = DIGITS.model_copy(update={"arch_kwargs": {"hidden": [32, 16]}})
    shapes = [s for s, _ in tensor_spec(build_model(spec)).values()]
    assert shapes == [(32, 64), (32,), (16, 32), (16,), (10, 16), (10,)]


def test_init_model_is_deterministic_and_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = flatten(init_model(MNIST, seed=7).state_dict())
    b = flatten(init_model(MNIST, seed=7).state_dict())
    c = flatten(init_model(MNIST, seed=8).state_dict())
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(torch.get_rng_state(), before)


def test_tensor_spec_follows_state_dict_order() -> None:
    model = build_model(MNIST)
    spec = tensor_spec(model)
    assert list(spec) == list(model.state_dict())
    assert spec["conv1.weight"] == ((16, 1, 3, 3), "float32")
    assert spec["conv2.weight"] == ((32, 16, 3, 3), "float32")


def test_user_model_by_path(user_models_on_path: None) -> None:
    spec = ModelSpec(architecture="user_models.tiny:make_tiny", arch_kwargs={"hidden": 5},
                     input_shape=(64,), num_classes=10)
    assert spec.is_import_path
    model = init_model(spec, seed=0)
    assert tensor_spec(model)["1.weight"] == ((5, 64), "float32")
    assert torch.equal(flatten(model.state_dict()), flatten(init_model(spec, 0).state_dict()))


def test_user_factory_without_shape_parameters(user_models_on_path: None) -> None:
    spec = ModelSpec(architecture="user_models.tiny:only_kwargs", arch_kwargs={"width": 3},
                     input_shape=(64,), num_classes=10)
    assert tensor_spec(build_model(spec))["1.weight"][0] == (3, 64)


def test_user_model_import_can_be_refused(user_models_on_path: None) -> None:
    spec = ModelSpec(architecture="user_models.tiny:make_tiny", input_shape=(64,), num_classes=10)
    with pytest.raises(ConfigError, match="pass --allow-user-models"):
        build_model(spec, allow_import=False)


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_pkg_xyz.mod:build", "cannot import module 'no_such_pkg_xyz.mod'"),
        ("user_models.tiny:missing", "has no attribute 'missing'"),
        ("user_models.tiny:NOT_CALLABLE", "not a callable"),
        ("user_models.tiny:not_a_module", "not a torch.nn.Module"),
        ("user_models.tiny:with_batchnorm", "BatchNorm"),
        ("user_models.tiny:with_double", "non-float32"),
    ],
)
def test_bad_user_models_raise_clear_errors(user_models_on_path: None, path: str,
                                            message: str) -> None:
    spec = ModelSpec(architecture=path, input_shape=(64,), num_classes=10)
    with pytest.raises(ConfigError, match=message):
        build_model(spec)


def test_load_factory_rejects_malformed_paths() -> None:
    with pytest.raises(ConfigError, match="package.module:factory"):
        load_factory("no colon here")


def test_unknown_name_and_bad_kwargs() -> None:
    with pytest.raises(ConfigError, match="unknown architecture 'resnet_9000'"):
        build_model(ModelSpec(architecture="resnet_9000", input_shape=(64,), num_classes=10))
    with pytest.raises(ConfigError, match="rejected arch_kwargs"):
        build_model(DIGITS.model_copy(update={"arch_kwargs": {"depth": 3}}))


def test_forward_check_catches_wrong_shapes() -> None:
    with pytest.raises(ConfigError, match="cannot take input"):
        build_model(ModelSpec(architecture="logreg", arch_kwargs={"in_features": 10},
                              input_shape=(64,), num_classes=10))
    with pytest.raises(ConfigError, match="outputs"):
        build_model(ModelSpec(architecture="logreg", arch_kwargs={"out_features": 3},
                              input_shape=(64,), num_classes=10))
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        build_model(ModelSpec(architecture="mnist_cnn", input_shape=(784,), num_classes=10))


@pytest.mark.parametrize(
    "fields",
    [
        {"architecture": "Bad Name"},
        {"architecture": "pkg.mod:"},
        {"input_shape": ()},
        {"input_shape": (0, 28)},
        {"num_classes": 1},
        {"arch_kwargs": {"x": object()}},
        {"unexpected": 1},
    ],
)
def test_model_spec_validation(fields: dict) -> None:
    base = {"architecture": "logreg", "input_shape": (64,), "num_classes": 10}
    with pytest.raises(pydantic.ValidationError):
        ModelSpec(**{**base, **fields})


def test_model_spec_is_frozen_and_json_round_trips() -> None:
    with pytest.raises(pydantic.ValidationError):
        MNIST.num_classes = 3  # type: ignore[misc]
    spec = MNIST.model_copy(update={"initial_weights_cid": "Qm123"})
    assert ModelSpec.model_validate_json(spec.model_dump_json()) == spec


def test_flatten_unflatten_round_trip() -> None:
    state = init_model(MNIST, seed=1).state_dict()
    vec = flatten(state)
    assert vec.dtype == torch.float32
    assert vec.shape == (sum(v.numel() for v in state.values()),)
    back = unflatten(vec, state)
    assert list(back) == list(state)
    assert all(torch.equal(back[k], state[k]) for k in state)
    # copies, not views: changing the result leaves the vector alone
    back["fc2.bias"].add_(1.0)
    assert torch.equal(vec, flatten(state))


def test_flatten_uses_given_key_order() -> None:
    state = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor([[3.0]])}
    assert flatten(state, ["b", "a"]).tolist() == [3.0, 1.0, 2.0]
    with pytest.raises(UpdateRejected, match="missing"):
        flatten(state, ["a", "c"])


def test_unflatten_rejects_wrong_sizes() -> None:
    like = {"a": torch.zeros(2, 2)}
    with pytest.raises(UpdateRejected, match="5 values"):
        unflatten(torch.zeros(5), like)
    with pytest.raises(UpdateRejected, match="flat vector"):
        unflatten(torch.zeros(2, 2), like)


def test_stack_updates_rows_are_flattened_updates() -> None:
    ups = [{"w": torch.full((2, 2), float(i)), "b": torch.full((3,), -float(i))} for i in range(3)]
    stack = stack_updates(ups)
    assert stack.shape == (3, 7)
    assert torch.equal(stack[2], flatten(ups[2]))


def test_state_delta_and_apply_delta_are_inverse() -> None:
    old = init_model(DIGITS, seed=0).state_dict()
    new = init_model(DIGITS, seed=1).state_dict()
    delta = state_delta(new, old)
    assert list(delta) == list(old)
    assert all(torch.equal(delta[k], new[k] - old[k]) for k in old)
    restored = apply_delta(old, delta)
    assert all(torch.allclose(restored[k], new[k], atol=1e-6) for k in old)
    half = apply_delta(old, delta, lr=0.5)
    assert torch.allclose(flatten(half), flatten(old) + 0.5 * flatten(delta))
    # inputs untouched
    assert torch.equal(flatten(old), flatten(init_model(DIGITS, seed=0).state_dict()))


def test_layout_mismatch_is_rejected() -> None:
    a = {"w": torch.zeros(2)}
    with pytest.raises(UpdateRejected, match="unexpected tensors"):
        state_delta({"w": torch.zeros(2), "x": torch.zeros(1)}, a)
    with pytest.raises(UpdateRejected, match="shape"):
        apply_delta(a, {"w": torch.zeros(3)})


def test_evaluate_accuracy_and_loss() -> None:
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(2))
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1, 1, 1])
    acc, loss = evaluate(model, x, y, batch_size=3)
    assert acc == pytest.approx(0.75)
    expected = torch.nn.functional.cross_entropy(model(x), y).item()
    assert loss == pytest.approx(expected, rel=1e-6)
    assert model.training
    with pytest.raises(ConfigError, match="empty"):
        evaluate(model, x[:0], y[:0])
