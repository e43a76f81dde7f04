"""trainer.runner without Typer: the unattended loop on the embedded chain and an EmbeddedStore
joins, trains the open round from the chain's global model, submits it through the one state
machine, reports through its hooks, and claims nothing before anything is settled."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from market.chain import CommitState, MarketClient, ProjectParams
from market.chain.accounts import dev_account
from market.chain.deployment import Deployment
from market.models import ModelSpec, init_model
from market.protocol.codec import ModelHeader, decode_update, encode_model
from market.protocol.documents import ProjectSpec
from market.storage import EmbeddedStore
from trainer import runner
from trainer._session import Session
from trainer.config import TrainerSettings
from trainer.training import TrainProgress
from trainer.update import update_path

ETHER = 10**18


class Recorder:
    """Hooks that keep the lines, mine while the runner waits, and count training steps."""

    def __init__(self, client: MarketClient):
        self.client = client
        self.lines: list[str] = []
        self.steps = 0

    def line(self, message: str) -> None:
        self.lines.append(message)

    def wait(self, what: str, now: int, target: int) -> None:
        self.client.w3.provider.ethereum_tester.mine_blocks(max(1, target - now))  # type: ignore[attr-defined]

    @contextlib.contextmanager
    def training(self) -> Iterator[Callable[[TrainProgress], None]]:
        def step(_p: TrainProgress) -> None:
            self.steps += 1

        yield step


def test_run_joins_trains_submits_and_reports(embedded: tuple[MarketClient, Deployment], tmp_path: Path) -> None:
    owner, _ = embedded
    store = EmbeddedStore(tmp_path / "store")
    ms = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits")
    wcid = store.add(encode_model(init_model(ms, 0).state_dict(), ModelHeader(0, 0, ms.architecture)))
    spec = ProjectSpec(model=ms.model_copy(update={"initial_weights_cid": wcid}), hyperparams={"epochs": 1})
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=2, reward_per_round=ETHER,
        commit_window=8, reveal_window=10, challenge_window=2, spec_cid=store.add(spec.to_bytes()),
    ))
    me = dev_account(7)
    client = owner.with_account(me)
    settings = TrainerSettings(ipfs=f"embedded:{tmp_path / 'store'}", state=tmp_path / "state", shard="1/4",
                               behaviour="scaling:factor=2", poll_interval=0.01, wait_timeout=60,
                               train={"max_batches": 3, "batch_size": 16})
    hooks = Recorder(client)
    session = Session(settings, client, me)
    try:
        result = runner.run(session, pid, join=True, max_rounds=1, claim=True, hooks=hooks)
    finally:
        session.close()
    [entry] = result.rounds
    assert entry["stage"] == "revealed" and entry["behaviour"] == "scaling:factor=2.0" and entry["samples"] > 0
    assert result.claim is not None and result.claim["amount"] == 0 and result.claim["tx"] is None
    assert client.commitment_state(pid, 0, me.address) == CommitState.REVEALED
    assert hooks.steps == 3
    assert hooks.lines[0] == f"joined project {pid}"
    assert any("uploaded as" in line for line in hooks.lines) and any("revealed" in line for line in hooks.lines)
    assert hooks.lines[-1] == "nothing to claim"
    header, _ = decode_update(update_path(settings.state, pid, 0, me.address).read_bytes())
    assert (header.round, header.base_model_cid, header.trainer) == (0, wcid, me.address)
