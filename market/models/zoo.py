"""Model architectures both sides build from a round's `ModelSpec`.

A round publishes a `ModelSpec`; both sides call `build_model(spec)` (or `init_model(spec, seed)`
for the reproducible initial weights) and so agree on the `state_dict()` layout every update is
keyed and ordered by (see docs/CONVENTIONS.md: an update is a float32 delta per state entry, and
a stack of n updates is `[n, d]`, rows being `flatten(update)`).

Architectures are either a registered name (`mnist_cnn`, `digits_mlp`, `logreg`, or one added
with `register_model`) or a `package.module:factory` path loaded with importlib, the way Flower
loads its `ServerApp`/`ClientApp`. A factory is called with the spec's `arch_kwargs`, plus
`input_shape` and `num_classes` when its signature accepts them. Importing a path runs that
module's code: a trainer should only build paths it trusts (`allow_import=False` refuses them).

Every model must be free of BatchNorm (running statistics do not average as deltas) and hold
only float32 state; `build_model` checks both, and checks one forward pass maps
`[1, *input_shape]` to `[1, num_classes]`.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from market.errors import ConfigError

__all__ = [
    "MnistCNN",
    "ModelFactory",
    "ModelSpec",
    "build_model",
    "init_model",
    "load_factory",
    "model_names",
    "register_model",
]

ModelFactory = Callable[..., nn.Module]

from market.protocol.model_spec import _NAME_RE, _PATH_RE, ModelSpec


def _features(input_shape: Sequence[int]) -> int:
    return math.prod(input_shape)


class MnistCNN(nn.Module):
    """Two 3x3 conv layers (16, 32 channels) with 2x2 max-pooling, then a small MLP head.

    ~106k parameters for 1x28x28; one epoch of MNIST-5k takes a few seconds on two CPU cores.
    """

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
                 channels: Sequence[int] = (16, 32), hidden: int = 64):
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(
                f"mnist_cnn needs input_shape (C, H, W), got {tuple(input_shape)}; "
                "use digits_mlp or logreg for flat features"
            )
        c, h, w = input_shape
        c1, c2 = channels
        self.conv1 = nn.Conv2d(c, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        flat = c2 * (h // 4) * (w // 4)
        if flat == 0:
            raise ConfigError(f"mnist_cnn needs H and W of at least 4, got {h}x{w}")
        self.fc1 = nn.Linear(flat, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc2(x)


def _mnist_cnn(input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10,
               channels: Sequence[int] = (16, 32), hidden: int = 64) -> nn.Module:
    return MnistCNN(input_shape, num_classes, channels=channels, hidden=hidden)


def _digits_mlp(input_shape: Sequence[int] = (64,), num_classes: int = 10,
                hidden: int | Sequence[int] = 64) -> nn.Module:
    widths = [hidden] if isinstance(hidden, int) else list(hidden)
    layers: list[nn.Module] = [nn.Flatten()]
    prev = _features(input_shape)
    for w in widths:
        layers += [nn.Linear(prev, int(w)), nn.ReLU()]
        prev = int(w)
    layers.append(nn.Linear(prev, num_classes))
    return nn.Sequential(*layers)


def _logreg(input_shape: Sequence[int] = (64,), num_classes: int = 10,
            in_features: int | None = None, out_features: int | None = None) -> nn.Module:
    fin = in_features if in_features is not None else _features(input_shape)
    fout = out_features if out_features is not None else num_classes
    return nn.Sequential(nn.Flatten(), nn.Linear(fin, fout))


_REGISTRY: dict[str, ModelFactory] = {
    "mnist_cnn": _mnist_cnn,
    "digits_mlp": _digits_mlp,
    "logreg": _logreg,
}


def register_model(name: str, factory: ModelFactory | None = None) -> Any:
    """Register `factory` under `name`; usable as a decorator (`@register_model("mine")`)."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"model name {name!r} is not lower_snake_case; pick a name like 'my_net'")

    def _register(f: ModelFactory) -> ModelFactory:
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ConfigError(f"model name {name!r} is already registered; pick another name")
        _REGISTRY[name] = f
        return f

    return _register(factory) if factory is not None else _register


def model_names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def load_factory(path: str) -> ModelFactory:
    """Import `package.module:factory` (the attribute part may be dotted) and return it."""
    if not _PATH_RE.match(path):
        raise ConfigError(
            f"{path!r} is not a 'package.module:factory' path; write e.g. 'mypkg.nets:build'"
        )
    module_name, attr = path.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"cannot import module {module_name!r} for architecture {path!r} ({e}); "
            "install it or put its directory on PYTHONPATH"
        ) from e
    except Exception as e:  # the module itself raised while importing
        raise ConfigError(
            f"importing module {module_name!r} for architecture {path!r} failed: "
            f"{type(e).__name__}: {e}; fix that module"
        ) from e
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise ConfigError(
                f"module {module_name!r} has no attribute {attr!r}; check the name after ':'"
            ) from e
    if not callable(obj):
        raise ConfigError(f"{path!r} is a {type(obj).__name__}, not a callable model factory; "
                          "point it at a function or nn.Module class")
    return obj  # type: ignore[no-any-return]


def _resolve(spec: ModelSpec, allow_import: bool) -> ModelFactory:
    if spec.is_import_path:
        if not allow_import:
            raise ConfigError(
                f"architecture {spec.architecture!r} is user code (a package.module:factory path) and importing it"
                " runs that code: pass --allow-user-models (trainer, aggregator serve, market audit) if you trust it"
            )
        return load_factory(spec.architecture)
    try:
        return _REGISTRY[spec.architecture]
    except KeyError:
        raise ConfigError(
            f"unknown architecture {spec.architecture!r}; use one of {', '.join(model_names())} "
            "or a 'package.module:factory' path"
        ) from None


def _call_factory(factory: ModelFactory, spec: ModelSpec) -> Any:
    kwargs = dict(spec.arch_kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # builtins without a signature: pass only arch_kwargs
        params = {}  # type: ignore[assignment]
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    for key, value in (("input_shape", spec.input_shape), ("num_classes", spec.num_classes)):
        if key not in kwargs and (var_kw or key in params):
            kwargs[key] = value
    try:
        return factory(**kwargs)
    except ConfigError:
        raise
    except TypeError as e:
        raise ConfigError(
            f"architecture {spec.architecture!r} rejected arch_kwargs "
            f"{sorted(spec.arch_kwargs)}: {e}; fix the spec's arch_kwargs"
        ) from e


def _check_model(model: Any, spec: ModelSpec, forward_check: bool) -> nn.Module:
    arch = spec.architecture
    if not isinstance(model, nn.Module):
        raise ConfigError(f"architecture {arch!r} returned a {type(model).__name__}, "
                          "not a torch.nn.Module; make the factory return a module")
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                f"architecture {arch!r} has BatchNorm at {name or '<root>'!r}; running statistics "
                "do not average as deltas: use GroupNorm/LayerNorm or no normalisation"
            )
    state = model.state_dict()
    if not state:
        raise ConfigError(f"architecture {arch!r} has no parameters; a model must have weights")
    bad = {k: str(v.dtype) for k, v in state.items() if v.dtype != torch.float32}
    if bad:
        raise ConfigError(f"architecture {arch!r} has non-float32 state {bad}; "
                          "every state_dict entry must be float32")
    if forward_check:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(torch.zeros((1, *spec.input_shape)))
        except Exception as e:
            raise ConfigError(
                f"architecture {arch!r} cannot take input of shape {(1, *spec.input_shape)}: "
                f"{type(e).__name__}: {e}; fix input_shape or the model"
            ) from e
        finally:
            model.train(was_training)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, spec.num_classes):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ConfigError(f"architecture {arch!r} outputs {shape} for one sample, expected "
                              f"(1, {spec.num_classes}); fix num_classes or the model's head")
    return model


def build_model(spec: ModelSpec, *, allow_import: bool = True,
                forward_check: bool = True) -> nn.Module:
    """Instantiate the spec's architecture (weights from the current torch RNG) and check it."""
    factory = _resolve(spec, allow_import)
    return _check_model(_call_factory(factory, spec), spec, forward_check)


def init_model(spec: ModelSpec, seed: int, *, allow_import: bool = True) -> nn.Module:
    """`build_model` with weights drawn from `seed`: the same seed gives bit-identical weights.

    The global torch RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec, allow_import=allow_import)


# ---------------------------------------------------------------------------------------------
# State and update plumbing
