"""`MarketStrategy`: a Flower strategy whose every round is one market round.

It wraps another strategy (FedAvg, say), the way Flower's differential-privacy strategies wrap one:
the inner strategy still samples the nodes and builds the messages, and still aggregates the
evaluation metrics; only the training aggregation is replaced, by the market's.

    configure_train(r)   the inner strategy's messages, carrying the project's global model for the
                         open market round (read from the chain and IPFS, checked against its CID)
                         and the keys the client mod needs (`market-project`, `market-round`)
    aggregate_train(r)   the replies carry no weights (the update went to IPFS, its commitment to
                         the chain); wait for the reveal deadline, run the aggregator service's round
                         (validation, filters, robust rule, scoring, rewards, publish, finalize) and
                         return the model it published, with the record's figures as metrics
    configure_evaluate   after the last round: wait until it settles, then ask the clients to claim

Before round 1, `start` warms every node up (and, for a run that brings its project file, creates
the project), so the first commit window is not spent starting Ray. Flower round k (from 1) is
market round `first + k - 1`, where `first` is the round open when the run starts: a run started
on a half-done project finishes it. Flower's own aggregation of client
weights never happens.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from flowerbridge.client import CLAIM_KEY, PROJECT_KEY, ROUND_KEY, WARMUP_KEY
from flowerbridge.config import BridgeConfig
from flowerbridge.errors import BridgeConfigError, BridgeError, RoundOutOfStep
from flowerbridge.server import MarketRounds, RoundOutcome
from market._text import one_line

__all__ = ["MarketStrategy"]

#: a child of Flower's logger, so the lines land in the run's log beside Flower's own
log = logging.getLogger("flwr.flowerbridge")


class MarketStrategy(Strategy):
    """`strategy` with the market's round in place of its training aggregation."""

    def __init__(self, strategy: Strategy, rounds: MarketRounds, config: BridgeConfig):
        self.strategy = strategy
        self.rounds = rounds
        self.config = config
        self.first_round = 0
        self.num_rounds = 0
        self.outcomes: dict[int, RoundOutcome] = {}
        #: wall seconds per Flower round: (configure_train start, aggregate_train end)
        self.timings: dict[int, tuple[float, float]] = {}
        self.warm_up_seconds = 0.0

    @classmethod
    def from_run_config(cls, strategy: Strategy, run_config: Mapping[str, Any]) -> MarketStrategy:
        """The strategy for the project the run config names (flowerbridge.config), its
        aggregator connected and (an existing project) its role checked."""
        try:
            config = BridgeConfig.from_run_config(run_config)
            if not config.enabled:
                raise BridgeConfigError("market-project is 0 and no market-project-file is given: set market-project to"
                                        " the project id (`market project create` prints it)")
            _route_service_log()
            return cls(strategy, MarketRounds.open(config), config)
        except Exception as exc:
            log.error("flowerbridge: %s", one_line(exc))
            raise

    def market_round(self, server_round: int) -> int:
        return self.first_round + server_round - 1

    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Flower's round loop over the project's remaining rounds, from the chain's global model:
        `initial_arrays` and `num_rounds` give way to the project's (a difference is logged).

        First every node gets a warm-up message (connect, join) and answers it; then, for a run
        that brings its project file, the project is created; so no commit window runs while Ray
        and the ClientApps start."""
        start = time.perf_counter()
        self.warm_up(grid, timeout)
        if self.config.project_file is not None:
            pid = self.rounds.create_project(self.config.project_file, self.config.owner)
            log.info("flowerbridge: created project %d from %s", pid, self.config.project_file)
        self.warm_up_seconds = time.perf_counter() - start
        self.first_round = self.rounds.open_round()
        self.num_rounds = int(self.rounds.project().num_rounds) - self.first_round
        if num_rounds != self.num_rounds:
            log.info("flowerbridge: running the project's %d remaining round(s) (num_rounds was %d)",
                     self.num_rounds, num_rounds)
        state, _ = self.rounds.global_model(self.first_round)
        return super().start(grid, ArrayRecord(state), self.num_rounds, timeout, train_config, evaluate_config,
                             evaluate_fn)

    def warm_up(self, grid: Grid, timeout: float) -> None:
        """Send every sampled node a warm-up train message and wait for all answers."""
        project = self.rounds.project_id if self.config.project_id else 0
        config = ConfigRecord({PROJECT_KEY: project, WARMUP_KEY: True})
        messages = list(self.strategy.configure_train(0, ArrayRecord(), config, grid))
        replies = list(grid.send_and_receive(messages, timeout=timeout))
        failed = [m for m in replies if m.has_error()]
        for msg in failed:
            log.warning("flowerbridge: node %d failed its warm-up: %s", msg.metadata.src_node_id, msg.error.reason)
        if failed or len(replies) < len(messages):
            raise BridgeError(f"{len(failed) + len(messages) - len(replies)} of {len(messages)} nodes failed the warm-up"
                              " (their reasons are logged above): fix them before a commit window runs")
        log.info("flowerbridge: %d nodes ready", len(replies))

    # -- training ------------------------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        r = self.market_round(server_round)
        self.timings[server_round] = (time.perf_counter(), 0.0)
        open_round = self.rounds.open_round()
        if open_round != r:
            raise RoundOutOfStep(f"Flower round {server_round} is market round {r}, but round {open_round} of project"
                                 f" {self.rounds.project_id} is open: start a new run (it resumes at the open round)")
        state, cid = self.rounds.global_model(r)
        log.info("flowerbridge: Flower round %d = market round %d, global model %s", server_round, r, cid)
        config = ConfigRecord({**dict(config), PROJECT_KEY: self.rounds.project_id, ROUND_KEY: r})
        return self.strategy.configure_train(server_round, ArrayRecord(state), config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        r = self.market_round(server_round)
        replies = list(replies)
        for msg in replies:
            if msg.has_error():
                log.warning("flowerbridge: node %d did not submit to round %d: %s", msg.metadata.src_node_id, r,
                            msg.error.reason)
        outcome = self.rounds.finalize(r)
        self.outcomes[server_round] = outcome
        self.timings[server_round] = (self.timings[server_round][0], time.perf_counter())
        metrics = outcome.metrics()
        log.info("flowerbridge: round %d finalized: %d/%d updates accepted, %d rewarded, accuracy %.4f -> %.4f;"
                 " record %s", r, metrics["market-accepted"], metrics["market-updates"], metrics["market-rewarded"],
                 metrics["market-accuracy-before"], metrics["market-accuracy-after"], outcome.record_cid)
        return ArrayRecord(outcome.state), MetricRecord(metrics)

    # -- evaluation and the claim --------------------------------------------------------------

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        if server_round == self.num_rounds:
            last = self.market_round(server_round)
            log.info("flowerbridge: waiting for round %d to settle, then the clients claim", last)
            self.rounds.wait_settled(last)
            config = ConfigRecord({**dict(config), PROJECT_KEY: self.rounds.project_id, CLAIM_KEY: True})
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)

    def summary(self) -> None:
        log.info("flowerbridge: market project %d, rounds %d..%d, aggregator %s; nodes sampled by %s",
                 self.rounds.project_id, self.first_round, self.first_round + self.num_rounds - 1,
                 self.rounds.client.account_address, type(self.strategy).__name__)
        self.strategy.summary()


def _route_service_log() -> None:
    """The aggregator service's one-line progress ("waiting for the reveal deadline", "published",
    "finalized") into the run's log, through Flower's own handlers."""
    service_log = logging.getLogger("aggregator")
    service_log.handlers[:] = logging.getLogger("flwr").handlers
    service_log.setLevel(logging.INFO)
    service_log.propagate = False
