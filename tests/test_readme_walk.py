"""The README's manual walk, run as written: an owner, two trainers, an aggregator and an auditor.

The ```bash blocks of the README's sections "The local stack and an owner's commands", "A
trainer's commands" and "The aggregator and the audit" are the walk; they run in document order in
ONE bash session (as a reader runs them in one terminal: `&` jobs started in one block are `wait`ed
for in a later one), with `set -euo pipefail`, in a temporary copy of the checkout (the `examples/`
the README names, and `.venv` linked). The test fills in only what a reader must: the ports in the
README's `market.toml` (free ones, so the walk never meets another chain on this machine) and the
password prompts (`$MARKET_PASSWORD`). Examples that are not part of the walk are ```sh blocks.

Before the last block (`market stack down`) the test reads the outcome with `--json`: both
trainers claimed rewards, the project ended with no stake left in it, and the audit passes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
WALK_SECTIONS = (
    "The local stack and an owner's commands",
    "A trainer's commands",
    "The aggregator and the audit",
)
#: The ports the README's market.toml shows, which the test replaces by free ones.
README_ANVIL_PORT, README_IPFS_PORT = 8545, 5001
PASSWORD = "walk-password"
TRAINERS = ("alice", "bob")
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)


def readme_sections(text: str) -> dict[str, str]:
    """Level-2 heading -> the text up to the next level-2 heading."""
    parts = re.split(r"^## +(.+?)[ \t]*$", text, flags=re.MULTILINE)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def fenced(text: str, language: str) -> list[str]:
    """The bodies of the fenced blocks whose info string starts with `language`."""
    return [body for info, body in _FENCE.findall(text) if info.split()[:1] == [language]]


def walk() -> tuple[str, list[str]]:
    """(the README's market.toml, the walk's bash blocks in order)."""
    sections = readme_sections(README.read_text())
    missing = [s for s in WALK_SECTIONS if s not in sections]
    assert not missing, f"README has no section(s) {missing}: the walk's headings moved; update WALK_SECTIONS"
    text = "".join(sections[s] for s in WALK_SECTIONS)
    configs = [b for b in fenced(text, "toml") if b.startswith("# market.toml")]
    assert len(configs) == 1, "the walk shows exactly one ```toml block starting with '# market.toml'"
    return configs[0], [b for s in WALK_SECTIONS for b in fenced(sections[s], "bash")]


def commands(blocks: list[str]) -> list[str]:
    """The walk's command lines, comments and blank lines left out."""
    lines = (line.split("#", 1)[0].strip() for b in blocks for line in b.splitlines())
    return [line for line in lines if line]


# ---------------------------------------------------------------------- the walk's shape (quick)


def test_the_walk_is_complete_and_ends_with_stack_down() -> None:
    config, blocks = walk()
    cmds = commands(blocks)
    for needed in (
        "market stack up", "market deploy", "market project create", "trainer account new alice",
        "market fund alice", "trainer account new bob", "market fund bob", "trainer run 1 --account alice --join",
        "trainer run 1 --account bob --join", "aggregator serve", "market project end", "trainer withdraw 1 --account alice",
        "trainer withdraw 1 --account bob", "market audit 1",
    ):
        assert any(needed in c for c in cmds), f"the README's walk lost `{needed}`"
    assert commands(blocks[-1:]) == [".venv/bin/market stack down"], "the walk's last block stops the stack, alone"
    assert f"anvil_port = {README_ANVIL_PORT}" in config and f"ipfs_api_port = {README_IPFS_PORT}" in config


def test_the_walk_config_and_project_files_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's market.toml passes the strict loader, and every project file the walk (or the
    examples) names loads."""
    from market.cli.config import load_settings, read_config
    from market.cli.project_file import ProjectFile

    config, blocks = walk()
    (tmp_path / "market.toml").write_text(config)
    _, tables = read_config(tmp_path / "market.toml")
    settings = load_settings(tmp_path / "market.toml")
    assert settings.rpc == f"http://127.0.0.1:{README_ANVIL_PORT}"  # rpc follows the stack's port
    assert settings.deployment == (tmp_path / ".market" / "deployment.json").resolve()
    assert set(tables) <= {"market", "trainer", "aggregator", "dashboard"}
    named = {m for c in commands(blocks) for m in re.findall(r"examples/\S+\.toml", c)}
    assert named, "the walk creates its project from a template in examples/"
    for path in sorted(named | {str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("project*.toml")}):
        pf = ProjectFile.load(ROOT / path)
        assert pf.project.challenge_window <= pf.project.commit_window + pf.project.reveal_window


# ---------------------------------------------------------------------- the walk on a real stack


@dataclass
class Shell:
    """One bash session fed block after block, like a reader's terminal."""

    proc: subprocess.Popen[str]
    cwd: Path
    log: Path

    @classmethod
    def start(cls, cwd: Path, env: dict[str, str]) -> Shell:
        log = cwd / "walk.log"
        out: IO[str] = log.open("w")
        # a session of its own: the walk's `&` jobs share its process group, stopped by its id below
        proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-s"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
            cwd=cwd, env=env, text=True, start_new_session=True,
        )
        out.close()
        shell = cls(proc, cwd, log)
        shell._send("set -euo pipefail\nPS4='+ $(date +%T) walk: '\nset -x\n")
        return shell

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def run(self, index: int, block: str, timeout: float) -> None:
        marks = self.cwd / ".walk"
        marks.mkdir(exist_ok=True)
        (marks / f"{index}.sh").write_text(block)
        done = marks / f"{index}.done"
        # sourced, so the session keeps its jobs; stdin from /dev/null, so no command eats the script
        self._send(f"source .walk/{index}.sh < /dev/null\n: > .walk/{index}.done\n")
        deadline = time.monotonic() + timeout
        while not done.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"walk block {index} failed (bash exit {self.proc.returncode}):\n{block}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"walk block {index} did not finish within {timeout:.0f} s:\n{block}\n{self.tail()}")
            time.sleep(0.2)

    def tail(self, lines: int = 60) -> str:
        out = ["--- walk.log ---", *self.log.read_text(errors="replace").splitlines()[-lines:]]
        for name in TRAINERS:
            path = self.cwd / f"{name}.log"
            if path.exists():
                out += [f"--- {name}.log ---", *path.read_text(errors="replace").splitlines()[-25:]]
        return "\n".join(out)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # what the walk left running (its own group)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)


def _json(cwd: Path, env: dict[str, str], *args: str) -> Any:
    """Run a CLI with --json and parse its stdout, which must be exactly one JSON document."""
    tool, *rest = args
    done = subprocess.run(
        [str(ROOT / ".venv" / "bin" / tool), *rest, "--json"], check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, f"{' '.join(args)} --json: exit {done.returncode}\n{done.stderr[-2000:]}"
    return json.loads(done.stdout)


@pytest.mark.integration
def test_readme_walk_on_a_fresh_stack(tmp_path: Path) -> None:
    from devnet.ports import free_port, pick_ipfs_api_port

    config, blocks = walk()
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / "examples", work / "examples")
    anvil_port, ipfs_port = free_port(), pick_ipfs_api_port()
    (work / "market.toml").write_text(
        config.replace(str(README_ANVIL_PORT), str(anvil_port)).replace(str(README_IPFS_PORT), str(ipfs_port))
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MARKET_", "TRAINER_"))}
    env |= {"MARKET_PASSWORD": PASSWORD, "COLUMNS": "80", "PYTHONUNBUFFERED": "1"}
    shell = Shell.start(work, env)
    try:
        for i, block in enumerate(blocks[:-1]):
            shell.run(i, block, timeout=360 if "wait" in commands([block]) else 150)
        for name in TRAINERS:
            rewards = _json(work, env, "trainer", "rewards", "1", "--account", name)
            assert rewards["claimed"] > 0 and rewards["claimable"] == 0, (name, rewards, shell.tail())
            assert [r["round"] for r in rewards["rounds"]] == [0, 1]
        status = _json(work, env, "market", "project", "status", "1")
        assert status["project"]["ended_at"] and status["project"]["stakes_held"] == 0, status
        audit = _json(work, env, "market", "audit", "1")
        assert audit["ok"] and len(audit["rounds"]) == 2, audit
        shell.run(len(blocks) - 1, blocks[-1], timeout=60)
        # every table the walk printed (COLUMNS=80) fits 80 columns, with headers left whole
        tables = [line for line in shell.log.read_text().splitlines() if set(line) & set("┃│┏┗└┡")]
        assert tables and all(len(line) <= 80 for line in tables), "\n".join(t for t in tables if len(t) > 80)
        assert not [line for line in tables if "┃" in line and "…" in line], "a table header was cut at 80 columns"
    finally:
        shell.close()
        subprocess.run([str(ROOT / ".venv" / "bin" / "market"), "stack", "down"], check=False, cwd=work, env=env,
                       capture_output=True, timeout=60)
