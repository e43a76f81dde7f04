"""Records and proofs the trainer keeps: what it needs to claim when IPFS no longer serves a
round's record.

Nothing obliges the aggregator, or anyone, to keep a round record pinned once the round is final,
and the claim window stays open long after. So each time the trainer reads a settled round's record
it keeps, in its state directory, the record's exact bytes and its own leaf (cumulative amount and
Merkle proof):

    <state>/receipts/p<project>/r<round>.record.json          the record the round pays by, as fetched
    <state>/receipts/p<project>/r<round>-<trainer>.proof.json  KeptProof

`obtain` answers from the kept proof when there is one, so a claim needs no fetch at all once the
round was read, and otherwise reads the record from the store and keeps it. A kept proof is first
checked against the round's rewards root on chain: a copy that no longer proves the leaf is refused.

A round an upheld dispute corrected pays by the root of the last correction, not by the record it
was finalized with. Its record is then the correction's: the reasonCID of the round's latest upheld
`DisputeResolved` (the arbiter rules with `market resolve --uphold --record CID`, the record
`market audit --corrected-out DIR --publish` rebuilt). It is read, checked to be this round's record
declaring the chain's root, and kept in place of the finalized one (`record_cid` says which).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from market._text import one_line
from market.chain import Finalized, MarketClient, checksum
from market.errors import ProtocolError, StorageError, is_transient
from market.files import atomic_write
from market.protocol.documents import RoundRecord
from market.protocol.merkle import leaf_hash, verify
from market.protocol.reading import RECORD_MAX_BYTES, ReadableStore, correction_of
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

    def keep(self, finalized: Finalized, data: bytes, trainer: str, record_cid: str | None = None) -> KeptProof:
        """Keep a round's record bytes and `trainer`'s leaf in it; returns the leaf. `record_cid`:
        where the record came from when it is not the finalized one (a correction's)."""
        kept = KeptProof.of(finalized, RoundRecord.from_bytes(data), trainer)
        if record_cid is not None:
            kept = replace(kept, record_cid=record_cid)
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
        """`trainer`'s leaf in the settled round `finalized`, for the round's rewards root on chain:
        the kept copy when it is for that root (no fetch), else from the round's record in `store`
        (kept on the way). When an upheld dispute replaced the root, the record is the correction's
        (the reasonCID of the round's latest upheld ruling, `market resolve --record`), checked to be
        this round's and to declare that root. A kept copy that does not prove its leaf against
        the root is refused (StaleReceipt), and so is a correction without a readable record."""
        pid, r = finalized.project_id, finalized.round
        root = client.round(pid, r).rewards_root
        kept = self.kept(pid, r, trainer)
        if kept is not None and _same(kept.rewards_root, root):
            if kept.cumulative and not kept.proves(_bytes32(root)):
                raise StaleReceipt(
                    f"the proof of round {r} kept in {self.directory} does not match the round's rewards root on chain"
                    f" ({root}; the kept record says {kept.rewards_root}): delete {self.proof_path(pid, r, trainer)}"
                    " and claim again to read the round's record from the store"
                )
            return kept
        if not _same(root, "0x" + finalized.rewards_root.hex()):
            return self._corrected(store, client, finalized, trainer, root, stale=kept)
        try:
            data = store.cat(finalized.record_cid, max_bytes=RECORD_MAX_BYTES)
        except StorageError as exc:
            raise type(exc)(f"{exc} (and no copy of round {r}'s record is kept in {self.directory})") from exc
        return self.keep(finalized, data, trainer)

    def _corrected(self, store: ReadableStore, client: MarketClient, finalized: Finalized, trainer: str, root: str,
                   stale: KeptProof | None) -> KeptProof:
        """`trainer`'s leaf in the record of the correction that set the round's root to `root`."""
        r = finalized.round
        what = (f"the proof of round {r} kept in {self.directory}" if stale is not None
                else f"the record round {r} was finalized with")
        head = (f"{what} does not match the round's rewards root on chain ({root}; a correction replaced"
                f" 0x{finalized.rewards_root.hex()})")
        try:
            cid, data, record = correction_of(client, store, finalized, _bytes32(root))
        except StorageError as exc:
            message = f"{head}, and the correction's record cannot be read: {one_line(exc)}"
            if is_transient(exc):  # the store was away: worth retrying as is
                raise type(exc)(f"{message}; retry once the store serves it") from exc
            raise StaleReceipt(f"{message}: the arbiter must uphold with `market resolve --record CID`") from exc
        except ProtocolError as exc:
            raise StaleReceipt(f"{head}: {exc}") from exc
        kept = KeptProof.of(finalized, record, trainer)
        if kept.cumulative and not kept.proves(_bytes32(root)):
            raise StaleReceipt(f"{head}, and the corrected record {cid} does not prove {kept.trainer}'s leaf against it:"
                               " ask the arbiter for a consistent record")
        return self.keep(finalized, data, trainer, record_cid=cid)


def _same(a: str, b: str) -> bool:
    return a.lower().removeprefix("0x") == b.lower().removeprefix("0x")


def _bytes32(text: str) -> bytes:
    return bytes.fromhex(text.removeprefix("0x"))
