"""The aggregator's local journal: per round, the stage reached, the inputs fixed at the start,
the published CIDs and the finalize transaction; plus a cache of the update bytes fetched.

The chain is the source of truth: the journal only lets a restarted service (after a crash, a
SIGKILL, an outage) finish a round exactly once with the same result. What it keeps:

- the **snapshot** taken when the round first ran (the allocation the contract made available
  and the block it was read at), so a restart computes the same rewards even if the pool grew in
  between (a slashed stake);
- the **update bytes** already fetched (`updates/<sha256>`), so an update fetched once is never
  lost, even if its provider disappears before the round is published;
- the **stage** reached and the model/record CIDs and finalize transaction, for `status` and for
  checking that a recomputed round gives the same CIDs.

Every write is atomic (temporary file, fsync, rename): a kill at any instant leaves either the
old or the new file, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from aggregator.errors import JournalError
from market.files import atomic_write

__all__ = ["Journal", "JournalError", "RoundEntry", "Stage"]


class Stage(str, Enum):
    """Stages of one round, in order. Every compute stage is re-run on restart (it is a pure
    function of chain data, IPFS bytes and config); only `published` and later are acted on."""

    STARTED = "started"
    FETCHED = "fetched"
    VALIDATED = "validated"
    FILTERED = "filtered"
    AGGREGATED = "aggregated"
    SCORED = "scored"
    REWARDED = "rewarded"
    ADAPTED = "adapted"
    PUBLISHED = "published"
    FINALIZE_SENDING = "finalize_sending"
    FINALIZED = "finalized"

    @property
    def order(self) -> int:
        return list(Stage).index(self)


@dataclass(frozen=True)
class RoundEntry:
    project_id: int
    round: int
    stage: Stage
    #: Block at which the round's chain inputs (allocation available) were read.
    snapshot_block: int | None = None
    #: What the contract made available to this round at `snapshot_block`.
    available: int | None = None
    model_cid: str | None = None
    record_cid: str | None = None
    model_digest: str | None = None
    finalize_tx: str | None = None
    finalize_block: int | None = None
    #: Free-form notes (a CID mismatch after a restart, a finalize found already on chain).
    notes: list[str] = field(default_factory=list)

    def at(self, stage: Stage, **kw: Any) -> RoundEntry:
        """This entry moved to `stage` (never backwards) with `kw` set."""
        new_stage = stage if stage.order >= self.stage.order else self.stage
        return replace(self, stage=new_stage, **kw)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"stage": self.stage.value}


def _atomic_write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise JournalError(
            f"cannot write the journal file {path}: {exc.strerror}; check free space and permissions"
        ) from None


class Journal:
    """The journal of one aggregator for one project on one deployment, under `directory`."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    @classmethod
    def for_project(cls, state_dir: Path | str, chain_id: int, contract: str, project_id: int) -> Journal:
        """`<state>/aggregator/<chain id>-<contract>/p<project>`: one journal per deployment and
        project, so a redeployed contract never reuses an old journal."""
        return cls(Path(state_dir) / "aggregator" / f"{chain_id}-{contract.lower()}" / f"p{project_id}")

    # -- rounds ---------------------------------------------------------------------------

    def _path(self, round_: int) -> Path:
        return self.directory / f"round-{round_:06d}.json"

    def load(self, project_id: int, round_: int) -> RoundEntry | None:
        path = self._path(round_)
        try:
            data = json.loads(path.read_text())
            data["stage"] = Stage(data["stage"])
            entry = RoundEntry(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, KeyError) as exc:
            raise JournalError(
                f"malformed journal entry {path} ({exc}): move it away; the round is rebuilt from the chain"
            ) from None
        if entry.project_id != project_id or entry.round != round_:
            raise JournalError(f"journal entry {path} belongs to another project or round: move it away")
        return entry

    def save(self, entry: RoundEntry) -> RoundEntry:
        _atomic_write(self._path(entry.round), json.dumps(entry.to_json(), indent=2, sort_keys=True).encode())
        return entry

    def begin(self, project_id: int, round_: int, snapshot_block: int, available: int) -> RoundEntry:
        """The round's entry: the existing one (its snapshot kept), or a new one at `started`."""
        entry = self.load(project_id, round_)
        if entry is None:
            entry = self.save(RoundEntry(project_id, round_, Stage.STARTED, snapshot_block, available))
        elif entry.available is None:
            entry = self.save(replace(entry, snapshot_block=snapshot_block, available=available))
        return entry

    def forget(self, round_: int) -> None:
        """Drop a round's entry (the chain contradicts it, e.g. a node reset to an older state)."""
        self._path(round_).unlink(missing_ok=True)

    def advance(self, entry: RoundEntry, stage: Stage, **kw: Any) -> RoundEntry:
        return self.save(entry.at(stage, **kw))

    def rounds(self) -> list[RoundEntry]:
        """Every readable entry, by round (a malformed one is skipped: the chain has the truth)."""
        out = []
        for p in sorted(self.directory.glob("round-*.json")):
            try:
                data = json.loads(p.read_text())
                data["stage"] = Stage(data["stage"])
                out.append(RoundEntry(**data))
            except (OSError, ValueError, TypeError, KeyError):
                continue
        return out

    # -- fetched update bytes -------------------------------------------------------------

    def _update_path(self, digest: bytes) -> Path:
        return self.directory / "updates" / digest.hex()

    def cached_update(self, digest: bytes) -> bytes | None:
        """Bytes fetched earlier whose sha256 is `digest` (checked again), or None."""
        try:
            data = self._update_path(digest).read_bytes()
        except (FileNotFoundError, OSError):
            return None
        return data if hashlib.sha256(data).digest() == digest else None

    def cache_update(self, data: bytes) -> None:
        path = self._update_path(hashlib.sha256(data).digest())
        if not path.exists():
            _atomic_write(path, data)
