"""The client side: `market_mod`, a Flower mod that turns an existing ClientApp into a market trainer.

Add it to the ClientApp (`ClientApp(mods=[market_mod])`); the app's own train and evaluate functions
stay as they are. On a message the `MarketStrategy` sent (its config names `market-project`):

- train: as this node's trainer (node config `market-account`, or in a simulation dev account
  `market-dev-trainers + partition-id`) join the project if needed (stake), fetch the open round's
  global model from IPFS (checked against its CID and the previous record) and put it in the message
  in place of the arrays the server sent, call the app's train function, turn the weights it returns
  into the market update (`trainer.update`: float32 delta against that base model, the project's
  client-level DP when its spec sets one, self-checked as the aggregator will check it), then
  `Participant.submit`: seal for the spec's recipients (`Participant.seal`), upload, commit, wait for
  the commit deadline, reveal. The reply carries the app's metrics and the submission, not weights.
- train with `market-warm-up` (before the first round): connect, and join an existing project,
  without training: the node is ready before a commit window runs.
- evaluate with `market-claim`: the app's evaluate function, then claim this trainer's rewards.

Every other message passes through, so without a market project the app is plain Flower. Failures
become an error reply whose reason is one line (what is wrong, then what to do); the strategy logs it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from flwr.app import (
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    MetricRecordValues,
    RecordDict,
)
from flwr.clientapp.typing import ClientAppCallable

from flowerbridge.config import Account, BridgeConfig
from flowerbridge.errors import BridgeConfigError, BridgeError
from market._text import one_line
from market.chain import MarketClient, connect
from market.chain.deployment import Deployment
from market.cli.kit import pick_account
from market.errors import MarketError
from market.protocol.codec import UpdateHeader, encode_update
from market.protocol.privacy import privatize_update
from trainer._session import store_for
from trainer.config import TrainerSettings, load_settings
from trainer.errors import InvalidUpdate, RoundMismatch, UnknownProject
from trainer.participant import Participant, SubmitTimings, effective_privacy, own_privacy
from trainer.update import check_update, fetch_global_model, model_template

__all__ = ["CLAIM_KEY", "PROJECT_KEY", "ROUND_KEY", "WARMUP_KEY", "MarketTrainer", "market_mod", "update_from_weights"]

#: Keys of the ConfigRecord the strategy sends (beside Flower's own "server-round").
PROJECT_KEY = "market-project"
ROUND_KEY = "market-round"
CLAIM_KEY = "market-claim"
WARMUP_KEY = "market-warm-up"
#: Error code of the error replies the mod sends (Flower's codes are small positive numbers).
ERROR_CODE = 4700


def update_from_weights(weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The float32 delta `weights - base`, keyed and ordered as `base` (the model's state_dict)."""
    missing = [k for k in base if k not in weights]
    extra = [k for k in weights if k not in base]
    if missing or extra:
        raise InvalidUpdate(f"the ClientApp returned weights that do not fit the project's model (missing {missing[:3]},"
                            f" unexpected {extra[:3]}): return ArrayRecord(model.state_dict()) of the project's architecture")
    out = {}
    for name, ref in base.items():
        value = weights[name]
        if tuple(value.shape) != tuple(ref.shape):
            raise InvalidUpdate(f"the ClientApp returned {name!r} with shape {list(value.shape)}, the project's model has"
                                f" {list(ref.shape)}: train the architecture the project's spec names")
        out[name] = (value.detach().to(torch.float32) - ref.to(torch.float32)).contiguous()
    return out


def _config(msg: Message) -> ConfigRecord | None:
    records = msg.content.config_records
    return next((rec for rec in records.values() if PROJECT_KEY in rec), None)


def _weights(reply: Message) -> dict[str, torch.Tensor]:
    arrays = list(reply.content.array_records.values())
    if len(arrays) != 1:
        raise InvalidUpdate(f"the ClientApp's train reply has {len(arrays)} ArrayRecords, the market needs exactly one"
                            " (the trained model's weights)")
    return dict(arrays[0].to_torch_state_dict())


def _metrics(reply: Message) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rec in reply.content.metric_records.values():
        out.update(dict(rec))
    return out


@dataclass
class MarketTrainer:
    """One node's trainer: its account, chain client, store and state (any project of the deployment)."""

    settings: TrainerSettings
    client: MarketClient
    participant: Participant
    timings: dict[tuple[int, int], SubmitTimings] = field(default_factory=dict)

    @classmethod
    def open(cls, account: Account, market_config: Path | None) -> MarketTrainer:
        settings = load_settings(market_config)
        w3 = connect(settings.rpc)
        acct = pick_account(account.name, account.dev, settings.keystore, int(w3.eth.chain_id))
        client = Deployment.load(settings.deployment).client(w3, acct)
        participant = Participant(client, store_for(settings), settings.state, poll_interval=settings.poll_interval,
                                  privacy=own_privacy(settings.dp))
        return cls(settings, client, participant)

    @property
    def address(self) -> str:
        return self.participant.address

    def require_project(self, project_id: int) -> None:
        count = self.client.project_count()
        if project_id < 1 or project_id > count:
            raise UnknownProject(f"no project {project_id} on the deployment at {self.client.address} (projects:"
                                 f" 1..{count}): check market-project and the deployment in market.toml")

    def warm_up(self, msg: Message, project_id: int) -> Message:
        """Answer the strategy's warm-up: this node is up, connected and (for an existing project)
        registered, so its first round spends the commit window on training alone."""
        if project_id:
            self.require_project(project_id)
            self.participant.join(project_id)
            self.participant.spec(project_id)
        ready = ConfigRecord({"trainer": self.address})
        return Message(RecordDict({"metrics": MetricRecord({"market-ready": 1}), "market": ready}), reply_to=msg)

    def train(self, msg: Message, context: Context, call_next: ClientAppCallable, pid: int, round_: int) -> Message:
        p = self.participant
        self.require_project(pid)
        info = self.client.project(pid)
        if info.current_round != round_:
            raise RoundMismatch(f"the server asked for round {round_} of project {pid}, but round {info.current_round}"
                                " is open: the run and the chain are out of step; start a new run")
        p.join(pid)  # the stake, once
        spec = p.spec(pid)
        base = fetch_global_model(self.client, p.store, spec, pid, round_,
                                  allow_model_code=self.settings.allow_model_code)
        # the app trains from the chain's model, whatever arrays the message carried
        for key in list(msg.content.array_records):
            msg.content[key] = ArrayRecord(base.state)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        delta = update_from_weights(_weights(reply), base.state)
        metrics = _metrics(reply)
        policy = effective_privacy(spec, own_privacy(self.settings.dp))
        if policy is not None:
            # a fresh OS seed: noise that anyone can derive could be subtracted again
            generator = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "big") >> 1)
            delta, _ = privatize_update(delta, policy, generator)
        claimed = int(metrics.get("num-examples", 0))
        header = UpdateHeader(pid, round_, base.cid, self.address, claimed)
        data = encode_update(delta, header)
        template = model_template(spec, allow_model_code=self.settings.allow_model_code)
        check_update(data, spec, template, project_id=pid, round_=round_, base_model_cid=base.cid, trainer=self.address)
        timings = SubmitTimings()
        state = p.submit(pid, round_, data, timeout=self.settings.wait_timeout, timings=timings)
        self.timings[pid, round_] = timings
        numbers: dict[str, MetricRecordValues] = {
            k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        numbers |= {"market-round": round_, "market-upload-s": timings.upload, "market-commit-s": timings.commit,
                    "market-wait-s": timings.wait, "market-reveal-s": timings.reveal}
        submission = ConfigRecord({"trainer": self.address, "cid": state.cid, "digest": state.digest,
                                   "update-sha256": "0x" + hashlib.sha256(data).hexdigest(),
                                   "commit-tx": state.commit_tx or "", "reveal-tx": state.reveal_tx or ""})
        return Message(RecordDict({"metrics": MetricRecord(numbers), "market": submission}), reply_to=msg)

    def claim(self, reply: Message, project_id: int) -> Message:
        claimed = self.participant.claim(project_id)
        if not reply.has_error():
            reply.content["market"] = ConfigRecord({"trainer": self.address, "claimed-wei": str(claimed.amount),
                                                    "cumulative-wei": str(claimed.cumulative),
                                                    "claim-tx": claimed.tx or ""})
        return reply


_lock = threading.Lock()


@functools.cache
def _trainer(account: Account, market_config: Path | None) -> MarketTrainer:
    # one per node account in this process: a Ray actor runs many rounds, for several nodes
    return MarketTrainer.open(account, market_config)


def trainer_for(context: Context, project_id: int) -> MarketTrainer:
    """This node's trainer, after checking `project_id` (what the server asks for) against the run config."""
    config = BridgeConfig.from_run_config(context.run_config)
    if not config.enabled:
        raise BridgeConfigError(f"the server asks for project {project_id} but this run's market-project is 0: run the"
                                " ServerApp and ClientApp with the same run config")
    if config.project_id and project_id and config.project_id != project_id:
        raise BridgeConfigError(f"the server asks for project {project_id} but this run's market-project is"
                                f" {config.project_id}: run the ServerApp and ClientApp with the same run config")
    account = config.trainer_account(context.node_config)
    with _lock:
        return _trainer(account, config.node_market_config(context.node_config))


def _error_reply(msg: Message, exc: BaseException) -> Message:
    return Message(Error(code=ERROR_CODE, reason=one_line(exc)), reply_to=msg)


def market_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The Flower mod (see the module docstring)."""
    config = _config(msg)
    if config is None:
        return call_next(msg, context)
    kind = msg.metadata.message_type.split(".")[0]
    try:
        project = _number(config, PROJECT_KEY)
        trainer = trainer_for(context, project)
        if kind == MessageType.TRAIN and config.get(WARMUP_KEY):
            return trainer.warm_up(msg, project)
        if kind == MessageType.TRAIN:
            if ROUND_KEY not in config:
                raise BridgeError(f"a market train message without {ROUND_KEY}: the ServerApp must use MarketStrategy")
            return trainer.train(msg, context, call_next, project, _number(config, ROUND_KEY))
        reply = call_next(msg, context)
        if kind == MessageType.EVALUATE and config.get(CLAIM_KEY):
            return trainer.claim(reply, project)
        return reply
    except MarketError as exc:
        return _error_reply(msg, exc)


def _number(config: ConfigRecord, key: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BridgeError(f"the server's {key} is {value!r}, not a whole number: the ServerApp must use MarketStrategy")
    return value
