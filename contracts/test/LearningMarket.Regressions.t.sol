// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {LearningMarket} from "../src/LearningMarket.sol";

/// @notice Regression tests for the defects found while writing this suite; each failed against the
/// contract as first written (the comment on each test says how).
contract RegressionsTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    /// Once every round is finalized, currentRound == numRounds names a round that does not exist.
    /// The original accepted commits (and so reveals) for it, emitting UpdateCommitted for a round
    /// no one can ever finalize.
    function test_commit_afterLastRound_revertsRoundNotOpen() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)), 0);
        }
        bytes32 c = market.commitmentOf(pid, ROUNDS, alice, "x", bytes32(0), bytes32(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.commit(pid, ROUNDS, c);
    }

    /// Same for reveal: the round after the last one is never open.
    function test_reveal_afterLastRound_revertsRoundNotOpen() public {
        uint256 pid = _createEth();
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)), 0);
        }
        _rollToReveal(pid);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.reveal(pid, ROUNDS, "x", bytes32(0), bytes32(0));
    }

    /// The original panicked with an arithmetic underflow (0x11) computing the reserve for later
    /// rounds, instead of reverting with RoundNotOpen.
    function test_finalize_afterLastRound_revertsRoundNotOpen() public {
        uint256 pid = _createEth();
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)), 0);
        }
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.finalizeRound(pid, ROUNDS, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    /// A trainer may claim against an older settled round after others already claimed more than
    /// that round's cumulative allocation through a newer root. The original computed
    /// `cumulativeAllocated - claimed` unchecked for that case and panicked (0x11); now it is the
    /// documented ClaimExceedsAllocation with available 0 (the trainer should use the newer root).
    function test_claim_olderRoundAfterLaterClaims_revertsCleanly() public {
        uint256 pid = _createEth();
        // round 0: alice 0.5, bob 0.5 (allocation 1)
        MerkleBuilder.Tree memory t0 = _tree2(alice, 0.5 ether, bob, 0.5 ether);
        _finalizeNext(pid, t0.root(), 1 ether);
        // round 1: alice 1.5, bob 0.5 (allocation 1)
        MerkleBuilder.Tree memory t1 = _tree2(alice, 1.5 ether, bob, 0.5 ether);
        _finalizeNext(pid, t1.root(), 1 ether);
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.5 ether, t1.proof(0)); // total claimed 1.5 > round 0's cumulative 1
        bytes32[] memory proofBob0 = t0.proof(1);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ClaimExceedsAllocation.selector, pid, 0.5 ether, 0));
        market.claim(pid, 0, bob, 0.5 ether, proofBob0);
        // the newer root still pays bob
        _claim(pid, 1, bob, 0.5 ether, t1.proof(1));
        assertEq(market.claimedBy(pid, bob), 0.5 ether, "bob paid through round 1");
    }

    /// Slashed stakes and forfeited bonds can lift `unallocated` above what Round.allocation
    /// (uint104) holds. The original silently truncated the allocation and the cumulative total
    /// when storing the round, so claims were capped at the truncated value and voiding the round
    /// returned only the truncated amount (the rest stuck in the contract for good).
    function test_finalize_allocationAboveUint104_reverts() public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 1;
        p.stake = uint128(1) << 110;
        uint256 pid = _create(p);
        token.mint(alice, p.stake);
        _register(pid, alice);
        vm.prank(arbiter);
        market.slashStake(pid, alice, "bafyslash");
        uint256 unallocated = market.getProject(pid).unallocated;
        assertGt(unallocated, type(uint104).max, "set-up: unallocated above uint104");
        uint256 cap = type(uint104).max; // nothing allocated yet
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, unallocated, cap));
        market.finalizeRound(pid, 0, MODEL, RECORD, bytes32(uint256(1)), unallocated);
        // at the cap it works, and the stored figures are exact
        _finalize(pid, 0, bytes32(uint256(1)), cap);
        LearningMarket.Round memory r = market.getRound(pid, 0);
        assertEq(r.allocation, cap, "allocation stored exactly");
        assertEq(r.cumulativeAllocated, cap, "cumulative stored exactly");
        assertEq(market.getProject(pid).allocated, cap, "allocated");
        assertEq(market.getProject(pid).unallocated, unallocated - cap, "unallocated");
    }
}
