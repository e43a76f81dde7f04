"""The market side of a Flower ServerApp: the project's aggregator, run by the strategy.

`MarketRounds.open` and `attach` build exactly what `aggregator serve` builds (the `[market]` and
`[aggregator]` tables of market.toml, the signing account, the store, the journal, the
`AggregatorService`) and check up front that the project exists and that the account is its
aggregator; `create_project` is `market project create` for a run that brings its project file. `finalize(r)` is the service's own loop (`AggregatorService.run(once=True)`): it waits
for round r's reveal deadline and round r-1's challenge window, then runs the round (validation,
filters, robust rule, scoring, rewards, publish, finalize on chain), restartable from its journal,
pausing through IPFS or RPC outages. Nothing of a round is computed here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flwr.app import MetricRecordValues

from aggregator.journal import Journal
from aggregator.service import AggregatorService, KeySource
from aggregator.settings import AggregatorSettings, load_aggregator_settings
from flowerbridge.config import Account, BridgeConfig
from flowerbridge.errors import BridgeConfigError, BridgeError, RoundOutOfStep
from market.chain import MarketClient, ProjectInfo, RoundStatus, connect
from market.chain.deployment import Deployment
from market.cli.config import Settings, check_keys, load_settings, read_config
from market.cli.kit import pick_account
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.reading import is_settled, load_record
from market.storage import open_store
from trainer.errors import UnknownProject
from trainer.update import fetch_global_model

__all__ = ["MarketRounds", "RoundOutcome", "require_project"]


def require_project(client: MarketClient, project_id: int) -> ProjectInfo:
    """The project, or UnknownProject naming the range that exists."""
    count = client.project_count()
    if project_id < 1 or project_id > count:
        raise UnknownProject(
            f"no project {project_id} on the deployment at {client.address} (projects: 1..{count}):"
            " create it (`market project create`) or fix market-project in the run config"
        )
    return client.project(project_id)


def _aggregator_settings(config: Path | None) -> AggregatorSettings:
    found, tables = read_config(config)
    table = tables.get("aggregator")
    if found is not None and table is not None:
        check_keys(table, AggregatorSettings.model_fields, f"{found} [aggregator]")
    return load_aggregator_settings(table, found or "defaults")


@dataclass(frozen=True)
class RoundOutcome:
    """What one market round gave Flower: the next global model and the round record's figures."""

    round: int
    state: dict[str, torch.Tensor]
    model_cid: str
    record_cid: str
    record: RoundRecord
    seconds: float

    def metrics(self) -> dict[str, MetricRecordValues]:
        accepted = sum(1 for v in self.record.verdicts if v.accepted)
        rewarded = sum(1 for amount in self.record.rewards.values() if int(amount) > 0)
        return {
            "market-round": float(self.round),
            "market-accepted": float(accepted),
            "market-updates": float(len(self.record.verdicts)),
            "market-rewarded": float(rewarded),
            "market-accuracy-before": float(self.record.metrics["accuracy_before"]),
            "market-accuracy-after": float(self.record.metrics["accuracy_after"]),
            "market-seconds": self.seconds,
        }


class MarketRounds:
    """A project's rounds, run by its aggregator (the service's account)."""

    def __init__(self, settings: Settings, aggregator: AggregatorSettings, client: MarketClient, store: Any,
                 account: Account):
        self.settings = settings
        self.aggregator = aggregator
        self.store = store
        self.account = account
        self._client = client
        self._service: AggregatorService | None = None

    @classmethod
    def open(cls, config: BridgeConfig) -> MarketRounds:
        """Connect as the run config's aggregator; attach to its project when it names one."""
        s = load_settings(config.market_config)
        agg = _aggregator_settings(config.market_config)
        w3 = connect(s.rpc)
        account: Account = config.aggregator
        acct = pick_account(account.name, account.dev, s.keystore, int(w3.eth.chain_id))
        client = Deployment.load(s.deployment).client(w3, acct)
        rounds = cls(s, agg, client, open_store(s.ipfs), account)
        if config.project_id:
            rounds.attach(config.project_id)
        return rounds

    def attach(self, project_id: int) -> AggregatorService:
        """Serve `project_id`: the aggregator service, once the project and our role are checked."""
        require_project(self._client, project_id)
        journal = Journal.for_project(self.settings.state, int(self._client.w3.eth.chain_id), self._client.address,
                                      project_id)
        keys = KeySource(self.settings.keystore, self.settings.state, account=self.account.name, dev=self.account.dev)
        service = AggregatorService(self._client, self.store, project_id, self.aggregator, journal, keys=keys)
        service.check_role()  # an account that is not the project's aggregator stops here, in one line
        self._service = service
        return service

    def create_project(self, path: Path, owner: Account) -> int:
        """Create the project of project file `path` as `owner` (`market project create`'s steps:
        publish the spec and initial weights, escrow the budget); this aggregator then serves it."""
        from market.cli.app import publish_spec
        from market.cli.project_file import ProjectFile

        pf = ProjectFile.load(path)
        if pf.project.token.upper() != "ETH":
            raise BridgeConfigError(f"{path} pays in the token {pf.project.token}: create ERC-20 projects with"
                                    " `market project create` and pass market-project")
        w3 = self._client.w3
        acct = pick_account(owner.name, owner.dev, self.settings.keystore, int(w3.eth.chain_id))
        params = pf.params(pf.spec_cid or publish_spec(self.settings, pf), 18)
        project_id, _ = self._client.with_account(acct).create_project(params)
        self.attach(project_id)
        return project_id

    @property
    def service(self) -> AggregatorService:
        if self._service is None:
            raise BridgeError("no project attached yet: set market-project or market-project-file in the run config")
        return self._service

    @property
    def client(self) -> MarketClient:
        return self._client

    @property
    def project_id(self) -> int:
        return self.service.project_id

    @property
    def spec(self) -> ProjectSpec:
        return self.service.spec

    def project(self) -> ProjectInfo:
        return self.client.project(self.project_id)

    def open_round(self) -> int:
        """The project's open round, or RoundOutOfStep when it has none left."""
        info = self.project()
        if info.ended or info.current_round >= info.num_rounds:
            raise RoundOutOfStep(f"project {self.project_id} has no open round (all {info.num_rounds} finalized"
                                 f"{' and it ended' if info.ended else ''}): create a new project for this run")
        return int(info.current_round)

    def global_model(self, round_: int) -> tuple[dict[str, torch.Tensor], str]:
        """The weights round `round_` trains from (checked against its CID and the previous record)."""
        model = fetch_global_model(self.client, self.store, self.spec, self.project_id, round_,
                                   allow_model_code=self.aggregator.allow_user_models)
        return model.state, model.cid

    def finalize(self, round_: int) -> RoundOutcome:
        """Run round `round_` with the aggregator service (waiting for its deadlines) until it is
        finalized on chain; the model it published is the next round's base."""
        start = time.perf_counter()
        while self.client.round(self.project_id, round_).status == RoundStatus.NONE:
            if self.service.run(once=True) == 0 and self.client.round(self.project_id, round_).status == RoundStatus.NONE:
                raise RoundOutOfStep(f"the aggregator service stopped before round {round_} of project"
                                     f" {self.project_id} was finalized: see `aggregator status {self.project_id}`")
        seconds = time.perf_counter() - start
        event = next((f for f in self.client.finalized(self.project_id) if f.round == round_), None)
        if event is None:
            raise BridgeError(f"round {round_} of project {self.project_id} is not finalized (it expired?):"
                              " see `market project status`")
        record = load_record(self.store, event.record_cid)
        state, _ = self.global_model(round_ + 1)
        return RoundOutcome(round_, state, event.model_cid, event.record_cid, record, seconds)

    def wait_settled(self, round_: int, timeout: float = 3600.0) -> None:
        """Wait until round `round_` is claimable (its challenge window, and any ruling, are over)."""
        deadline = time.monotonic() + timeout
        while not is_settled(self.client, self.project_id, round_, self.client.block_number):
            if time.monotonic() > deadline:
                raise RoundOutOfStep(f"round {round_} of project {self.project_id} did not settle within"
                                     f" {timeout:.0f} s: is the chain mining?")
            time.sleep(self.aggregator.poll)

    def close(self) -> None:
        closer: Any = getattr(self.store, "close", None)
        if closer is not None:
            closer()
