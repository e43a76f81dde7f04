"""Secret validation data: disjoint per-round parts, committed at creation, disclosed per round.

Trainers must not see the samples a round is scored on before that round is final (else they
train on them and inflate their own scores). So the owner deals a private pool of labelled
samples into `parts` disjoint, class-balanced parts, one per round, and publishes only a Merkle
root over salted digests of the parts (`ValidationCommitment`, the spec's `validation_data`).
Round r is scored on part r. The aggregator, who holds the key, discloses part r when it
finalizes round r (the part's `.npz` CID as the record's `validation_cid`, salt and Merkle proof
as a `PartDisclosure`): after the reveal deadline, when every update of round r is fixed on
chain, and before the challenge window closes, so an auditor or a disputer can replay round r
while it can still be disputed (`verify_part`). Disclosing part r tells nothing about later
parts; docs/robustness.md gives the reasons for this choice over one disclosure at the end.

Everything secret derives from one 32-byte key with HMAC-SHA256 (the standard library's):
- the dealing order: samples are ranked by HMAC(key, "order" || index); no seeded RNG whose
  state a disclosed part could help recover;
- each part's salt: HMAC(key, "salt" || r), so a part's digest hides it even from someone who
  knows the pool (say a public dataset) and tries candidate subsets.

Leaves commit to the arrays, not to a file encoding: `arrays_digest` hashes x as little-endian
float32 and y as little-endian int64 with their shapes, so any container holding the same values
verifies. Inner nodes hash the sorted pair (as OpenZeppelin's MerkleProof), with distinct prefixes
for leaves and nodes; each leaf binds its part index, so a proof for part r proves nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from market.errors import ConfigError, IntegrityError

__all__ = [
    "KEY_BYTES",
    "SCHEME",
    "PartDisclosure",
    "ValSplit",
    "ValidationCommitment",
    "arrays_digest",
    "load_pool",
    "merkle_proof",
    "merkle_root",
    "part_leaf",
    "verify_part",
]

SCHEME = "valsplit-v1"
KEY_BYTES = 32
_LEAF = b"alm-valsplit-v1/leaf"
_NODE = b"alm-valsplit-v1/node"
_HEX32 = r"^0x[0-9a-f]{64}$"


class ValidationCommitment(BaseModel):
    """What the spec publishes at creation: the root over every part's salted digest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["valsplit-v1"] = "valsplit-v1"
    root: str = Field(pattern=_HEX32)
    #: One part per round: part r scores round r.
    parts: int = Field(ge=1)
    samples_per_part: int = Field(ge=1)


class PartDisclosure(BaseModel):
    """What the aggregator publishes with round r's record: which part, its salt and its proof
    (the part's samples are the `.npz` behind the record's `validation_cid`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    part: int = Field(ge=0)
    salt: str = Field(pattern=_HEX32)
    proof: list[str] = Field(default_factory=list)

    @field_validator("proof")
    @classmethod
    def _hex_nodes(cls, value: list[str]) -> list[str]:
        for node in value:
            if len(node) != 66 or not node.startswith("0x") or any(c not in "0123456789abcdef" for c in node[2:]):
                raise ValueError("proof nodes must be 0x + 64 lowercase hex digits")
        return value


def arrays_digest(x: np.ndarray, y: np.ndarray) -> bytes:
    """sha256 over x (little-endian float32, C order) and y (little-endian int64), with shapes."""
    xs = np.ascontiguousarray(x, dtype="<f4")
    ys = np.ascontiguousarray(y, dtype="<i8").reshape(-1)
    h = hashlib.sha256()
    for tag, arr in ((b"x", xs), (b"y", ys)):
        h.update(tag + len(arr.shape).to_bytes(1, "big"))
        for dim in arr.shape:
            h.update(int(dim).to_bytes(8, "big"))
        h.update(arr.tobytes())
    return h.digest()


def part_leaf(part: int, salt: bytes, digest: bytes) -> bytes:
    """The leaf of part `part`: sha256(prefix || part || salt || arrays digest)."""
    return hashlib.sha256(_LEAF + part.to_bytes(8, "big") + salt + digest).digest()


def _pair(a: bytes, b: bytes) -> bytes:
    return hashlib.sha256(_NODE + min(a, b) + max(a, b)).digest()


def _levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    if not leaves:
        raise ValueError("a Merkle tree needs at least one leaf")
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        cur = levels[-1]
        # an odd last node is promoted unchanged: its proof skips that level
        levels.append([_pair(cur[i], cur[i + 1]) if i + 1 < len(cur) else cur[i] for i in range(0, len(cur), 2)])
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    return _levels(leaves)[-1][0]


def merkle_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    proof = []
    for level in _levels(leaves)[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def _verify(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    node = leaf
    for sibling in proof:
        node = _pair(node, sibling)
    return hmac.compare_digest(node, root)


def verify_part(commitment: ValidationCommitment, disclosure: PartDisclosure, x: np.ndarray, y: np.ndarray,
                *, round_: int | None = None) -> None:
    """Check that (x, y) is the part the owner committed to for `disclosure.part` (and that this
    is round `round_`'s part when given); raises IntegrityError saying what does not match."""
    if round_ is not None and disclosure.part != round_:
        raise IntegrityError(f"round {round_} discloses validation part {disclosure.part}; round r must be scored on part r")
    if disclosure.part >= commitment.parts:
        raise IntegrityError(f"validation part {disclosure.part} does not exist: the spec commits to {commitment.parts} parts")
    if int(np.asarray(y).reshape(-1).shape[0]) != commitment.samples_per_part:
        raise IntegrityError(
            f"validation part {disclosure.part} holds {np.asarray(y).size} samples, the spec commits to"
            f" {commitment.samples_per_part}; the disclosed set is not the committed one"
        )
    leaf = part_leaf(disclosure.part, bytes.fromhex(disclosure.salt[2:]), arrays_digest(x, y))
    proof = [bytes.fromhex(p[2:]) for p in disclosure.proof]
    if not _verify(proof, bytes.fromhex(commitment.root[2:]), leaf):
        raise IntegrityError(
            f"validation part {disclosure.part} does not match the spec's commitment {commitment.root[:18]}...:"
            " its samples, salt or proof differ from what the owner committed to at creation"
        )


def load_pool(source: str) -> tuple[np.ndarray, np.ndarray]:
    """The owner's pool: a built-in dataset name or an `.npz` with arrays x and y (never unpickled)."""
    from market.datasets import BUILTIN_DATASETS, builtin_arrays

    if source in BUILTIN_DATASETS:
        return builtin_arrays(source)
    path = Path(source)
    if not path.is_file():
        raise ConfigError(f"validation pool {source!r} is neither a built-in ({', '.join(BUILTIN_DATASETS)}) nor an .npz file")
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as npz:
            x, y = np.asarray(npz["x"]), np.asarray(npz["y"])
    except Exception as exc:  # noqa: BLE001 - zip/format errors, missing arrays, object arrays refused
        raise ConfigError(f"validation pool {source}: not an .npz with arrays x and y ({type(exc).__name__}); save one"
                          " with numpy.savez(path, x=..., y=...)") from None
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255.0)
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int64).reshape(-1)


@dataclass(frozen=True)
class ValSplit:
    """A pool dealt into `parts` disjoint parts of `size` samples under a secret `key`.

    Deterministic in (pool, key, parts, size): the owner at creation and the aggregator at each
    round derive the same parts. `ValSplit.make(x, y, parts)` draws a fresh key.
    """

    x: np.ndarray
    y: np.ndarray
    key: bytes
    parts: int
    size: int

    def __post_init__(self) -> None:
        n = int(self.y.shape[0])
        if len(self.key) != KEY_BYTES:
            raise ConfigError(f"a validation split key is {KEY_BYTES} bytes, got {len(self.key)}")
        if self.x.shape[0] != n or n == 0:
            raise ConfigError(f"validation pool: {self.x.shape[0]} samples but {n} labels; give one label per sample")
        if self.parts < 1 or self.size < 1 or self.parts * self.size > n:
            raise ConfigError(
                f"cannot deal {self.parts} disjoint validation parts of {self.size} samples from a pool of {n}:"
                f" use a bigger pool or at most {max(n // max(self.parts, 1), 0)} samples per part"
            )

    @classmethod
    def make(cls, x: np.ndarray, y: np.ndarray, parts: int, size: int | None = None, key: bytes | None = None) -> ValSplit:
        """`size` defaults to an equal share of the pool (pool // parts)."""
        yy = np.ascontiguousarray(y, dtype=np.int64).reshape(-1)
        return cls(np.ascontiguousarray(x, dtype=np.float32), yy, key or secrets.token_bytes(KEY_BYTES), int(parts),
                   int(size if size is not None else len(yy) // max(int(parts), 1)))

    def _prf(self, label: bytes, i: int) -> bytes:
        return hmac.new(self.key, label + i.to_bytes(8, "big"), hashlib.sha256).digest()

    def _members(self) -> list[np.ndarray]:
        # Rank every sample by the keyed PRF, deal class by class round-robin (so part sizes and
        # per-class counts differ by at most one), then keep `size` per part taking one of each
        # class in turn, so a trimmed part stays class-balanced.
        n = int(self.y.shape[0])
        ranks = [self._prf(b"order", i) for i in range(n)]
        dealt: list[list[tuple[int, int, int]]] = [[] for _ in range(self.parts)]
        k = 0
        for c in np.unique(self.y).tolist():
            idx = sorted(np.nonzero(self.y == c)[0].tolist(), key=lambda i: ranks[i])
            for j, i in enumerate(idx):
                # (turn of this class within the part, class, sample): sorting takes one of each class per turn
                dealt[k % self.parts].append((j // self.parts, c, i))
                k += 1
        return [np.sort(np.array([i for _, _, i in sorted(members)[: self.size]], dtype=np.int64)) for members in dealt]

    def part(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        """Part r's samples (x float32, y int64), in pool order."""
        if not 0 <= r < self.parts:
            raise ConfigError(f"validation part {r} does not exist: the split has {self.parts} parts (one per round)")
        idx = self._index[r]
        return self.x[idx], self.y[idx]

    @property
    def _index(self) -> list[np.ndarray]:
        cached = self.__dict__.get("_cached_index")
        if cached is None:
            cached = self._members()
            object.__setattr__(self, "_cached_index", cached)
        return cached

    def salt(self, r: int) -> bytes:
        return self._prf(b"salt", r)

    def leaves(self) -> list[bytes]:
        return [part_leaf(r, self.salt(r), arrays_digest(*self.part(r))) for r in range(self.parts)]

    def commitment(self) -> ValidationCommitment:
        return ValidationCommitment(root="0x" + merkle_root(self.leaves()).hex(), parts=self.parts,
                                    samples_per_part=self.size)

    def disclose(self, r: int) -> PartDisclosure:
        """Part r's salt and proof (publish with the part's samples once round r is finalized)."""
        self.part(r)
        return PartDisclosure(part=r, salt="0x" + self.salt(r).hex(),
                              proof=["0x" + p.hex() for p in merkle_proof(self.leaves(), r)])

    # --- the key file the owner keeps and hands to the aggregator (never published)

    def key_document(self, source: str) -> bytes:
        doc = {"scheme": SCHEME, "pool": source, "key": self.key.hex(), "parts": self.parts,
               "samples_per_part": self.size, "root": self.commitment().root}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_key_document(cls, data: bytes, where: str = "validation key file") -> tuple[ValSplit, str]:
        """(the split, its pool source) from a key document; the pool is loaded with `load_pool`
        and the split checked against the root the document states."""
        try:
            doc = _KeyDocument.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConfigError(f"{where}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None
        x, y = load_pool(doc.pool)
        split = cls.make(x, y, doc.parts, doc.samples_per_part, bytes.fromhex(doc.key))
        if split.commitment().root != doc.root:
            raise ConfigError(f"{where}: the pool {doc.pool!r} no longer gives the committed root {doc.root[:18]}...:"
                              " it changed since the project was created; restore the original pool")
        return split, doc.pool


class _KeyDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scheme: Literal["valsplit-v1"]
    pool: str
    key: str = Field(pattern=r"^[0-9a-f]{64}$")
    parts: int = Field(ge=1)
    samples_per_part: int = Field(ge=1)
    root: str = Field(pattern=_HEX32)
