"""The CIDv0 an IPFS node gives to bytes added with default settings, computed locally.

Default `ipfs add` (Kubo and js-ipfs alike) cuts the bytes into fixed 256 KiB chunks, wraps
each chunk in a dag-pb node whose Data is a UnixFS `File` message (no raw leaves for CIDv0),
and links the leaves in a balanced tree of at most 174 children per node. A file of one chunk
(including the empty file) is that single leaf. The root's sha2-256 multihash, as base58btc, is
the CIDv0 (`Qm...`). This mirrors `ipfs-unixfs-importer` 12 (js-ipfs 0.66): see
`dag-builder/file/{index,balanced,buffer-importer}.js` there, and Kubo's balanced layout, which
gives the same tree.

Only the protobuf subset those two messages need is written here (varints and length-delimited
fields, in field order, Links before Data as dag-pb requires).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from multiformats import CID

CHUNK_SIZE = 262_144
MAX_CHILDREN = 174
_UNIXFS_FILE = 2


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _uint(field: int, value: int) -> bytes:
    return _key(field, 0) + _varint(value)


def _len(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def _unixfs_file(data: bytes, blocksizes: list[int]) -> bytes:
    out = _uint(1, _UNIXFS_FILE)
    if data:
        out += _len(2, data)
    out += _uint(3, len(data) + sum(blocksizes))
    for size in blocksizes:
        out += _uint(4, size)
    return out


@dataclass(frozen=True)
class _Node:
    multihash: bytes  # sha2-256 multihash of the encoded dag-pb block
    file_size: int  # bytes of content below this node
    tsize: int  # encoded size of this block plus all blocks below it


def _dag_pb(data: bytes, links: list[_Node]) -> bytes:
    out = b""
    for child in links:
        out += _len(2, _len(1, child.multihash) + _len(2, b"") + _uint(3, child.tsize))
    return out + _len(1, data)


def _block(data: bytes, links: list[_Node], file_size: int) -> _Node:
    encoded = _dag_pb(data, links)
    digest = b"\x12\x20" + hashlib.sha256(encoded).digest()
    return _Node(digest, file_size, len(encoded) + sum(child.tsize for child in links))


def unixfs_root_multihash(data: bytes) -> bytes:
    """The sha2-256 multihash of the root block `ipfs add` (defaults) builds for `data`."""
    view = memoryview(data)
    chunks = [view[i : i + CHUNK_SIZE] for i in range(0, len(view), CHUNK_SIZE)] or [view[:0]]
    nodes = [_block(_unixfs_file(bytes(chunk), []), [], len(chunk)) for chunk in chunks]
    if len(nodes) == 1:
        return nodes[0].multihash
    while len(nodes) > 1:
        parents = []
        for i in range(0, len(nodes), MAX_CHILDREN):
            group = nodes[i : i + MAX_CHILDREN]
            sizes = [child.file_size for child in group]
            parents.append(_block(_unixfs_file(b"", sizes), group, sum(sizes)))
        nodes = parents
    return nodes[0].multihash


def cid_of(data: bytes) -> str:
    """The CIDv0 (`Qm...`) an IPFS node answers when `data` is added with default settings.

    Default settings only: CIDv0, 256 KiB fixed chunks, balanced layout, no raw leaves, no
    mtime/mode metadata, no directory wrapping. Checked against js-ipfs 0.66 for 0 B, 1 KiB,
    256 KiB, 256 KiB + 1, 1 MiB + 1, 174 x 256 KiB, 174 x 256 KiB + 1 and 175 x 256 KiB + 1.
    """
    return str(CID("base58btc", 0, "dag-pb", unixfs_root_multihash(data)))
