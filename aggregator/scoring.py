"""Contribution scoring: how much each accepted trainer's update adds to the round's model.

A scorer is called as `scorer.score(players, utility, rng_seed) -> ScoreResult`. The utility maps
a coalition (a frozenset of player positions in `players`) to a number, e.g. the validation
accuracy of the global model plus the aggregate of the coalition's updates; the empty coalition's
utility is the current global model's. `make_utility(...)` builds such a utility with memoisation.

Scorers:
- `ExactShapley`: all 2^n coalitions (small n only), the reference.
- `GTGShapley`: guided truncated Monte Carlo (Liu et al., "GTG-Shapley", 2022): permutations are
  drawn in sweeps where every player goes first once (guided), a permutation stops evaluating once
  the prefix is within eps of the grand coalition's utility (within-round truncation), a round
  whose whole gain is below eps scores everyone 0 with two evaluations (between-round
  truncation), and sampling stops when a sweep changes the estimate by less than `tolerance`
  (relative L1) or the evaluation budget is spent.
- `LeaveOneOut`: v(N) - v(N minus i).
- `Equal`: every player 1, no evaluation (an even split; for runs that do not measure contributions).

Parallel evaluation: a utility that can evaluate many coalitions at once (`BatchUtility`, e.g. a
`CoalitionUtility` given an executor such as `aggregator.ray_scoring`'s) is asked, through
`prefetch`, for the coalitions a scorer is certain to need before it needs them: all of them for
exact Shapley and leave-one-out, one depth of every permutation of a GTG sweep at a time (which
prefixes a permutation needs depends only on values already known). The scorer then runs exactly
as without it, in the same order, on the same values: only where they were computed changes.

Paired noise: a `CoalitionUtility` given per-sample losses (`losses_fn`) also measures
`paired_se(a, b)`, the standard error of the mean per-sample loss difference between two
coalitions' models on the validation set: the smallest utility gap the validation sample can tell
from chance for that pair (the validation gate's slack and the pay threshold use it;
`paired_noise(utility, a, b)` is None for a utility that cannot).

Every random choice comes from a SHA-256 counter-mode stream seeded by `rng_seed` (see `_rng`),
and every sum is `math.fsum` (exactly rounded), so an auditor with the same utilities gets the
same scores bit for bit, whatever the platform. The utilities themselves are forward passes,
which are not bit-exact across CPUs and builds: a round records every utility it used
(`CoalitionUtility(ledger=...)`, `aggregator.round.ledger`) and an audit scores with the
recorded values, after checking each against its own measurement within a tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from aggregator._rng import DeterministicRNG
from aggregator.errors import RuleConfigError, ScoringError
from market._spec import Registry

__all__ = [
    "SCORERS",
    "BatchUtility",
    "CoalitionExecutor",
    "CoalitionUtility",
    "Equal",
    "ExactShapley",
    "GTGShapley",
    "LeaveOneOut",
    "ScoreResult",
    "Scorer",
    "Utility",
    "make_scorer",
    "make_utility",
    "paired_noise",
    "paired_standard_error",
    "prefetch",
    "restrict",
]

Utility = Callable[[frozenset[int]], float]


@runtime_checkable
class BatchUtility(Protocol):
    """A utility that can evaluate several coalitions in parallel before they are asked for."""

    def __call__(self, coalition: frozenset[int]) -> float: ...

    def prefetch(self, coalitions: Sequence[frozenset[int]]) -> list[float]:
        """The values `self(c)` will return for each of `coalitions`, computed together."""
        ...


def prefetch(utility: Utility, coalitions: Sequence[frozenset[int]]) -> list[float] | None:
    """`utility.prefetch(coalitions)` for a `BatchUtility` that has parallel workers; None
    (nothing done) for any other utility, which the caller then evaluates one by one as before."""
    if isinstance(utility, BatchUtility) and getattr(utility, "parallel", False):
        return utility.prefetch(coalitions)
    return None


def paired_noise(utility: Utility, coalition: frozenset[int], baseline: frozenset[int]) -> float | None:
    """`utility.paired_se(coalition, baseline)` for a utility that measures it; None otherwise."""
    fn = getattr(utility, "paired_se", None)
    return None if fn is None else fn(coalition, baseline)


def paired_standard_error(losses: torch.Tensor, baseline: torch.Tensor) -> float:
    """The standard error of the mean of `losses - baseline` (per-sample losses of two models on
    the same samples): sample standard deviation of the differences over sqrt(count)."""
    if losses.shape != baseline.shape or losses.dim() != 1 or losses.numel() < 2:
        raise ScoringError("paired losses need two [m] tensors over the same m >= 2 samples")
    d = losses.double() - baseline.double()
    return float(d.std(correction=1)) / math.sqrt(d.numel())


class _Restricted:
    """`utility` over positions 0..k-1 that stand for `members[0..k-1]` of the full game."""

    def __init__(self, utility: Utility, members: Sequence[int]):
        self.utility, self.members = utility, list(members)
        self.parallel = bool(getattr(utility, "parallel", False))

    def _full(self, coalition: frozenset[int]) -> frozenset[int]:
        return frozenset(self.members[j] for j in coalition)

    def __call__(self, coalition: frozenset[int]) -> float:
        return self.utility(self._full(coalition))

    def prefetch(self, coalitions: Sequence[frozenset[int]]) -> list[float]:
        out = prefetch(self.utility, [self._full(c) for c in coalitions])
        return out if out is not None else [self(c) for c in coalitions]

    def paired_se(self, coalition: frozenset[int], baseline: frozenset[int]) -> float | None:
        return paired_noise(self.utility, self._full(coalition), self._full(baseline))


def restrict(utility: Utility, members: Sequence[int]) -> Utility:
    """The sub-game on `members` (position j of the sub-game is player `members[j]`), keeping
    the utility's parallel `prefetch` if it has one."""
    return _Restricted(utility, members)


class CoalitionExecutor(Protocol):
    """Evaluates coalition models elsewhere (worker processes, a cluster), bit for bit as here."""

    @property
    def workers(self) -> int: ...

    def evaluate(self, utility: CoalitionUtility, coalitions: Sequence[frozenset[int]]) -> list[float]:
        """`float(utility.evaluate_fn(utility.model(c)))` for each coalition, in order."""
        ...


@dataclass(frozen=True)
class ScoreResult:
    """Scores by player, the number of distinct coalitions evaluated, and how they were found."""

    scores: dict[str, float]
    evaluations: int
    method: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


class Scorer(Protocol):
    name: ClassVar[str]

    def score(self, players: Sequence[str], utility: Utility, rng_seed: int) -> ScoreResult: ...


class _Memo:
    """Memoises the caller's utility, counts distinct evaluations and checks the values."""

    def __init__(self, utility: Utility):
        self._u = utility
        self.cache: dict[frozenset[int], float] = {}

    def __call__(self, coalition: frozenset[int]) -> float:
        v = self.cache.get(coalition)
        if v is None:
            raw = self._u(coalition)
            try:
                v = float(raw)
            except (TypeError, ValueError) as exc:
                raise ScoringError(f"utility returned {raw!r} for {sorted(coalition)}; return a float") from exc
            if not math.isfinite(v):
                raise ScoringError(f"utility of coalition {sorted(coalition)} is {v}; return a finite number")
            self.cache[coalition] = v
        return v

    @property
    def evaluations(self) -> int:
        return len(self.cache)

    @property
    def parallel(self) -> bool:
        return isinstance(self._u, BatchUtility) and bool(getattr(self._u, "parallel", False))

    def known(self, coalition: frozenset[int]) -> float | None:
        return self.cache.get(coalition)

    def prefetch(self, coalitions: Sequence[frozenset[int]]) -> dict[frozenset[int], float]:
        """Values of the coalitions not used yet, computed in parallel when the utility can (not
        counted as evaluations: they count when the scorer uses them); {} when it cannot."""
        todo = list(dict.fromkeys(c for c in coalitions if c not in self.cache))
        values = prefetch(self._u, todo) if todo else None
        return dict(zip(todo, values, strict=True)) if values is not None else {}


def _check_players(players: Sequence[str]) -> list[str]:
    ps = list(players)
    if len(set(ps)) != len(ps):
        raise ScoringError("a player appears twice; pass each trainer once")
    return ps


@dataclass(frozen=True)
class ExactShapley:
    """Exact Shapley values over all 2^n coalitions (n <= max_players)."""

    name: ClassVar[str] = "exact_shapley"
    max_players: int = 16

    def score(self, players: Sequence[str], utility: Utility, rng_seed: int = 0) -> ScoreResult:
        ps = _check_players(players)
        n = len(ps)
        if n > self.max_players:
            raise ScoringError(
                f"exact Shapley over {n} players needs 2^{n} utility evaluations; "
                f"use gtg_shapley (or raise max_players above {self.max_players})"
            )
        memo = _Memo(utility)
        if n == 0:
            memo(frozenset())
            return ScoreResult({}, memo.evaluations, self.name)
        every = [frozenset(i for i in range(n) if mask >> i & 1) for mask in range(1 << n)]
        memo.prefetch(every)
        v = [memo(c) for c in every]
        fact = [math.factorial(k) for k in range(n + 1)]
        weight = [fact[s] * fact[n - s - 1] / fact[n] for s in range(n)]
        pop = [m.bit_count() for m in range(1 << n)]
        scores = {}
        for i, p in enumerate(ps):
            bit = 1 << i
            scores[p] = math.fsum(weight[pop[m]] * (v[m | bit] - v[m]) for m in range(1 << n) if not m & bit)
        return ScoreResult(scores, memo.evaluations, self.name)


@dataclass(frozen=True)
class LeaveOneOut:
    """v(N) - v(N without i): n + 1 evaluations; blind to redundancy (two copies both score ~0)."""

    name: ClassVar[str] = "leave_one_out"

    def score(self, players: Sequence[str], utility: Utility, rng_seed: int = 0) -> ScoreResult:
        ps = _check_players(players)
        memo = _Memo(utility)
        everyone = frozenset(range(len(ps)))
        memo.prefetch([everyone, *(everyone - {i} for i in range(len(ps)))])
        full = memo(everyone)
        scores = {p: full - memo(everyone - {i}) for i, p in enumerate(ps)}
        return ScoreResult(scores, memo.evaluations, self.name)


@dataclass(frozen=True)
class Equal:
    """Every player scores 1 without evaluating anything: the allocation splits evenly over the
    accepted trainers. For simulations and benchmarks that measure something other than
    contributions (the model does not depend on the scores)."""

    name: ClassVar[str] = "equal"

    def score(self, players: Sequence[str], utility: Utility, rng_seed: int = 0) -> ScoreResult:
        return ScoreResult({p: 1.0 for p in _check_players(players)}, 0, self.name)


@dataclass(frozen=True)
class GTGShapley:
    """Guided truncated gradient Shapley (Monte Carlo over guided permutations).

    eps: within-round truncation; once |v(N) - v(prefix)| <= eps the rest of the permutation
        gets marginal 0 without evaluating anything. In utility units: the default 0.005 is half
        a point of validation accuracy.
    round_eps: between-round truncation; |v(N) - v(empty)| <= round_eps scores everyone 0
        (defaults to eps).
    tolerance: stop after a sweep (n guided permutations) that moved the estimate by less than
        tolerance x its L1 norm; at least min_sweeps sweeps, at most max_sweeps. The defaults
        (eps 0.005, tolerance 0.1) were tuned on benchmarks/scoring.py: Spearman ~0.95 to exact
        Shapley with ~20% of its evaluations at n = 10.
    max_evaluations: stop (after the current permutation) once this many distinct coalitions
        have been evaluated.
    """

    name: ClassVar[str] = "gtg_shapley"
    eps: float = 5e-3
    round_eps: float | None = None
    tolerance: float = 0.1
    min_sweeps: int = 2
    max_sweeps: int = 50
    max_evaluations: int | None = None

    def __post_init__(self) -> None:
        if self.eps < 0 or (self.round_eps is not None and self.round_eps < 0):
            raise RuleConfigError("gtg_shapley: eps and round_eps must be >= 0")
        if self.min_sweeps < 1 or self.max_sweeps < self.min_sweeps:
            raise RuleConfigError("gtg_shapley: need 1 <= min_sweeps <= max_sweeps")

    def score(self, players: Sequence[str], utility: Utility, rng_seed: int) -> ScoreResult:
        ps = _check_players(players)
        n = len(ps)
        memo = _Memo(utility)
        v0 = memo(frozenset())
        if n == 0:
            return ScoreResult({}, memo.evaluations, self.name)
        vn = memo(frozenset(range(n)))
        round_eps = self.eps if self.round_eps is None else self.round_eps
        if abs(vn - v0) <= round_eps:
            return ScoreResult({p: 0.0 for p in ps}, memo.evaluations, self.name, {"truncated_round": True})
        rng = DeterministicRNG(rng_seed)
        marginals: list[list[float]] = [[] for _ in range(n)]
        estimate = [0.0] * n
        sweeps = permutations = truncations = 0
        converged = False
        change = math.inf
        budget_hit = False
        while sweeps < self.max_sweeps and not budget_hit:
            # guided: every player leads one permutation of the sweep; the order in which the
            # leaders come is itself shuffled so a budget cut mid-sweep favours no one
            leaders = list(range(n))
            rng.shuffle(leaders)
            # the draws depend on no value, so a sweep's permutations can be drawn before any is
            # evaluated (the same stream, in the same order, as drawing each one when it starts)
            perms = []
            for lead in leaders:
                rest = [i for i in range(n) if i != lead]
                rng.shuffle(rest)
                perms.append([lead, *rest])
            self._prefetch_sweep(perms, memo, v0, vn)
            for perm in perms:
                prefix: set[int] = set()
                prev = v0
                for pos, player in enumerate(perm):
                    if abs(vn - prev) <= self.eps:
                        truncations += n - pos
                        for q in perm[pos:]:
                            marginals[q].append(0.0)
                        break
                    prefix.add(player)
                    cur = vn if pos == n - 1 else memo(frozenset(prefix))
                    marginals[player].append(cur - prev)
                    prev = cur
                permutations += 1
                if self.max_evaluations is not None and memo.evaluations >= self.max_evaluations:
                    budget_hit = True
                    break
            if budget_hit and not all(marginals):
                break
            sweeps += 1
            new = [math.fsum(m) / len(m) if m else 0.0 for m in marginals]
            if sweeps >= 2:
                norm = math.fsum(abs(x) for x in new)
                change = math.fsum(abs(a - b) for a, b in zip(new, estimate)) / max(norm, 1e-300)
            estimate = new
            if sweeps >= max(2, self.min_sweeps) and change < self.tolerance:
                converged = True
                break
        estimate = [math.fsum(m) / len(m) if m else 0.0 for m in marginals]
        return ScoreResult(
            {p: estimate[i] for i, p in enumerate(ps)},
            memo.evaluations,
            self.name,
            {
                "permutations": permutations,
                "sweeps": sweeps,
                "converged": converged,
                "last_change": change,
                "truncated_positions": truncations,
                "budget_exhausted": budget_hit,
            },
        )

    def _prefetch_sweep(self, perms: Sequence[Sequence[int]], memo: _Memo, v0: float, vn: float) -> None:
        """Ask the utility, one depth at a time, for the prefixes the sweep's permutations will
        evaluate: a permutation goes on past position k only if its prefix value so far is more
        than eps from v(N), which the values of earlier depths decide. No-op for a utility that
        evaluates one coalition at a time."""
        n = len(perms[0]) if perms else 0
        if not memo.parallel or n < 2:
            return
        fetched: dict[frozenset[int], float] = {}
        live = [(perm, v0) for perm in perms]
        for pos in range(n - 1):
            live = [(perm, prev) for perm, prev in live if abs(vn - prev) > self.eps]
            if not live:
                return
            wanted = [frozenset(perm[: pos + 1]) for perm, _ in live]
            fetched.update(memo.prefetch([c for c in wanted if c not in fetched]))
            nxt = []
            for (perm, _), c in zip(live, wanted, strict=True):
                value = memo.known(c)
                nxt.append((perm, fetched[c] if value is None else value))
            live = nxt


# ---------------------------------------------------------------------------------------------


class CoalitionUtility:
    """`v(S) = evaluate_fn(global + aggregate_fn(updates[S], weights[S]))`, memoised;
    `v(empty) = evaluate_fn(global)`. `evaluations` counts distinct coalitions evaluated.

    `ledger(coalition, measure)`, when given, decides the value of each new coalition: it may
    record `measure()` or replace it by a recorded value (see `aggregator.round.ledger`).

    `executor`, when given, measures what `prefetch` is asked for on its workers; each value is
    then used (and goes through the ledger) when the scorer asks for it, as if measured here.

    `losses_fn` (model vector -> per-sample validation losses `[m]`), when given, lets
    `paired_se(a, b)` measure the standard error of two coalitions' loss difference, through
    `paired_ledger(a, b, measure)` when that is given (here, not on the executor: two forward
    passes)."""

    def __init__(
        self,
        aggregate_fn: Callable[..., torch.Tensor],
        evaluate_fn: Callable[[torch.Tensor], float],
        updates: torch.Tensor,
        global_vector: torch.Tensor,
        weights: torch.Tensor | None = None,
        ledger: Callable[[frozenset[int], Callable[[], float]], float] | None = None,
        executor: CoalitionExecutor | None = None,
        losses_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        paired_ledger: Callable[[frozenset[int], frozenset[int], Callable[[], float]], float] | None = None,
    ):
        if updates.dim() != 2 or global_vector.dim() != 1:
            raise ScoringError("updates must be [n, d] and global_vector [d]; flatten them first")
        if updates.shape[1] != global_vector.shape[0]:
            raise ScoringError(
                f"updates have d={updates.shape[1]} but the global vector has "
                f"{global_vector.shape[0]} entries; use the same model layout"
            )
        self.aggregate_fn = aggregate_fn
        self.evaluate_fn = evaluate_fn
        self.updates = updates
        self.global_vector = global_vector
        self.weights = weights
        self.ledger = ledger
        self.executor = executor
        self.losses_fn = losses_fn
        self.paired_ledger = paired_ledger
        self.cache: dict[frozenset[int], float] = {}
        self.paired: dict[tuple[frozenset[int], frozenset[int]], float] = {}
        #: measured by the executor, not used yet
        self.measured: dict[frozenset[int], float] = {}

    @property
    def n(self) -> int:
        return int(self.updates.shape[0])

    @property
    def evaluations(self) -> int:
        return len(self.cache)

    def model(self, coalition: frozenset[int]) -> torch.Tensor:
        """The model vector the coalition's aggregate produces."""
        if not coalition:
            return self.global_vector
        idx = sorted(coalition)
        if idx[0] < 0 or idx[-1] >= self.n:
            raise ScoringError(f"coalition {idx} names players outside 0..{self.n - 1}")
        sub = self.updates[idx]
        if self.weights is None:
            agg = self.aggregate_fn(sub)
        else:
            agg = self.aggregate_fn(sub, self.weights[idx])
        return self.global_vector + agg

    @property
    def parallel(self) -> bool:
        return self.executor is not None and self.executor.workers > 1

    def prefetch(self, coalitions: Sequence[frozenset[int]]) -> list[float]:
        """Measure the coalitions not known yet on the executor's workers (all at once); their
        values, in order (a coalition already used: the value it got)."""
        keys = [frozenset(c) for c in coalitions]
        todo = list(dict.fromkeys(k for k in keys if k not in self.cache and k not in self.measured))
        if todo:
            outside = next((k for k in todo if k and (min(k) < 0 or max(k) >= self.n)), None)
            if outside is not None:
                raise ScoringError(f"coalition {sorted(outside)} names players outside 0..{self.n - 1}")
            values = self.executor.evaluate(self, todo) if self.executor is not None else [self._measure(k) for k in todo]
            self.measured.update(zip(todo, (float(v) for v in values), strict=True))
        return [self.cache[k] if k in self.cache else self.measured[k] for k in keys]

    def _measure(self, key: frozenset[int]) -> float:
        return float(self.evaluate_fn(self.model(key)))

    def paired_se(self, coalition: frozenset[int], baseline: frozenset[int]) -> float | None:
        """The standard error of the mean per-sample validation loss difference between the
        models of `coalition` and `baseline` (memoised); None without `losses_fn`."""
        losses = self.losses_fn
        if losses is None:
            return None
        key = (frozenset(coalition), frozenset(baseline))
        v = self.paired.get(key)
        if v is None:
            def measure() -> float:
                return paired_standard_error(losses(self.model(key[0])), losses(self.model(key[1])))

            v = measure() if self.paired_ledger is None else float(self.paired_ledger(key[0], key[1], measure))
            self.paired[key] = v
        return v

    def __call__(self, coalition: frozenset[int]) -> float:
        key = frozenset(coalition)
        v = self.cache.get(key)
        if v is None:
            def measure() -> float:
                early = self.measured.pop(key, None)
                return early if early is not None else self._measure(key)

            v = measure() if self.ledger is None else float(self.ledger(key, measure))
            self.cache[key] = v
        return v


def make_utility(
    aggregate_fn: Callable[..., torch.Tensor],
    evaluate_fn: Callable[[torch.Tensor], float],
    updates: torch.Tensor,
    global_vector: torch.Tensor,
    weights: torch.Tensor | None = None,
    ledger: Callable[[frozenset[int], Callable[[], float]], float] | None = None,
    executor: CoalitionExecutor | None = None,
    losses_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    paired_ledger: Callable[[frozenset[int], frozenset[int], Callable[[], float]], float] | None = None,
) -> CoalitionUtility:
    """A memoised coalition utility: the model of coalition S is `global + aggregate_fn(updates[S])`
    (`aggregate_fn(updates[S], weights[S])` when weights are given; every rule in `rules` fits),
    scored by `evaluate_fn(model_vector) -> float` (e.g. validation accuracy); `losses_fn` and
    `paired_ledger` as for `CoalitionUtility`."""
    return CoalitionUtility(aggregate_fn, evaluate_fn, updates, global_vector, weights, ledger, executor,
                            losses_fn, paired_ledger)


#: Every scorer by name (and alias): `SCORERS.get("gtg")` is the class.
SCORERS: Registry[Scorer] = Registry("scorer", error=RuleConfigError)
SCORERS.add(ExactShapley.name, ExactShapley, ("exact", "shapley"))
SCORERS.add(GTGShapley.name, GTGShapley, ("gtg",))
SCORERS.add(LeaveOneOut.name, LeaveOneOut, ("loo",))
SCORERS.add(Equal.name, Equal)


def make_scorer(spec: str) -> Scorer:
    """A scorer from a spec such as "gtg_shapley:eps=0.001,tolerance=0.05" or "exact"."""
    return SCORERS.build(spec)
