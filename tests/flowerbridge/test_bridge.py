"""The bridge's pieces without Flower's engine: its configuration keys, the update it makes from a
ClientApp's weights, the mod on messages that are not the market's, and its one-line failures
(an unknown project, an account that is not the aggregator, malformed keys) with their exit codes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict

from aggregator.errors import AggregatorError
from aggregator.settings import AggregatorSettings
from flowerbridge import (
    PROJECT_KEY,
    ROUND_KEY,
    Account,
    BridgeConfig,
    BridgeConfigError,
    MarketRounds,
    market_mod,
    parse_account,
    require_project,
    update_from_weights,
)
from market.chain.accounts import dev_account
from market.cli.config import Settings
from market.errors import ExitCode
from market.storage import open_store
from trainer.errors import InvalidUpdate, UnknownProject

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------- configuration


def test_run_config_keys_parse_with_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "market.toml"
    toml.write_text("[market]\n")
    cfg = BridgeConfig.from_run_config({"market-project": 3, "market-config": str(toml), "market-aggregator": "agg",
                                        "market-dev-trainers": 5, "lr": 0.1})
    assert (cfg.project_id, cfg.market_config, cfg.aggregator, cfg.dev_trainers) == (3, toml.resolve(), Account("agg"), 5)
    assert cfg.enabled
    plain = BridgeConfig.from_run_config({"num-server-rounds": 2})
    assert not plain.enabled and plain.aggregator == Account(dev=1) and plain.dev_trainers is None


@pytest.mark.parametrize(
    ("run_config", "says"),
    [
        ({"market-project": "one"}, "market-project = 'one' is not a whole number"),
        ({"market-project": -2}, "market-project = -2 must be at least 0"),
        ({"market-project": True}, "is not a whole number"),
        ({"market-projcet": 1}, "unknown run-config key 'market-projcet'"),
        ({"market-project": 1, "market-config": "/no/such/market.toml"}, "no such file"),
        ({"market-project": 1, "market-aggregator": "dev:x"}, "dev:N with N a number"),
        ({"market-project": 1, "market-aggregator": ""}, "market-aggregator is ''"),
    ],
)
def test_malformed_run_config_is_one_config_line(run_config: dict[str, object], says: str) -> None:
    with pytest.raises(BridgeConfigError) as info:
        BridgeConfig.from_run_config(run_config)  # type: ignore[arg-type]
    assert says in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == ExitCode.CONFIG


def test_a_project_id_and_a_project_file_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(BridgeConfigError, match="not both"):
        BridgeConfig.from_run_config({"market-project": 2, "market-project-file": str(ROOT / "examples/flower/project.toml")})


def test_the_trainer_account_comes_from_the_node_config_else_the_partition() -> None:
    cfg = BridgeConfig(project_id=1, dev_trainers=3)
    assert cfg.trainer_account({"partition-id": 2, "num-partitions": 3}) == Account(dev=5)
    assert cfg.trainer_account({"market-account": "alice", "partition-id": 2}) == Account("alice")
    assert parse_account("dev:7", "k") == Account(dev=7)
    with pytest.raises(BridgeConfigError, match="market-account in its node config"):
        BridgeConfig(project_id=1).trainer_account({"partition-id": 0})


# ---------------------------------------------------------------------- the update


def test_the_update_is_the_float32_delta_in_the_base_models_order() -> None:
    base = {"b.weight": torch.ones(2, 2), "a.bias": torch.zeros(3)}
    weights = {"a.bias": torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), "b.weight": torch.full((2, 2), 3.0)}
    delta = update_from_weights(weights, base)
    assert list(delta) == ["b.weight", "a.bias"]
    assert torch.equal(delta["b.weight"], torch.full((2, 2), 2.0)) and delta["a.bias"].dtype == torch.float32


@pytest.mark.parametrize(
    ("weights", "says"),
    [({"w": torch.ones(2)}, "missing ['v']"), ({"w": torch.ones(3), "v": torch.ones(1)}, "shape [3]")],
)
def test_weights_that_do_not_fit_the_model_are_refused(weights: dict[str, torch.Tensor], says: str) -> None:
    with pytest.raises(InvalidUpdate, match=r".*" + says.replace("[", r"\[").replace("]", r"\]")):
        update_from_weights(weights, {"w": torch.ones(2), "v": torch.ones(1)})


# ---------------------------------------------------------------------- the mod


@pytest.fixture()
def task_identity() -> Iterator[None]:
    """What Flower sets in the process of a ClientApp before it builds a Message."""
    from flwr.supercore.task_identity import TaskIdentity

    before = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 7
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = before


def _context(run_config: dict[str, object]) -> Context:
    return Context(run_id=1, node_id=7, node_config={"partition-id": 0, "num-partitions": 1}, state=RecordDict(),
                   run_config=run_config)  # type: ignore[arg-type]


def _train_message(config: dict[str, object]) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": torch.ones(2)}), "config": ConfigRecord(config)})  # type: ignore[arg-type]
    return Message(content, dst_node_id=7, message_type="train")


def test_the_mod_passes_plain_flower_messages_through(task_identity: None) -> None:
    seen: list[Message] = []

    def call_next(msg: Message, ctx: Context) -> Message:
        seen.append(msg)
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    msg = _train_message({"server-round": 1})
    reply = market_mod(msg, _context({"market-project": 0}), call_next)
    assert seen == [msg] and not reply.has_error()


def test_the_mod_answers_a_project_the_run_config_does_not_name_with_one_line(task_identity: None) -> None:
    def call_next(msg: Message, ctx: Context) -> Message:  # pragma: no cover - must not be reached
        raise AssertionError("the app must not train for a project its run config does not name")

    reply = market_mod(_train_message({PROJECT_KEY: 5, ROUND_KEY: 0}), _context({"market-project": 0}), call_next)
    assert reply.has_error()
    assert "market-project is 0" in reply.error.reason and "\n" not in reply.error.reason
    reply = market_mod(_train_message({PROJECT_KEY: 5, ROUND_KEY: 0}), _context({"market-project": 4}), call_next)
    assert "asks for project 5 but this run's market-project is 4" in reply.error.reason


# ---------------------------------------------------------------------- the chain (in-process eth-tester)


def _rounds(embedded: tuple, tmp_path: Path, dev: int) -> MarketRounds:  # type: ignore[type-arg]
    client, _ = embedded
    store = open_store(f"embedded:{tmp_path / 'store'}")
    return MarketRounds(Settings(state=tmp_path / "state"), AggregatorSettings(),
                        client.with_account(dev_account(dev)), store, Account(dev=dev))


def test_an_unknown_project_is_one_line_with_its_exit_code(embedded: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    rounds = _rounds(embedded, tmp_path, 1)
    with pytest.raises(UnknownProject) as info:
        rounds.attach(99)
    assert "no project 99" in str(info.value) and "market-project" in str(info.value)
    assert info.value.exit_code == ExitCode.UNKNOWN_PROJECT
    with pytest.raises(UnknownProject):
        require_project(rounds.client, 0)


def test_an_account_that_is_not_the_aggregator_is_refused_before_any_round(embedded: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from market.chain import ProjectParams

    client, _ = embedded
    params = ProjectParams(aggregator=dev_account(1).address, arbiter=dev_account(2).address, num_rounds=1,
                           reward_per_round=10**18, commit_window=5, reveal_window=5, challenge_window=2,
                           spec_cid="QmSEXATxYCUAnDUbNJrKG3edm8ajXRnCUqdNZHEwC4ATPp")
    project_id, _ = client.create_project(params)
    with pytest.raises(AggregatorError) as info:
        _rounds(embedded, tmp_path, 4).attach(project_id)
    assert "is not the aggregator of project" in str(info.value)
    assert info.value.exit_code == ExitCode.AGGREGATOR
    assert _rounds(embedded, tmp_path, 1).attach(project_id).project_id == project_id


# ---------------------------------------------------------------------- the check command


def test_check_prints_one_line_and_the_config_exit_code(tmp_path: Path) -> None:
    app = ROOT / "examples" / "flower"
    done = subprocess.run(
        [sys.executable, "-m", "flowerbridge", "check", str(app), "--run-config", "market-project='x'"],
        check=False, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )
    assert done.returncode == ExitCode.CONFIG, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "market-project = 'x' is not a whole number" in lines[0]
    plain = subprocess.run([sys.executable, "-m", "flowerbridge", "check", str(app)], check=False, capture_output=True,
                           text=True, timeout=120, cwd=ROOT)
    assert plain.returncode == 0 and "plain Flower run" in plain.stdout


# ---------------------------------------------------------------------- the local SuperLink's environment


def test_every_flwr_process_runs_without_phone_home_and_on_loopback(tmp_path: Path) -> None:
    import tomllib

    from flowerbridge.local import CONNECTION, LocalSuperLink, flower_env

    env = flower_env(tmp_path, {"PATH": "/usr/bin"})
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    assert env["RAY_USAGE_STATS_ENABLED"] == "0" and env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1" and env["FLWR_HOME"] == str(tmp_path)
    assert str(ROOT) in env["PYTHONPATH"].split(":") and env["PATH"].endswith("/usr/bin")
    link = LocalSuperLink(tmp_path, port=45678)
    written = tomllib.loads(link.write_connection(3).read_text())
    assert written["superlink"]["default"] == CONNECTION
    assert written["superlink"][CONNECTION] == {"address": "127.0.0.1:45678", "insecure": True}
    assert link.federation_config.split() == ["num-supernodes=3", "client-resources-num-cpus=1", "init-args-num-cpus=3",
                                              "init-args-log-to-driver=false"]
