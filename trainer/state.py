"""The trainer's per-round submission state, persisted before every transaction.

A trainer killed between commit and reveal must reveal the same (cid, digest, salt) after a
restart, and must never commit twice; so the salt and the stage are on disk before the
transaction that needs them is sent, and every write is atomic (temp file + rename + fsync).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from enum import Enum
from pathlib import Path

from market.files import atomic_write


class Stage(str, Enum):
    PREPARED = "prepared"  # uploaded; salt chosen; nothing sent yet
    COMMITTING = "committing"  # commit transaction about to be / being sent
    COMMITTED = "committed"
    REVEALING = "revealing"
    REVEALED = "revealed"


@dataclass(frozen=True)
class RoundState:
    project_id: int
    round: int
    trainer: str
    cid: str
    digest: str  # 0x-hex sha256
    salt: str  # 0x-hex, secret until reveal
    stage: Stage
    commit_tx: str | None = None
    reveal_tx: str | None = None

    def at(self, stage: Stage, *, commit_tx: str | None = None, reveal_tx: str | None = None) -> RoundState:
        """This state at `stage`; transaction hashes not given are kept."""
        return replace(self, stage=stage, commit_tx=commit_tx or self.commit_tx, reveal_tx=reveal_tx or self.reveal_tx)


class StateStore:
    """One JSON file per (project, round, trainer) under `directory`."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def _path(self, project_id: int, round_: int, trainer: str) -> Path:
        return self.directory / f"p{project_id}" / f"{trainer.lower()}-r{round_}.json"

    def load(self, project_id: int, round_: int, trainer: str) -> RoundState | None:
        path = self._path(project_id, round_, trainer)
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["stage"] = Stage(data["stage"])
        return RoundState(**data)

    def save(self, state: RoundState) -> RoundState:
        path = self._path(state.project_id, state.round, state.trainer)
        data = asdict(state) | {"stage": state.stage.value}
        atomic_write(path, json.dumps(data).encode(), mode=0o600)  # the salt is a secret until reveal
        return state
