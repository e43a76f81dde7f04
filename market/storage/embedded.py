"""An on-disk content-addressed store with the `Store` interface, for quick runs and unit tests.

Addresses are real CIDs: CIDv1, `raw` codec, sha2-256 multihash of the bytes themselves, in
base32 (`bafkrei...`), as `market.storage.raw_cid` computes them.

How they relate to the CIDs an IPFS node gives for the same bytes:

- `ipfs add` with default settings (CIDv0, what `IpfsStore.add` does) wraps every chunk in a
  dag-pb/UnixFS node, so the multihash differs from ours even for one byte
  (`market.storage.cid_of` computes that CIDv0 locally).
- `ipfs add --cid-version=1` (raw leaves) of bytes that fit in one 256 KiB chunk stores them as
  a single raw block: same multihash as ours, so `same_multihash` says they are equal (the node
  may print it as `zb2r...` or `bafkrei...`).
- Anything larger is chunked into a dag-pb tree whose root multihash is not the hash of the
  bytes, so the addresses differ.

That is why the chain commits to the sha256 digest of the bytes as well as to a CID: the digest
checks content from any backend (`fetch_verified`), the CID only locates it.

Layout under `root_dir`: `blocks/<2 hex>/<64 hex sha256>` holds the bytes, `pins/<64 hex>` marks a
pin (every added object is pinned; nothing here ever deletes). Writes go to a temporary file in
the same directory, are fsynced, then renamed into place, so a reader never sees a partial
object. Reads check the sha256 again, so on-disk corruption surfaces as IntegrityError.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from market.errors import ContentNotFound, ContentTooLarge, IntegrityError, InvalidCid, StorageError
from market.files import atomic_write
from market.storage.base import Store, parse_cid, raw_cid

__all__ = ["EmbeddedStore"]

_SHA2_256 = 0x12


class EmbeddedStore(Store):
    """Bytes kept under `root_dir`, addressed by CIDv1 raw sha2-256 (see the module docstring)."""

    def __init__(self, root_dir: str | os.PathLike[str]):
        self.root = Path(root_dir)
        try:
            (self.root / "blocks").mkdir(parents=True, exist_ok=True)
            (self.root / "pins").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the embedded store at {self.root}: {exc.strerror}; "
                "choose a writable directory"
            ) from None

    def __repr__(self) -> str:
        return f"EmbeddedStore({str(self.root)!r})"

    # -- Store -----------------------------------------------------------------------------

    def add(self, data: bytes) -> str:
        data = bytes(data)
        hexdigest = hashlib.sha256(data).hexdigest()
        path = self._block_path(hexdigest)
        if not path.exists():
            self._write_atomic(path, data)
        self._write_pin(hexdigest)
        return raw_cid(data)

    def cat(self, cid: str, *, max_bytes: int | None = None, timeout: float | None = None) -> bytes:
        hexdigest = self._digest_of(cid)
        path = self._block_path(hexdigest)
        try:
            with path.open("rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if max_bytes is not None and size > max_bytes:
                    raise ContentTooLarge(
                        f"{cid} holds {size} bytes, more than the {max_bytes} allowed: "
                        "raise max_bytes or reject the content"
                    )
                data = handle.read()
        except FileNotFoundError:
            raise ContentNotFound(
                f"{cid} is not in the embedded store at {self.root}: add it first "
                "(embedded stores only hold what was added to them)"
            ) from None
        except OSError as exc:
            raise StorageError(f"cannot read {cid} from {self.root}: {exc.strerror}") from None
        if hashlib.sha256(data).hexdigest() != hexdigest:
            raise IntegrityError(
                f"the embedded store's copy of {cid} at {path} is corrupt: delete the file and "
                "add the content again"
            )
        return data

    def pin(self, cid: str) -> None:
        hexdigest = self._digest_of(cid)
        if not self._block_path(hexdigest).exists():
            raise ContentNotFound(
                f"cannot pin {cid}: it is not in the embedded store at {self.root}; add it first"
            )
        self._write_pin(hexdigest)

    def has(self, cid: str, *, timeout: float | None = None) -> bool:
        return self._block_path(self._digest_of(cid)).is_file()

    def close(self) -> None:
        """Nothing to release: every operation opens and closes its own files."""

    def is_pinned(self, cid: str) -> bool:
        """Whether `cid` is pinned (every object `add` stores is)."""
        return (self.root / "pins" / self._digest_of(cid)).exists()

    # -- internals ---------------------------------------------------------------------------

    def _digest_of(self, cid: str) -> str:
        """The hex sha256 a CID names. Any version/base/codec works if the hash is sha2-256."""
        parsed = parse_cid(cid)
        if parsed.hashfun.code != _SHA2_256:
            raise InvalidCid(
                f"{cid} uses the {parsed.hashfun.name} hash; the embedded store only holds "
                "sha2-256 addresses"
            )
        return bytes(parsed.raw_digest).hex()

    def _block_path(self, hexdigest: str) -> Path:
        return self.root / "blocks" / hexdigest[:2] / hexdigest

    def _write_pin(self, hexdigest: str) -> None:
        pin = self.root / "pins" / hexdigest
        if not pin.exists():
            self._write_atomic(pin, b"")

    def _write_atomic(self, path: Path, data: bytes) -> None:
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise StorageError(
                f"cannot write {path.name} into the embedded store at {self.root}: "
                f"{exc.strerror}; check free space and permissions"
            ) from None
