"""Whole marketplaces on the local stack: the demo and experiment grids.

A scenario starts its own anvil + IPFS daemon, deploys, creates a project with an escrowed budget,
starts the aggregator service and one OS process per trainer (each its own key, its own private
shard, its own scripted behaviour) through their command-line tools, watches the chain while the
rounds run, runs the audit, and writes a report. Everything it started is stopped by PID.

`market` never imports `trainer` or `aggregator`: the scenario drives them as separate programs,
exactly as separate parties would run them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Table

from aggregator.round import RoundConfig
from aggregator.service import DEV_KEY_PASSWORD, dev_encryption_key
from dashboard.server import DashboardServer
from dashboard.service import DashboardConfig
from devnet.ports import free_port, pick_ipfs_api_port
from devnet.stack import Stack
from lab.backends import Backend, LocalBackend
from lab.report import ProjectReport, collect, write_html
from market.chain import MarketClient, connect
from market.chain.accounts import PASSWORD_ENV, Keystore, dev_account
from market.chain.deployment import deploy
from market.cli.config import read_toml
from market.cli.project_file import ProjectFile
from market.errors import ConfigError, SimulationError
from market.protocol.privacy import DpPolicy
from market.storage import open_store

if TYPE_CHECKING:
    from lab.inprocess import RunSpec

OWNER, AGGREGATOR, ARBITER, FIRST_TRAINER = 0, 1, 2, 3


class TrainerPlan(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    behaviour: str = "honest"
    label_noise: float = Field(default=0.0, ge=0.0, le=1.0)

    @property
    def malicious(self) -> bool:
        return self.behaviour.split(":")[0] != "honest"

    @property
    def quality(self) -> float:
        """The truth the report plots rewards against: clean labels and honest behaviour."""
        return 0.0 if self.malicious else 1.0 - self.label_noise


class Scenario(BaseModel):
    """One marketplace run. Defaults: the README's demo."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "demo"
    trainers: list[TrainerPlan] = Field(
        default_factory=lambda: [TrainerPlan()] * 8 + [TrainerPlan(behaviour="sign_flip:k=4"), TrainerPlan(behaviour="free_rider:mode=zero")]
    )
    rounds: int = Field(default=5, ge=1)
    dataset: str = "mnist5k"
    architecture: str = "mnist_cnn"
    input_shape: list[int] = Field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    partition: str = "iid"
    seed: int = 0
    rule: str | None = None
    scorer: str | None = None
    validation: str | None = None
    reward_per_round: str = "1 ether"
    stake: str = "0.01 ether"
    # Windows in blocks. Every transaction mines a block, so the commit window must hold every
    # trainer's registration and commit; the scenario's clock fast-forwards once all have acted.
    commit_window: int = 60
    reveal_window: int = 40
    challenge_window: int = 10
    #: Seconds the clock waits for stragglers in a phase before ticking one block per second.
    grace: float = 90.0
    epochs: int = 2
    lr: float = 0.05
    batch_size: int = 32
    timeout: float = 900.0
    #: Updates sealed for the aggregator, an auditor and the arbiter (keys made by the scenario);
    #: False: plaintext updates, as before issue 14.
    encrypted: bool = True
    #: Client-level DP every trainer applies (the project's `[privacy]`); None: none.
    privacy: DpPolicy | None = None

    @property
    def validation_set(self) -> str:
        # The validation split must not be drawn with the partition's seed: both take the first
        # slice of the same permutation, and trainer 0 would hold the whole validation set.
        return self.validation or f"{self.dataset}:size=500,seed={self.seed + 7919}"

    def project_toml(self, recipients: dict[str, tuple[str, str]] | None = None) -> str:
        """The project file; `recipients`: name -> (role, public key hex) for `[recipients]`. The
        scenario's rule, scorer and validation set are the project's policy (`[validation.defence]`)."""
        extra: list[str] = ["[validation.defence]", f"validation = {json.dumps(self.validation_set)}"]
        extra += [f"{k} = {json.dumps(v)}" for k, v in (("rule", self.rule), ("scorer", self.scorer)) if v]
        for name, (role, key) in sorted((recipients or {}).items()):
            extra += [f"[recipients.{name}]", f'role = "{role}"', f'key = "{key}"']
        if self.privacy is not None:
            extra += ["[privacy]"] + [f"{k} = {json.dumps(v)}" for k, v in self.privacy.model_dump(mode="json").items()]
        return "\n".join(
            [
                "[project]",
                f"rounds = {self.rounds}",
                f'reward_per_round = "{self.reward_per_round}"',
                f'stake = "{self.stake}"',
                f"commit_window = {self.commit_window}",
                f"reveal_window = {self.reveal_window}",
                f"challenge_window = {self.challenge_window}",
                f'aggregator = "dev:{AGGREGATOR}"',
                f'arbiter = "dev:{ARBITER}"',
                "[model]",
                f'architecture = "{self.architecture}"',
                f"input_shape = {json.dumps(self.input_shape)}",
                f"num_classes = {self.num_classes}",
                f'dataset = "{self.dataset}"',
                f"seed = {self.seed}",
                "[hyperparams]",
                f"epochs = {self.epochs}",
                f"lr = {self.lr}",
                f"batch_size = {self.batch_size}",
                *extra,
                "",
            ]
        )


@dataclass
class ScenarioResult:
    scenario: Scenario
    project_id: int
    report: ProjectReport
    audit_ok: bool
    audit_output: str
    exit_codes: dict[str, int]
    seconds: float
    out_dir: Path
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        acc = self.report.accuracy()
        cum = self.report.final_cumulative()
        total = sum(cum.values())
        verdicts = self.report.verdict_summary()
        mal = [t for t, v in self.truth.items() if v["malicious"]]
        flagged = [t for t, v in verdicts.items() if v["rejected"] > 0]
        tp = len(set(mal) & set(flagged))
        return {
            "scenario": self.scenario.name,
            "rule": self.scenario.rule or "default",
            "final_accuracy": acc[-1][1] if acc else None,
            "honest_share": self.report.honest_share(),
            "malicious_paid": sum(cum.get(t, 0) for t in mal) / total if total else 0.0,
            "filter_precision": tp / len(flagged) if flagged else 1.0,
            "filter_recall": tp / len(mal) if mal else 1.0,
            "audit_ok": self.audit_ok,
            "seconds": round(self.seconds, 1),
        }


def stop_on_sigterm() -> None:
    """Let SIGTERM unwind like Ctrl-C, so a killed scenario still stops every process it started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


class _Procs:
    """Child processes of one scenario; every one is stopped by its PID at the end."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
        )

    def running(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def codes(self) -> dict[str, int]:
        return {n: (p.returncode if p.returncode is not None else -1) for n, p in self.procs.items()}

    def tail(self, name: str, lines: int = 5) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait()


def run_scenario(scenario: Scenario, out_dir: Path, *, console: Console | None = None, live: bool = True,
                 dashboard: bool = False) -> ScenarioResult:
    """Run one scenario end to end on a fresh local stack in `out_dir`; with `dashboard`, serve the
    live dashboard (`market dashboard`) on a free loopback port while it runs and print its address."""
    console = console or Console()
    started = time.monotonic()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    state = out_dir / "state"
    logs = out_dir / "logs"
    logs.mkdir(parents=True)
    stack = Stack(state_dir=state / "stack", anvil_port=free_port(), ipfs_api_port=pick_ipfs_api_port())
    procs = _Procs(logs)
    board: DashboardServer | None = None
    try:
        with console.status("starting anvil and the IPFS daemon..."):
            stack.up()
        rpc, ipfs = stack.anvil.url, stack.ipfs.api_multiaddr
        w3 = connect(rpc)
        dep = deploy(w3, dev_account(OWNER), rpc)
        dep_file = state / "deployment.json"
        dep.save(dep_file)
        owner = dep.client(w3, dev_account(OWNER))
        store = open_store(ipfs)
        project_file = out_dir / "project.toml"
        recipients, auditor_key = _scenario_keys(state) if scenario.encrypted else ({}, None)
        project_file.write_text(scenario.project_toml(recipients))
        pf = ProjectFile.load(project_file)
        spec_cid = store.add(pf.spec(store).to_bytes())
        project_id, _ = owner.create_project(pf.params(spec_cid))
        console.print(f"project [bold]{project_id}[/] created on {rpc}; {scenario.rounds} rounds x {scenario.reward_per_round} escrowed")
        if dashboard:
            board = DashboardServer(DashboardConfig(rpc, dep_file, ipfs, poll=1.0), "127.0.0.1", 0)
            console.print(f"dashboard: [bold]{board.start()}/p/{project_id}[/] (live while the demo runs)")

        common = ["--rpc", rpc, "--deployment", str(dep_file), "--ipfs", ipfs]
        py = sys.executable
        agg = [py, "-m", "aggregator.cli", "serve", str(project_id), "--until-done", "--dev-account", str(AGGREGATOR),
               "--state", str(state / "aggregator"), *common]
        procs.start("aggregator", agg)
        n = len(scenario.trainers)
        truth: dict[str, dict[str, Any]] = {}
        for i, plan in enumerate(scenario.trainers):
            acct = dev_account(FIRST_TRAINER + i)
            label = f"t{i}" + ("" if not plan.malicious else f"-{plan.behaviour.split(':')[0]}") + (
                f"-noise{plan.label_noise:g}" if plan.label_noise else ""
            )
            truth[acct.address] = {"label": label, "quality": plan.quality, "malicious": plan.malicious, "behaviour": plan.behaviour}
            argv = [py, "-m", "trainer.cli", "run", str(project_id), "--join", "--claim", "--dev-account", str(FIRST_TRAINER + i),
                    "--data", scenario.dataset, "--shard", f"{i}/{n}", "--partition", scenario.partition,
                    "--partition-seed", str(scenario.seed), "--behaviour", plan.behaviour, "--threads", "1",
                    "--state", str(state / f"trainer{i}"), "--timeout", str(scenario.timeout), *common]
            if plan.label_noise:
                argv += ["--label-noise", str(plan.label_noise)]
            procs.start(label, argv)

        clock = Clock(stack.anvil, owner, project_id, scenario, expected=len(scenario.trainers))
        _watch(owner, store, project_id, scenario, procs, console, live, started, clock)
        codes = procs.codes()
        failed = {k: v for k, v in codes.items() if v != 0}
        if failed:
            raise SimulationError(
                f"processes failed: {failed}; last lines of {next(iter(failed))}: {procs.tail(next(iter(failed)), 3)!r}"
                f" (logs in {logs})"
            )
        # the auditor's audit rebuilds every round; in an encrypted project an outsider's audit
        # checks what needs no update bytes and must pass too
        keyed = ["--key-file", str(auditor_key)] if auditor_key is not None else []
        env = {**os.environ, PASSWORD_ENV: DEV_KEY_PASSWORD}
        audit = subprocess.run(
            [py, "-m", "aggregator.cli", "audit", str(project_id), *keyed, *common], capture_output=True, text=True,
            timeout=600, check=False, env=env,
        )
        (logs / "audit.log").write_text(audit.stdout + audit.stderr)
        if auditor_key is not None:
            keyless = subprocess.run(
                [py, "-m", "aggregator.cli", "audit", str(project_id), *common], capture_output=True, text=True,
                timeout=600, check=False,
            )
            (logs / "audit-keyless.log").write_text(keyless.stdout + keyless.stderr)
            if keyless.returncode != 0:
                audit = keyless
        roles: dict[str, str] = {dev_account(OWNER).address: "owner", dev_account(AGGREGATOR).address: "aggregator",
                 dev_account(ARBITER).address: "arbiter"}
        report = collect(owner, store, project_id, roles=roles, truth=truth)
        write_html(report, out_dir / "report")
        store.close()
        return ScenarioResult(scenario, project_id, report, audit.returncode == 0, audit.stdout, codes,
                              time.monotonic() - started, out_dir, truth)
    finally:
        if board is not None:
            board.stop()
        procs.stop_all()
        stack.down()


def _scenario_keys(state: Path) -> tuple[dict[str, tuple[str, str]], Path]:
    """Encryption keys for the aggregator (in its state dir, where `aggregator serve --dev-account`
    looks), an auditor and the arbiter (in the scenario's keystore), all with the dev password;
    returns the recipients and the auditor's key file."""
    keystore = Keystore(state / "keystore")
    keystore.directory.mkdir(parents=True, exist_ok=True)
    recipients = {"aggregator": ("aggregator", dev_encryption_key(state / "aggregator", AGGREGATOR))}
    for name in ("auditor", "arbiter"):
        recipients[name] = (name, keystore.new_encryption_key(name, DEV_KEY_PASSWORD))
    return recipients, keystore.directory / "auditor.x25519.pem"


class Clock:
    """The scenario's time: anvil mines a block per transaction, and the clock mines the rest.

    A phase (commit, reveal) is fast-forwarded to its deadline as soon as every trainer has acted
    in it; otherwise the clock waits `grace` seconds for stragglers (a trainer process still
    importing torch), then ticks one block per second, as a real chain would. Outside those phases
    (waiting for the aggregator, challenge windows before claims) it ticks one block per second.
    """

    def __init__(self, anvil: Any, client: MarketClient, project_id: int, scenario: Scenario, expected: int):
        self.anvil, self.client, self.project_id = anvil, client, project_id
        self.scenario, self.expected = scenario, expected
        self.phase: tuple[int, str] | None = None
        self.phase_started = time.monotonic()
        self.last_tick = 0.0

    def step(self) -> None:
        info = self.client.project(self.project_id)
        block = self.client.block_number
        r = info.current_round
        if info.ended or r >= info.num_rounds:
            phase, done = (r, "after"), False
        elif block <= info.commit_deadline:
            phase, done = (r, "commit"), len(self.client.commits(self.project_id, r)) >= self.expected
            if done:
                self.anvil.mine(info.commit_deadline - block + 1)
                return
        elif block <= info.reveal_deadline:
            committed = len(self.client.commits(self.project_id, r))
            phase, done = (r, "reveal"), len(self.client.reveals(self.project_id, r)) >= committed
            if done:
                self.anvil.mine(info.reveal_deadline - block + 1)
                return
        else:
            phase, done = (r, "aggregate"), False
        if phase != self.phase:
            self.phase, self.phase_started = phase, time.monotonic()
        waiting_for_people = phase[1] in ("commit", "reveal")
        if waiting_for_people and time.monotonic() - self.phase_started < self.scenario.grace:
            return
        if time.monotonic() - self.last_tick >= 1.0:
            self.anvil.mine(1)
            self.last_tick = time.monotonic()


def _watch(client: MarketClient, store: Any, project_id: int, scenario: Scenario, procs: _Procs,
           console: Console, live: bool, started: float, clock: Clock) -> None:
    """Poll the chain until every process has exited; show a live table of the rounds."""
    from market.protocol.reading import load_record

    accuracy: dict[int, float] = {}

    def table() -> Table:
        info = client.project(project_id)
        t = Table(title=f"project {project_id}: block {client.block_number}, {time.monotonic() - started:.0f} s")
        t.add_column("round")
        t.add_column("state")
        t.add_column("commits", justify="right")
        t.add_column("reveals", justify="right")
        t.add_column("accuracy", justify="right")
        for f in client.finalized(project_id):
            if f.round not in accuracy:
                accuracy[f.round] = load_record(store, f.record_cid).metrics.get("accuracy_after", float("nan"))
        for r in range(scenario.rounds):
            if r < info.current_round:
                state = "finalized"
            elif r == info.current_round:
                state = "commit" if client.block_number <= info.commit_deadline else (
                    "reveal" if client.block_number <= info.reveal_deadline else "aggregating")
            else:
                state = "-"
            commits = len(client.commits(project_id, r)) if r <= info.current_round else 0
            reveals = len(client.reveals(project_id, r)) if r <= info.current_round else 0
            acc = f"{accuracy[r] * 100:.1f}%" if r in accuracy else ""
            t.add_row(str(r), state, str(commits), str(reveals), acc)
        t.caption = f"{len(procs.running())} of {len(procs.procs)} processes running"
        return t

    deadline = time.monotonic() + scenario.timeout
    if live:
        with Live(table(), console=console, refresh_per_second=1) as view:
            while procs.running():
                if time.monotonic() > deadline:
                    raise SimulationError(f"the scenario did not finish within {scenario.timeout:.0f} s")
                for _ in range(3):
                    clock.step()
                    time.sleep(0.5)
                view.update(table())
    else:
        # no live table (grids, --json): a progress line (on the given console: stderr) when a round
        # closes and at least every 30 s, so a long run never looks stuck
        said: tuple[int, float] = (-1, 0.0)
        while procs.running():
            if time.monotonic() > deadline:
                raise SimulationError(f"the scenario did not finish within {scenario.timeout:.0f} s")
            clock.step()
            time.sleep(0.5)
            current = client.project(project_id).current_round
            if current != said[0] or time.monotonic() - said[1] > 30:
                said = (current, time.monotonic())
                console.print(f"{scenario.name}: {current} of {scenario.rounds} round(s) finalized,"
                              f" {len(procs.running())} of {len(procs.procs)} processes running,"
                              f" {time.monotonic() - started:.0f} s", highlight=False)


# ---------------------------------------------------------------------- grids


class Grid(BaseModel):
    """`market simulate --config scenario.toml`: a base scenario and axes to sweep.

    ```toml
    [base]                 # any Scenario field
    rounds = 3
    [grid]
    rule = ["trimmed_mean:beta=0.2", "median"]
    attack = ["sign_flip:k=4", "gaussian_noise:sigma=1"]
    malicious_fraction = [0.2, 0.4]
    alpha = [0.5]           # Dirichlet non-IID; omit for IID
    seed = [0, 1]
    trainers = 5
    ```
    """

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(default_factory=dict)
    grid: dict[str, Any] = Field(default_factory=dict)

    def scenarios(self) -> list[Scenario]:
        g = dict(self.grid)
        n = int(g.pop("trainers", 10))
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in g.items()}
        allowed = {"rule", "attack", "malicious_fraction", "alpha", "seed", "label_noise"}
        unknown = set(axes) - allowed
        if unknown:
            raise ConfigError(f"[grid] has unknown axes {sorted(unknown)}: use {sorted(allowed)}")
        keys = list(axes)
        out = []
        for values in itertools.product(*(axes[k] for k in keys)) if keys else [()]:
            point = dict(zip(keys, values))
            fields = dict(self.base)
            if "trainers" not in fields or {"attack", "malicious_fraction", "label_noise"} & set(point):
                bad = round(n * float(point.get("malicious_fraction", 0.0)))
                attack = str(point.get("attack", "honest"))
                noise = float(point.get("label_noise", 0.0))
                fields["trainers"] = [TrainerPlan(label_noise=noise if i % 2 else 0.0) for i in range(n - bad)] + [
                    TrainerPlan(behaviour=attack)
                ] * bad
            fields["name"] = "_".join(f"{k}={v}" for k, v in point.items()) or "base"
            if "rule" in point:
                fields["rule"] = point["rule"]
            if "seed" in point:
                fields["seed"] = int(point["seed"])
            if "alpha" in point:
                fields["partition"] = f"dirichlet:{point['alpha']}"
            try:
                out.append(Scenario.model_validate(fields))
            except ValidationError as exc:
                first = exc.errors()[0]
                raise ConfigError(f"scenario {fields['name']}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        return out

    @classmethod
    def load(cls, path: Path) -> Grid:
        try:
            return cls.model_validate(read_toml(path))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


ENGINES = ("stack", "memory")


def run_grid(grid: Grid, out_dir: Path, console: Console, *, backend: Backend | None = None,
             engine: str = "stack") -> list[dict[str, Any]]:
    """Every point of `grid`, on `backend` (default: here, one after the other).

    engine "stack": each point is a whole marketplace on its own local stack (`run_scenario`).
    engine "memory": each point is the in-memory federation of `lab.inprocess` (the trainers'
    and the aggregator's code, no chain, no IPFS): deterministic, so the same seeds give the same
    round records, byte for byte, and the same results.json on any backend; every record is
    written to `<point>/records/round-<r>.json` and the rows carry their SHA-256.
    Wall times go to timings.json (results.json holds only what the seeds decide)."""
    if engine not in ENGINES:
        raise ConfigError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
    runner: Backend = backend or LocalBackend()
    scenarios = grid.scenarios()
    started = time.monotonic()
    console.print(f"{len(scenarios)} grid point(s), engine {engine}, backend {runner.name}", highlight=False)
    if engine == "stack":
        results = runner.map(_stack_point, [(sc, out_dir / sc.name) for sc in scenarios])
    else:
        points = runner.map(_memory_point, [memory_spec(sc) for sc in scenarios])
        results = []
        for sc, (row, records, seconds) in zip(scenarios, points, strict=True):
            records_dir = out_dir / sc.name / "records"
            if records_dir.exists():
                shutil.rmtree(records_dir)
            records_dir.mkdir(parents=True)
            for r, data in enumerate(records):
                (records_dir / f"round-{r}.json").write_bytes(data)
            results.append((row, seconds))
    rows = [row for row, _ in results]
    for row in rows:
        console.print(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(rows, indent=2))
    timings = {"backend": runner.name, "engine": engine, "seconds": round(time.monotonic() - started, 3),
               "points": {row["scenario"]: round(sec, 3) for row, sec in results}}
    (out_dir / "timings.json").write_text(json.dumps(timings, indent=2))
    with open(out_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    _plot_grid(rows, out_dir)
    return rows


def _stack_point(point: tuple[Scenario, Path]) -> tuple[dict[str, Any], float]:
    sc, run_dir = point
    console = Console(stderr=True)
    console.rule(sc.name)
    result = run_scenario(sc, run_dir, console=console, live=False)
    row = result.summary()
    return row, float(row.pop("seconds"))


def memory_spec(sc: Scenario) -> tuple[str, RunSpec, RoundConfig]:
    """The in-memory federation run a scenario describes (`lab.inprocess.RunSpec` and the service's
    round config with the scenario's rule and scorer); a ConfigError for what it cannot run."""
    from lab.inprocess import MODELS, RunSpec, service_config

    model = MODELS.get(sc.dataset)
    if model is None or model.architecture != sc.architecture:
        known = ", ".join(f"{d} ({m.architecture})" for d, m in MODELS.items())
        raise ConfigError(f"scenario {sc.name}: engine memory runs {known}; got {sc.dataset} with {sc.architecture}")
    n = len(sc.trainers)
    bad = [t for t in sc.trainers if t.malicious]
    attacks = {t.behaviour for t in bad}
    if len(attacks) > 1 or any(t.malicious for t in sc.trainers[: n - len(bad)]):
        raise ConfigError(f"scenario {sc.name}: engine memory needs one attack, on the last trainers; use engine stack")
    config = dataclasses.replace(service_config(), rule=sc.rule or service_config().rule, scorer=sc.scorer or "auto")
    noise = tuple(t.label_noise for t in sc.trainers) if any(t.label_noise for t in sc.trainers) else ()
    spec = RunSpec(rule=config.rule, attack=attacks.pop() if attacks else "none", fraction=len(bad) / n,
                   partition=sc.partition, dataset=sc.dataset, n=n, rounds=sc.rounds, epochs=sc.epochs, lr=sc.lr,
                   batch_size=sc.batch_size, seed=sc.seed, score=True, noise=noise, dp=sc.privacy)
    return sc.name, spec, config


def _memory_point(point: tuple[str, RunSpec, RoundConfig]) -> tuple[dict[str, Any], list[bytes], float]:
    """One in-memory run: its summary row, its round records' bytes, its wall time."""
    from lab.inprocess import simulate

    name, spec, config = point
    projects: list[Any] = []
    out = simulate(spec, config=config, on_round=lambda p: projects.append(p) if not projects else None)
    records = [r.to_bytes() for r in projects[0].records]
    bad = set(out["malicious"])
    cum = {int(t): v for t, v in out["cumulative_rewards"].items()}
    total = sum(cum.values())
    verdicts = [v for rnd in out["rounds"] for v in rnd["verdicts"]]
    flagged = {v["trainer"] for v in verdicts if not v["accepted"]}
    tp = len(bad & flagged)
    digest = hashlib.sha256()
    for data in records:
        digest.update(hashlib.sha256(data).digest())
    row = {
        "scenario": name,
        "rule": spec.rule,
        "final_accuracy": out["final_test_accuracy"],
        "honest_share": sum(v for t, v in cum.items() if t not in bad) / total if total else None,
        "malicious_paid": sum(v for t, v in cum.items() if t in bad) / total if total else 0.0,
        "filter_precision": tp / len(flagged) if flagged else 1.0,
        "filter_recall": tp / len(bad) if bad else 1.0,
        "records_sha256": "0x" + digest.hexdigest(),
    }
    return row, records, float(out["seconds"])


def _plot_grid(rows: list[dict[str, Any]], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, len(rows) * 0.8), 3.5))
    ax.bar([r["scenario"] for r in rows], [(r["final_accuracy"] or 0) * 100 for r in rows])
    ax.set_ylabel("final accuracy (%)")
    ax.tick_params(axis="x", rotation=60)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=110)
    plt.close(fig)


__all__ = [
    "ENGINES", "Grid", "Scenario", "ScenarioResult", "SimulationError", "TrainerPlan", "memory_spec", "run_grid", "run_scenario",
    "stop_on_sigterm",
]
