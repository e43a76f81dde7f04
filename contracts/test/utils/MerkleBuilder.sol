// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @notice Cumulative-rewards trees built exactly as OpenZeppelin's JavaScript StandardMerkleTree
/// builds them: leaf = keccak256(bytes.concat(keccak256(abi.encode(account, amount)))), leaves
/// sorted by hash, laid out in a flat array of 2n-1 nodes (leaf i at index len-1-i, node i the
/// hash of the sorted pair of nodes 2i+1 and 2i+2), proofs the siblings on the way to index 0.
library MerkleBuilder {
    struct Tree {
        bytes32[] nodes;
        /// @dev position in `nodes` of the leaf of the i-th (account, amount) passed to build
        uint256[] positions;
    }

    function leaf(address account, uint256 amount) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, amount))));
    }

    function hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    function build(address[] memory accounts, uint256[] memory amounts) internal pure returns (Tree memory t) {
        uint256 n = accounts.length;
        require(n > 0 && n == amounts.length, "MerkleBuilder: bad input");
        bytes32[] memory hashes = new bytes32[](n);
        uint256[] memory order = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            hashes[i] = leaf(accounts[i], amounts[i]);
            order[i] = i;
        }
        // insertion sort of the input indices by leaf hash (n is tiny in tests)
        for (uint256 i = 1; i < n; i++) {
            uint256 cur = order[i];
            uint256 j = i;
            while (j > 0 && hashes[order[j - 1]] > hashes[cur]) {
                order[j] = order[j - 1];
                j--;
            }
            order[j] = cur;
        }
        uint256 len = 2 * n - 1;
        t.nodes = new bytes32[](len);
        t.positions = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            t.nodes[len - 1 - i] = hashes[order[i]];
            t.positions[order[i]] = len - 1 - i;
        }
        for (uint256 k = len - n; k > 0; k--) {
            uint256 i = k - 1;
            t.nodes[i] = hashPair(t.nodes[2 * i + 1], t.nodes[2 * i + 2]);
        }
    }

    function root(Tree memory t) internal pure returns (bytes32) {
        return t.nodes[0];
    }

    /// @notice Proof for the i-th (account, amount) given to build.
    function proof(Tree memory t, uint256 i) internal pure returns (bytes32[] memory p) {
        uint256 index = t.positions[i];
        uint256 depth = 0;
        for (uint256 k = index; k > 0; k = (k - 1) / 2) depth++;
        p = new bytes32[](depth);
        uint256 d = 0;
        while (index > 0) {
            p[d++] = t.nodes[index % 2 == 1 ? index + 1 : index - 1];
            index = (index - 1) / 2;
        }
    }
}
