"""The trainer's side of the manual path (issue 10), one test per friction class, without a stack:
the one config file, outages survived with a visible "reconnecting" state, a chain without a clock
named at once, training that cannot make the commit window stopped early, and the CSV label
column."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from market.errors import ConfigError, IntegrityError, NodeUnreachable, StorageUnavailable
from trainer.config import TrainerSettings, label_column, load_settings
from trainer.errors import DeadlinePassed, WindowTooShort
from trainer.runner import WindowGuard, automine_hint, is_automine, through_outages, waiter
from trainer.training import TrainProgress

# ---------------------------------------------------------------------- one config file


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "market.toml"
    path.write_text(text)
    return path


def test_trainer_reads_the_market_table_of_market_toml(tmp_path: Path) -> None:
    """[market] says where things are; the trainer follows its ports and state directory."""
    cfg = _write(tmp_path, '[market]\nanvil_port = 18545\nipfs_api_port = 15001\nstate = "st"\n'
                           '[trainer]\ndata = "digits"\naccount = "alice"\n')
    s = load_settings(cfg)
    assert s.rpc == "http://127.0.0.1:18545"
    assert s.ipfs == "/ip4/127.0.0.1/tcp/15001/http"
    assert s.deployment == (tmp_path / "st" / "deployment.json").resolve()
    assert s.keystore == (tmp_path / "st" / "keystore").resolve()
    assert s.state == (tmp_path / "st" / "trainer").resolve()
    assert (s.data, s.account) == ("digits", "alice")


def test_the_default_file_is_market_toml_and_flags_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MARKET_CONFIG", raising=False)
    assert load_settings() == TrainerSettings()  # no file: defaults
    (tmp_path / "trainer.toml").write_text('[trainer]\nrpc = "http://127.0.0.1:1"\n')
    assert load_settings() == TrainerSettings()  # the old file name is not read any more
    _write(tmp_path, '[market]\nrpc = "http://127.0.0.1:9999"\n[trainer]\nstate = "mine"\n')
    s = load_settings()
    assert s.rpc == "http://127.0.0.1:9999" and s.state == (tmp_path / "mine").resolve()
    assert s.merged(rpc="http://127.0.0.1:7777").rpc == "http://127.0.0.1:7777"
    monkeypatch.setenv("MARKET_CONFIG", str(tmp_path / "elsewhere.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_a_trainer_key_overrides_the_market_key_it_inherits(tmp_path: Path) -> None:
    cfg = _write(tmp_path, '[market]\nanvil_port = 18545\n[trainer]\nrpc = "http://127.0.0.1:28545"\n')
    assert load_settings(cfg).rpc == "http://127.0.0.1:28545"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[trainer]\ndta = "digits"\n', "did you mean 'data'"),
        ('[trainer]\nwait_timout = 5\n', "did you mean 'wait_timeout'"),
        ('[market]\nanvil_prot = 1\n', "did you mean 'anvil_port'"),
        ('[trainr]\ndata = "digits"\n', "did you mean 'trainer'"),
        ('[trainer]\nthreads = "2"\n', "wrong type"),
        ('[trainer]\nlabel_noise = 2\n', "label_noise"),
    ],
)
def test_the_file_is_strict(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        load_settings(_write(tmp_path, text)).validate()


def test_label_column_is_an_index_or_a_name(tmp_path: Path) -> None:
    assert label_column("0") == 0 and label_column("-1") == -1 and label_column("label") == "label"
    assert load_settings(_write(tmp_path, '[trainer]\nlabel_column = "target"\n')).label_column == "target"
    assert TrainerSettings().merged(label_column="3").label_column == 3
    with pytest.raises(ConfigError):
        label_column(" ")


def test_the_label_column_reaches_the_csv_loader(tmp_path: Path) -> None:
    from market.protocol.documents import ProjectSpec
    from trainer.update import load_trainer_data

    csv = tmp_path / "d.csv"
    csv.write_text("target,a,b\n" + "".join(f"{i % 3},{i},{i + 1}\n" for i in range(12)))
    spec = ProjectSpec.model_validate({"model": {"architecture": "logreg", "input_shape": [2], "num_classes": 3,
                                                 "dataset": "custom", "initial_weights_cid": "Qm" + "x" * 44},
                                       "validation": {}, "hyperparams": {}})
    ds = load_trainer_data(TrainerSettings(data=str(csv), label_column="target"), spec)
    assert ds.y.tolist() == [i % 3 for i in range(12)] and tuple(ds.x.shape) == (12, 2)


# ---------------------------------------------------------------------- outages


@dataclass
class Lines:
    lines: list[str] = field(default_factory=list)
    waits: int = 0

    def line(self, message: str) -> None:
        self.lines.append(message)

    def wait(self, what: str, now: int, target: int) -> None:
        self.waits += 1

    @contextlib.contextmanager
    def training(self) -> Iterator[Callable[[TrainProgress], None]]:
        yield lambda _p: None


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _flaky(errors: list[BaseException], result: str = "done") -> Callable[[], str]:
    def fn() -> str:
        if errors:
            raise errors.pop(0)
        return result
    return fn


def test_an_outage_of_more_than_a_minute_is_survived_and_shown() -> None:
    """A node and an IPFS API down for ~90 s (raw connection errors included): the step is
    retried, "reconnecting" shows (not once per retry), and the recovery is said."""
    clock, hooks = FakeClock(), Lines()
    errors: list[BaseException] = [NodeUnreachable("the node does not answer")] * 10 + [
        requests.exceptions.ConnectionError("HTTPConnectionPool(host='127.0.0.1'): refused")] * 8 + [
        StorageUnavailable("the IPFS API does not answer")] * 5
    out = through_outages(hooks, 300.0, "waiting for the commit deadline", _flaky(errors), sleep=clock.sleep, clock=clock)
    assert out == "done" and not errors and clock.now > 60
    shown = [line for line in hooks.lines if line.startswith("reconnecting")]
    assert 1 <= len(shown) < 23 and "waiting for the commit deadline" in shown[0]
    assert hooks.lines[-1].startswith("reconnected after")


def test_an_outage_longer_than_the_budget_ends_with_the_error() -> None:
    clock, hooks = FakeClock(), Lines()
    with pytest.raises(NodeUnreachable):
        through_outages(hooks, 60.0, "x", _flaky([NodeUnreachable("down")] * 1000), sleep=clock.sleep, clock=clock)
    assert hooks.lines[-1].startswith("gave up reconnecting")


def test_a_wrong_input_is_not_retried() -> None:
    clock, hooks = FakeClock(), Lines()
    with pytest.raises(IntegrityError):
        through_outages(hooks, 300.0, "x", _flaky([IntegrityError("bytes do not match")]), sleep=clock.sleep, clock=clock)
    assert hooks.lines == [] and clock.now == 0


# ---------------------------------------------------------------------- a chain without a clock


class FakeProvider:
    def __init__(self, automine: bool | None):
        self.automine = automine
        self.calls = 0

    def make_request(self, method: str, params: list[Any]) -> dict[str, Any]:
        self.calls += 1
        assert method == "anvil_getAutomine"
        if self.automine is None:
            return {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "method not found"}}
        return {"jsonrpc": "2.0", "id": 1, "result": self.automine}


@dataclass
class FakeW3:
    provider: FakeProvider


@dataclass
class FakeClient:
    w3: FakeW3


@dataclass
class FakeSession:
    client: FakeClient


@pytest.mark.parametrize(("automine", "hint"), [(True, True), (False, False), (None, False)])
def test_waiting_on_a_chain_without_a_clock_says_what_to_do_at_once(automine: bool | None, hint: bool) -> None:
    provider, hooks = FakeProvider(automine), Lines()
    on_wait = waiter(FakeSession(FakeClient(FakeW3(provider))), hooks)  # type: ignore[arg-type]
    for now in (10, 10, 10):
        on_wait("commit deadline", now, 50)
    assert hooks.waits == 3 and provider.calls == 1  # asked once, at the first poll
    assert [line for line in hooks.lines if "market stack up --block-time 1" in line] == (
        [automine_hint("commit deadline", 10, 50)] if hint else [])
    assert is_automine(FakeW3(provider)) is bool(automine)


# ---------------------------------------------------------------------- the commit window


def test_training_that_cannot_make_the_window_stops_early(monkeypatch: pytest.MonkeyPatch) -> None:
    """Paced from the first batch on: 3 batches in 3 s, 96 to go -> ~96 s more > 16 s left."""
    ticks = iter([1.0, 2.0, 3.0, 4.0])
    monkeypatch.setattr("trainer.runner.time.perf_counter", lambda: next(ticks))
    guard = WindowGuard(round=2, seconds_left=20.0, after=4.0, started=0.0)
    guard(TrainProgress(1, 100, 1, 1))  # the first batch: the pace starts here (set-up excluded)
    guard(TrainProgress(2, 100, 1, 1))  # too early to judge
    guard(TrainProgress(3, 100, 1, 1))
    with pytest.raises(WindowTooShort, match="round 2: training needs ~96 s more") as info:
        guard(TrainProgress(4, 100, 1, 1))
    assert isinstance(info.value, DeadlinePassed)  # `trainer train` exits with the deadline code


def test_training_that_fits_or_a_chain_without_clock_is_not_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([1.0, 1.1, 1.2, 1.3, 1.4])
    monkeypatch.setattr("trainer.runner.time.perf_counter", lambda: next(ticks))
    guard = WindowGuard(round=0, seconds_left=20.0, after=4.0, started=0.0)
    for step in range(1, 6):
        guard(TrainProgress(step, 50, 1, 1))  # 0.1 s a batch, 45 to go: ~4.5 s + 4 s < ~18.6 s left
    WindowGuard(round=0, seconds_left=None, after=0.0)(TrainProgress(5, 10 ** 9, 1, 1))


# ---------------------------------------------------------------------- an outage in a real wait


def test_run_resumes_a_submission_through_an_outage(embedded: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node stops answering (raw connection errors) while the trainer waits for the commit
    deadline: the submission resumes from its stored state, commits once and reveals."""
    from market.chain import CommitState, MarketClient, ProjectParams
    from market.chain.accounts import dev_account
    from market.models import ModelSpec, init_model
    from market.protocol.codec import ModelHeader, encode_model
    from market.protocol.documents import ProjectSpec
    from market.storage import EmbeddedStore
    from trainer import runner
    from trainer._session import Session

    owner, _ = embedded
    store = EmbeddedStore(tmp_path / "store")
    ms = ModelSpec(architecture="logreg", input_shape=(64,), num_classes=10, dataset="digits")
    wcid = store.add(encode_model(init_model(ms, 0).state_dict(), ModelHeader(0, 0, ms.architecture)))
    spec = ProjectSpec(model=ms.model_copy(update={"initial_weights_cid": wcid}), hyperparams={"epochs": 1})
    pid, _ = owner.create_project(ProjectParams(
        aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1, reward_per_round=10**18,
        commit_window=8, reveal_window=10, challenge_window=2, spec_cid=store.add(spec.to_bytes()),
    ))
    me = dev_account(8)
    client = owner.with_account(me)
    real = MarketClient.block_number
    down = {"polls": 0}

    def flaky(self: MarketClient) -> int:
        if down["polls"] > 0:
            down["polls"] -= 1
            raise requests.exceptions.ConnectionError("HTTPConnectionPool(host='127.0.0.1', port=8545): refused")
        return int(real.fget(self))  # type: ignore[attr-defined]

    monkeypatch.setattr(MarketClient, "block_number", property(flaky))

    class Outage(Lines):
        def wait(self, what: str, now: int, target: int) -> None:
            if what == "commit deadline" and self.waits == 0:
                down["polls"] = 3  # the node goes away at the first poll of the wait
            else:
                client.w3.provider.ethereum_tester.mine_blocks(max(1, target - now))  # type: ignore[attr-defined]
            self.waits += 1

    hooks = Outage()
    settings = TrainerSettings(ipfs=f"embedded:{tmp_path / 'store'}", state=tmp_path / "state", poll_interval=0.01,
                               wait_timeout=60, train={"max_batches": 2, "batch_size": 16})
    session = Session(settings, client, me)
    try:
        result = runner.run(session, pid, join=True, max_rounds=1, hooks=hooks)
    finally:
        session.close()
    assert result.rounds[0]["stage"] == "revealed", result.rounds
    assert client.commitment_state(pid, 0, me.address) == CommitState.REVEALED
    assert len(client.commits(pid, 0)) == 1  # resumed, never committed twice
    assert any(line.startswith("reconnecting (round 0: submitting)") for line in hooks.lines), hooks.lines
    assert any(line.startswith("reconnected after") for line in hooks.lines), hooks.lines
