// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";

/// @notice Regression tests for defects found while writing the suites; each failed against the
/// contract as first written (the comment on each test says how).
contract RegressionsTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    function _closeAllRounds(uint256 pid) internal {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)));
        }
    }

    /// v1: once every round is finalized, currentRound == numRounds names a round that does not
    /// exist. The original accepted commits (and so reveals) for it.
    function test_commit_afterLastRound_revertsRoundNotOpen() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        _closeAllRounds(pid);
        bytes32 c = market.commitmentOf(pid, ROUNDS, alice, "x", bytes32(0), bytes32(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.commit(pid, ROUNDS, c);
    }

    /// v1: same for reveal: the round after the last one is never open.
    function test_reveal_afterLastRound_revertsRoundNotOpen() public {
        uint256 pid = _createEth();
        _closeAllRounds(pid);
        _rollToReveal(pid);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.reveal(pid, ROUNDS, "x", bytes32(0), bytes32(0));
    }

    /// v1: the original panicked with an arithmetic underflow (0x11) computing the reserve for later
    /// rounds, instead of reverting with RoundNotOpen. v2 adds expireRound on the same path.
    function test_finalizeAndExpire_afterLastRound_revertRoundNotOpen() public {
        uint256 pid = _createEth();
        _closeAllRounds(pid);
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.finalizeRound(pid, ROUNDS, MODEL, RECORD, bytes32(uint256(1)), 0);
        vm.roll(block.number + FINALIZE + 1);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, pid, ROUNDS, ROUNDS));
        market.expireRound(pid, ROUNDS);
    }

    /// v1: a trainer may claim against an older settled round after others already claimed more
    /// than that round's cumulative allocation through a newer root. The original panicked (0x11);
    /// it is the documented ClaimExceedsAllocation with available 0 (use the newer root).
    function test_claim_olderRoundAfterLaterClaims_revertsCleanly() public {
        uint256 pid = _createEth();
        MerkleBuilder.Tree memory t0 = _tree2(alice, 0.5 ether, bob, 0.5 ether); // allocation 1
        _finalizeNext(pid, t0.root());
        MerkleBuilder.Tree memory t1 = _tree2(alice, 1.5 ether, bob, 0.5 ether); // cumulative 2
        _finalizeNext(pid, t1.root());
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.5 ether, t1.proof(0)); // total claimed 1.5 > round 0's cumulative 1
        bytes32[] memory proofBob0 = t0.proof(1);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimExceedsAllocation.selector, pid, 0.5 ether, 0));
        market.claim(pid, 0, bob, 0.5 ether, proofBob0);
        _claim(pid, 1, bob, 0.5 ether, t1.proof(1)); // the newer root still pays bob
        assertEq(market.claimedBy(pid, bob), 0.5 ether, "bob paid through round 1");
    }

    /// v1 (ported from the uint104 slashStake case): a slash with no revealer can lift
    /// `unallocated` above what Round.allocation (uint96) holds. The allocation is then capped at
    /// the room left, stored exactly, and the rest returns to the owner at the end.
    function test_allocationAboveUint96_cappedAndStoredExactly() public {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 2;
        p.aggregatorBond = uint128(1) << 100;
        token.mint(aggregator, uint256(p.aggregatorBond) * 2);
        uint256 pid = _create(p);
        _finalizeNext(pid, bytes32(uint256(1))); // round 0: nobody revealed
        _dispute(pid, 0, owner);
        _resolve(pid, 0, 0, true, bytes32(uint256(2))); // the bond has no revealer: into the budget
        uint256 unallocated = market.getProject(pid).unallocated;
        assertEq(unallocated, REWARD + p.aggregatorBond, "set-up: unallocated above uint96");
        uint256 cap = uint256(type(uint96).max) - REWARD; // round 0 allocated REWARD
        assertEq(market.roundAllocation(pid), cap, "capped at the room left");
        _rollToFinalize(pid);
        _bond(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, cap, unallocated));
        market.finalizeRound(pid, 1, MODEL, RECORD, bytes32(uint256(3)), unallocated);
        _finalize(pid, 1, bytes32(uint256(3)));
        ILearningMarket.Round memory r = market.getRound(pid, 1);
        assertEq(r.allocation, cap, "allocation stored exactly");
        assertEq(r.cumulativeAllocated, type(uint96).max, "cumulative stored exactly");
        _rollPastChallenge(pid, 1);
        uint256 before = token.balanceOf(owner);
        _end(pid);
        assertEq(token.balanceOf(owner) - before, unallocated - cap, "the rest returns to the owner");
    }

    /// v2 (found by this suite): a round nobody revealed in could be expired right after its
    /// reveal deadline while the previous round still had a pending dispute. On the last round
    /// that let anyone end the project before the dispute was ruled: the aggregator's bond was
    /// credited back before an upheld ruling could slash it, and with a short claim window the
    /// claims closed before the disputed round ever became claimable, so its whole allocation was
    /// swept to the owner. Now an empty round waits for the previous round to settle.
    function test_emptyLastRound_cannotEndProjectBeforePreviousRoundSettles() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.numRounds = 2;
        p.claimWindow = 1;
        vm.prank(owner);
        uint256 pid = market.createProject{value: 2 * uint256(REWARD)}(p);
        _register(pid, alice);
        _commit(pid, 0, alice);
        _rollToReveal(pid);
        _reveal(pid, 0, alice);
        MerkleBuilder.Tree memory bad = _tree2(bob, REWARD, alice, 0);
        _finalizeNext(pid, bad.root());
        _dispute(pid, 0, alice);
        uint256 settles = market.settlesAfter(pid, 0);
        _rollToFinalize(pid); // round 1: nobody committed
        assertLe(block.number, settles, "set-up: round 0 still unsettled");
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, pid, 0, settles));
        market.expireRound(pid, 1);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundsRemaining.selector, pid, 1, 2));
        market.endProject(pid);
        // the arbiter upholds in time: the root is corrected and the aggregator's bond slashed
        MerkleBuilder.Tree memory good = _tree2(alice, REWARD, bob, 0);
        _resolve(pid, 0, 0, true, good.root());
        assertEq(market.getRound(pid, 0).pool, AGG_BOND, "slashed to the revealer");
        vm.roll(settles + 1);
        market.expireRound(pid, 1);
        market.endProject(pid);
        assertEq(market.creditOf(pid, aggregator), 0, "no bond credited back to a slashed aggregator");
        _claim(pid, 0, alice, REWARD, good.proof(0));
        assertEq(market.claimedBy(pid, alice), REWARD, "the honest trainer is paid");
    }
}
