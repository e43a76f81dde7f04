// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";

/// @notice The test-side tree builder: OpenZeppelin StandardMerkleTree layout, proofs that
/// MerkleProof accepts, and the same roots as market/merkle.py for the 1-4 leaf trees the tests use.
contract MerkleBuilderTest is Test {
    using MerkleBuilder for MerkleBuilder.Tree;

    function _accounts(uint256 n) internal pure returns (address[] memory a, uint256[] memory v) {
        a = new address[](n);
        v = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            a[i] = address(uint160(0x1000 + i + 1));
            v[i] = 1e18 * (i + 1) / 3;
        }
    }

    /// Roots printed by market/merkle.py (RewardTree.build) for the same accounts and amounts.
    function test_rootsMatchPythonRewardTree() public pure {
        bytes32[4] memory expected = [
            bytes32(0x95d7a30d40aeefece12d8504f28d39d75e6ccfc881948c71368e2bae66cb32ea),
            bytes32(0x7b486d839037dd13cebb511ddbe7a3670d1cb8f32d564288c4c0a40cf6d76c91),
            bytes32(0x4b74e59a74b425fdf1e880d7ebf901bb5cdab77811d5fdbbb4c681d98e0d9bea),
            bytes32(0xd1fda691752ff1b7a3de682dd0d3078bf2aad474e6b6874ba60d1d8e6b9b8c80)
        ];
        for (uint256 n = 1; n <= 4; n++) {
            (address[] memory a, uint256[] memory v) = _accounts(n);
            assertEq(MerkleBuilder.build(a, v).root(), expected[n - 1], "root differs from market/merkle.py");
        }
    }

    function test_singleLeafRootIsTheLeaf() public pure {
        (address[] memory a, uint256[] memory v) = _accounts(1);
        MerkleBuilder.Tree memory t = MerkleBuilder.build(a, v);
        assertEq(t.root(), MerkleBuilder.leaf(a[0], v[0]), "root == leaf");
        assertEq(t.proof(0).length, 0, "empty proof");
    }

    function testFuzz_proofsVerify(uint8 size, uint256 seed) public pure {
        uint256 n = bound(size, 1, 9);
        address[] memory a = new address[](n);
        uint256[] memory v = new uint256[](n);
        for (uint256 i = 0; i < n; i++) {
            a[i] = address(uint160(uint256(keccak256(abi.encode(seed, i)))));
            v[i] = uint256(keccak256(abi.encode(seed, i, "amount"))) >> 160;
        }
        MerkleBuilder.Tree memory t = MerkleBuilder.build(a, v);
        for (uint256 i = 0; i < n; i++) {
            bytes32[] memory p = t.proof(i);
            assertTrue(MerkleProof.verify(p, t.root(), MerkleBuilder.leaf(a[i], v[i])), "proof verifies");
            assertFalse(MerkleProof.verify(p, t.root(), MerkleBuilder.leaf(a[i], v[i] + 1)), "tampered amount");
        }
    }
}
