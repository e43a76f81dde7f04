"""One round of aggregation: chain context -> fetched bytes -> one pure computation -> publish.

    context.load_context(client, store, project_id, round, available) -> RoundContext   (chain)
    inputs.gather_inputs(store, ctx, valset=, validation_cid=, config=) -> RoundInputs   (all I/O)
    compute.compute_from_inputs(inputs, config) -> Computed                              (pure)
        stages.PIPELINE: validate -> filter -> aggregate -> score -> reward -> adapt
    publish.publish_round(store, computed) -> Published                                  (store)
    -> finalizeRound on chain                                                           (the service)

`compute_round(ctx, store, config, valset, validation_cid)` is gather + compute, what the service
and the audit call; `replay.config_from_record(record)` is the config a record states. The
computation is pure and deterministic (`compute`), so the service after a restart, any auditor
and the in-memory simulation (`lab.inprocess`) get byte-identical model and record bytes.

A malformed update never stops a round: every failure (unreachable content, digest mismatch,
bad format, wrong round, NaN, copy, outlier, ...) becomes a rejected verdict with a stable
reason code. Only outages (the store or the node not answering) raise, so the service can pause
and resume without losing anything.
"""

from aggregator.round._determinism import deterministic
from aggregator.round.adapt import AdaptSchedule, adapt_hyperparams, initial_state
from aggregator.round.compute import Computed, compute_from_inputs, compute_round, decode_base_model
from aggregator.round.config import CODE_VERSION, UTILITY, RoundConfig
from aggregator.round.context import ReadStore, RoundContext, load_context
from aggregator.round.inputs import Fetched, RoundInputs, UpdateCache, fetch_updates, gather_inputs
from aggregator.round.publish import Published, WriteStore, publish_round
from aggregator.round.replay import config_from_record
from aggregator.round.stages import (
    PIPELINE,
    STAGES,
    ZERO_ADDRESS,
    Candidate,
    Evaluator,
    RoundState,
    Stage,
    allocate_rewards,
    utility_rule,
)

__all__ = [
    "CODE_VERSION",
    "PIPELINE",
    "STAGES",
    "UTILITY",
    "ZERO_ADDRESS",
    "AdaptSchedule",
    "Candidate",
    "Computed",
    "Evaluator",
    "Fetched",
    "Published",
    "ReadStore",
    "RoundConfig",
    "RoundContext",
    "RoundInputs",
    "RoundState",
    "Stage",
    "UpdateCache",
    "WriteStore",
    "adapt_hyperparams",
    "allocate_rewards",
    "compute_from_inputs",
    "compute_round",
    "config_from_record",
    "decode_base_model",
    "deterministic",
    "fetch_updates",
    "gather_inputs",
    "initial_state",
    "load_context",
    "publish_round",
    "utility_rule",
]
