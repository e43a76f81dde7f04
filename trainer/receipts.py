"""Records and proofs the trainer keeps: what it needs to claim when IPFS no longer serves a
round's record.

Nothing obliges the aggregator, or anyone, to keep a round record pinned once the round is final,
and the claim window stays open long after. So each time the trainer reads a settled round's record
it keeps, in its state directory, the record's exact bytes and its own leaf (cumulative amount and
Merkle proof):

    <state>/receipts/p<project>/r<round>.record.json          the record as fetched
    <state>/receipts/p<project>/r<round>-<trainer>.proof.json  KeptProof

`obtain` answers from the kept proof when there is one, so a claim needs no fetch at all once the
round was read, and otherwise reads the record from the store and keeps it. A kept proof is first
checked against the round's rewards root on chain (the root of the last correction, if a dispute
was upheld): a copy that no longer proves the leaf is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from market.chain import Finalized, MarketClient, checksum
from market.errors import StorageError
from market.files import atomic_write
from market.protocol.documents import RoundRecord
from market.protocol.merkle import leaf_hash, verify
from market.protocol.reading import RECORD_MAX_BYTES, ReadableStore
from trainer.errors import StaleReceipt

__all__ = ["KeptProof", "Receipts"]


@dataclass(frozen=True)
class KeptProof:
    """One trainer's leaf in one round's rewards tree, as its record published it."""

    project_id: int
    round: int
    trainer: str
    record_cid: str
    rewards_root: str  # 0x-hex, as the record declares it
    cumulative: int
    proof: tuple[str, ...]  # 0x-hex sibling hashes

    @property
    def proof_bytes(self) -> list[bytes]:
        return [bytes.fromhex(p.removeprefix("0x")) for p in self.proof]

    def proves(self, root: bytes) -> bool:
        """Whether the leaf and proof reach `root` (MerkleProof.verify's check)."""
        return verify(self.proof_bytes, root, leaf_hash(self.trainer, self.cumulative))

    @classmethod
    def of(cls, finalized: Finalized, record: RoundRecord, trainer: str) -> KeptProof:
        key = next((k for k in record.cumulative_rewards if k.lower() == trainer.lower()), None)
        return cls(
            finalized.project_id, finalized.round, checksum(trainer, "trainer"), finalized.record_cid,
            record.rewards_root, record.cumulative_rewards.get(key, 0) if key else 0,
            tuple(record.proofs.get(key, [])) if key else (),
        )


class Receipts:
    """The kept records and proofs under one state directory."""

    def __init__(self, state_dir: Path):
        self.directory = Path(state_dir) / "receipts"

    def _base(self, project_id: int, round_: int) -> Path:
        return self.directory / f"p{project_id}" / f"r{round_}"

    def record_path(self, project_id: int, round_: int) -> Path:
        return self._base(project_id, round_).with_suffix(".record.json")

    def proof_path(self, project_id: int, round_: int, trainer: str) -> Path:
        base = self._base(project_id, round_)
        return base.with_name(f"{base.name}-{trainer.lower()}.proof.json")

    def keep(self, finalized: Finalized, data: bytes, trainer: str) -> KeptProof:
        """Keep a round's record bytes and `trainer`'s leaf in it; returns the leaf."""
        kept = KeptProof.of(finalized, RoundRecord.from_bytes(data), trainer)
        atomic_write(self.record_path(finalized.project_id, finalized.round), data)
        body = asdict(kept) | {"proof": list(kept.proof)}
        atomic_write(self.proof_path(kept.project_id, kept.round, trainer), json.dumps(body, indent=2).encode())
        return kept

    def kept(self, project_id: int, round_: int, trainer: str) -> KeptProof | None:
        path = self.proof_path(project_id, round_, trainer)
        if not path.is_file():
            return None
        body = json.loads(path.read_text())
        return KeptProof(**(body | {"proof": tuple(body["proof"])}))

    def kept_record(self, project_id: int, round_: int) -> bytes | None:
        path = self.record_path(project_id, round_)
        return path.read_bytes() if path.is_file() else None

    def obtain(self, store: ReadableStore, client: MarketClient, finalized: Finalized, trainer: str) -> KeptProof:
        """`trainer`'s leaf in the settled round `finalized`: the kept copy when there is one (no
        fetch), else from its record in `store` (kept on the way). A kept copy is checked first
        against the round's rewards root on chain, and refused (StaleReceipt) if it no longer proves
        the leaf."""
        kept = self.kept(finalized.project_id, finalized.round, trainer)
        if kept is not None and kept.record_cid == finalized.record_cid:
            root = client.round(finalized.project_id, finalized.round).rewards_root
            if kept.cumulative and not kept.proves(bytes.fromhex(root.removeprefix("0x"))):
                raise StaleReceipt(
                    f"the proof of round {finalized.round} kept in {self.directory} does not match the round's rewards root"
                    f" on chain ({root}; the record says {kept.rewards_root}, so a correction replaced it): claim with a"
                    " proof for the corrected root"
                )
            return kept
        try:
            data = store.cat(finalized.record_cid, max_bytes=RECORD_MAX_BYTES)
        except StorageError as exc:
            raise type(exc)(f"{exc} (and no copy of round {finalized.round}'s record is kept in {self.directory})") from exc
        return self.keep(finalized, data, trainer)
