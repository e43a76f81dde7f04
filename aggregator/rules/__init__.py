"""Pluggable robust aggregation rules over a stack of updates `[n, d]` (float32).

Every rule is a small frozen dataclass with a `name`, called as `rule(updates, weights=None)` to get
the aggregate `[d]`, or `rule.aggregate(updates, weights)` to get an `Aggregate` that also names the
rows it selected (Krum, Multi-Krum) and a few figures (iterations, clip bound, synthetic row).
`make_rule("trimmed_mean:beta=0.2")` builds one from a spec (through `market._spec`, so every value
is typed by the field it sets); `rule.spec` renders it back.

    base.py        Rule, Aggregate, _Stack, capped weights, clip factors, Clipped (the wrapper)
    mean.py        fedavg, norm_clip
    coordinate.py  median, trimmed_mean, foundation_fl
    distance.py    krum, multi_krum, geomed, centered_clipping
    _linalg.py     input checks every rule (and the filters) share

Design points:
- Bit-exact: every kernel is `market.protocol.numerics` (means, medians and trimmed means as
  exact integer reductions on a per-coordinate fixed-point grid; norms, dot products and
  distances as exact rationals), so an aggregate and every choice a rule makes (Krum's
  neighbours, a clip, a convergence test) are the same on any CPU, thread count or PyTorch build.
- Memory: coordinate-wise rules sort column chunks of ~4 MB of float64; distance-based rules
  use one exact `[n, n]` Gram matrix or exact dot products with a `[d]` vector; norm clipping is
  folded into the rules as per-row scale factors instead of materialising clipped rows.
- Weights: only FedAvg (and rules given `clip=` on top of it) use sample counts, capped at a
  configurable cap (exactly, as fractions) and turned into integer weights. The robust rules
  give every update one vote: a count is a claim, and a robust rule that trusts claims is no
  longer robust.
- Input: rows must be finite; a NaN or infinity raises InvalidUpdates (the filters reject such
  updates first with reason `non_finite`). Huge finite rows are fine: every value sits on its
  own grid.
- Small inputs: f (Byzantine count) is clamped to what n can tolerate, so the same rule also
  aggregates small coalitions when contributions are scored.
"""

from __future__ import annotations

from typing import Any

from aggregator.errors import RuleConfigError
from aggregator.rules.base import Aggregate, Clipped, Real, Rule, capped_weights, clip_scales
from aggregator.rules.coordinate import FoundationFL, Median, TrimmedMean, coordinate_median
from aggregator.rules.distance import CenteredClipping, GeometricMedian, Krum, MultiKrum
from aggregator.rules.mean import FedAvg, NormClipping
from market._spec import Registry

__all__ = [
    "RULES",
    "Aggregate",
    "CenteredClipping",
    "Clipped",
    "FedAvg",
    "FoundationFL",
    "GeometricMedian",
    "Krum",
    "Median",
    "MultiKrum",
    "NormClipping",
    "Rule",
    "TrimmedMean",
    "capped_weights",
    "clip_scales",
    "coordinate_median",
    "make_rule",
]

#: Every rule by name (and alias): `RULES.get("krum")` is the class, `"rfa" in RULES`, `list(RULES)`.
RULES: Registry[Rule] = Registry("aggregation rule", error=RuleConfigError)
for _cls, _aliases in (
    (FedAvg, ("mean", "avg", "average")),
    (Median, ()),
    (TrimmedMean, ("trmean",)),
    (Krum, ()),
    (MultiKrum, ("multikrum", "mkrum")),
    (GeometricMedian, ("geometric_median", "rfa")),
    (CenteredClipping, ("cc",)),
    (NormClipping, ("clipping",)),
    (FoundationFL, ("foundationfl",)),
):
    RULES.add(_cls.name, _cls, _aliases)

#: `clip=<bound>` is accepted on every rule: it wraps the rule in `Clipped`.
_CLIP: Any = Real | str


def make_rule(spec: str | Rule, **overrides: Any) -> Rule:
    """A rule from a spec such as "trimmed_mean:beta=0.2", "krum:f=2,clip=median" or "geomed".

    `clip=<bound>` on any rule wraps it in `Clipped` (norm clipping as a pre-step).
    """
    if isinstance(spec, Rule):
        return spec
    name, kwargs = RULES.parse(spec, extras={"clip": _CLIP})
    kwargs.update(overrides)
    clip = kwargs.pop("clip", None)
    rule = RULES.create(name, **kwargs)
    if clip is not None:
        rule = Clipped(inner=rule, bound=clip)
    return rule
