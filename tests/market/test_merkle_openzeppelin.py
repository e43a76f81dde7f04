"""Our reward trees against OpenZeppelin's own JavaScript StandardMerkleTree, for every size up to
17 leaves: same root, and every one of our proofs verifies against theirs."""

from __future__ import annotations

import json
import os
import random
import subprocess

import pytest
from eth_utils import to_checksum_address

from devnet import toolpaths
from market.protocol.merkle import RewardTree

SCRIPT = """
const { StandardMerkleTree } = require(process.argv[1]);
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(values => {
  const t = StandardMerkleTree.of(values, ['address', 'uint256']);
  return { root: t.root, proofs: values.map(v => t.getProof(v)) };
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(not (toolpaths.NODE_MODULES / "@openzeppelin" / "merkle-tree").is_dir(), reason="npm packages not installed")
def test_roots_and_proofs_match_openzeppelin_standard_merkle_tree() -> None:
    rng = random.Random(7)
    cases = []
    for n in range(1, 18):
        cases.append([[to_checksum_address(os.urandom(20)), str(rng.randrange(0, 10**24))] for _ in range(n)])
    lib = str(toolpaths.NODE_MODULES / "@openzeppelin" / "merkle-tree")
    res = subprocess.run(["node", "-e", SCRIPT, lib], input=json.dumps(cases), capture_output=True, text=True,
                         check=True, timeout=60)
    theirs = json.loads(res.stdout)
    for values, oz in zip(cases, theirs):
        tree = RewardTree.build({a: int(v) for a, v in values})
        assert "0x" + tree.root.hex() == oz["root"], len(values)
        for (a, _), oz_proof in zip(values, oz["proofs"]):
            assert ["0x" + p.hex() for p in tree.proof(a)] == oz_proof
