// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {RejectingTrainer, ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice claim: proofs, cumulative payouts, windows, statuses, caps, hostile receivers.
contract ClaimsTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    uint256 internal pid;
    MerkleBuilder.Tree internal t0; // alice 0.5, bob 0.3, carol 0.2 (allocation 1)
    MerkleBuilder.Tree internal t1; // alice 1.2, bob 0.6, carol 0.2 (allocation 1)

    function setUp() public override {
        super.setUp();
        pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        _register(pid, carol);
        MerkleBuilder.Tree memory a = _tree3(alice, 0.5 ether, bob, 0.3 ether, carol, 0.2 ether);
        MerkleBuilder.Tree memory b = _tree3(alice, 1.2 ether, bob, 0.6 ether, carol, 0.2 ether);
        _store(t0, a);
        _store(t1, b);
        _finalizeNext(pid, a.root(), 1 ether);
    }

    function _store(MerkleBuilder.Tree storage s, MerkleBuilder.Tree memory m) internal {
        for (uint256 i = 0; i < m.nodes.length; i++) s.nodes.push(m.nodes[i]);
        for (uint256 i = 0; i < m.positions.length; i++) s.positions.push(m.positions[i]);
    }

    function _p0(uint256 i) internal view returns (bytes32[] memory) {
        MerkleBuilder.Tree memory m = t0;
        return m.proof(i);
    }

    function _p1(uint256 i) internal view returns (bytes32[] memory) {
        MerkleBuilder.Tree memory m = t1;
        return m.proof(i);
    }

    // ---------------------------------------------------------------- happy paths

    function test_claim_paysAndEmits() public {
        _rollPastChallenge(pid, 0);
        uint256 before = alice.balance;
        bytes32[] memory proof = _p0(0);
        vm.expectEmit(address(market));
        emit LearningMarket.RewardClaimed(pid, 0, alice, 0.5 ether, 0.5 ether);
        _claim(pid, 0, alice, 0.5 ether, proof);
        assertEq(alice.balance, before + 0.5 ether, "paid");
        assertEq(market.claimedBy(pid, alice), 0.5 ether, "claimedBy");
        assertEq(market.getProject(pid).claimed, 0.5 ether, "project claimed");
    }

    function test_claim_cumulativePaysOnlyTheDifference() public {
        _rollPastChallenge(pid, 0);
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        bytes32 root1 = MerkleBuilder.root(t1);
        _finalizeNext(pid, root1, 1 ether);
        _rollPastChallenge(pid, 1);
        uint256 before = alice.balance;
        bytes32[] memory proof = _p1(0);
        vm.expectEmit(address(market));
        emit LearningMarket.RewardClaimed(pid, 1, alice, 1.2 ether, 0.7 ether);
        _claim(pid, 1, alice, 1.2 ether, proof);
        assertEq(alice.balance, before + 0.7 ether, "paid the difference");
        assertEq(market.claimedBy(pid, alice), 1.2 ether, "claimedBy is the cumulative");
        // bob skips round 0 and claims his cumulative at once
        _claim(pid, 1, bob, 0.6 ether, _p1(1));
        assertEq(market.claimedBy(pid, bob), 0.6 ether, "bob");
        assertEq(market.getProject(pid).claimed, 1.8 ether, "project claimed");
    }

    function test_claim_anyoneMayTriggerPaymentToTrainer() public {
        _rollPastChallenge(pid, 0);
        uint256 aliceBefore = alice.balance;
        uint256 outsiderBefore = outsider.balance;
        bytes32[] memory proof = _p0(0);
        vm.prank(outsider);
        market.claim(pid, 0, alice, 0.5 ether, proof);
        assertEq(alice.balance, aliceBefore + 0.5 ether, "alice paid");
        assertEq(outsider.balance, outsiderBefore, "caller gets nothing");
    }

    function test_claim_erc20() public {
        uint256 p2 = _createErc20();
        MerkleBuilder.Tree memory t = _tree2(alice, 0.6 ether, bob, 0.4 ether);
        _finalizeNext(p2, t.root(), 1 ether);
        _rollPastChallenge(p2, 0);
        uint256 before = token.balanceOf(bob);
        _claim(p2, 0, bob, 0.4 ether, t.proof(1));
        assertEq(token.balanceOf(bob), before + 0.4 ether, "token paid");
        assertEq(token.balanceOf(address(market)), BUDGET - 0.4 ether, "escrow");
    }

    function test_claim_afterEndStillPays() public {
        _finishAllRounds(pid);
        _end(pid);
        uint256 before = carol.balance;
        _claim(pid, 0, carol, 0.2 ether, _p0(2));
        assertEq(carol.balance, before + 0.2 ether, "allocated money outlives the project");
    }

    // ---------------------------------------------------------------- windows and statuses

    function test_revert_claim_insideChallengeWindow() public {
        uint256 closesAt = _closesAt(pid, 0);
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ChallengeWindowOpen.selector, pid, 0, closesAt));
        market.claim(pid, 0, alice, 0.5 ether, proof);
        vm.roll(closesAt);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ChallengeWindowOpen.selector, pid, 0, closesAt));
        market.claim(pid, 0, alice, 0.5 ether, proof);
        vm.roll(closesAt + 1);
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_roundNotFinalized() public {
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.RoundNotClaimable.selector, pid, 1, LearningMarket.RoundStatus.None)
        );
        market.claim(pid, 1, alice, 0.5 ether, proof);
    }

    function test_revert_claim_disputedThenVoidedRound() public {
        _dispute(pid, 0, bob);
        _rollPastChallenge(pid, 0);
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                LearningMarket.RoundNotClaimable.selector, pid, 0, LearningMarket.RoundStatus.Disputed
            )
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
        _resolve(pid, 0, true);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.RoundNotClaimable.selector, pid, 0, LearningMarket.RoundStatus.Voided)
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_claim_dismissedRoundClaimableAtOnce() public {
        _dispute(pid, 0, bob);
        _resolve(pid, 0, false);
        assertLe(block.number, _closesAt(pid, 0), "still inside the original window");
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        assertEq(market.claimedBy(pid, alice), 0.5 ether, "paid");
    }

    // ---------------------------------------------------------------- proofs and amounts

    function test_revert_claim_badProof() public {
        _rollPastChallenge(pid, 0);
        bytes32[] memory aliceProof = _p0(0);
        bytes32[] memory bobProof = _p0(1);
        bytes memory errAlice = abi.encodeWithSelector(LearningMarket.InvalidProof.selector, pid, 0, alice);
        vm.expectRevert(errAlice); // inflated amount
        market.claim(pid, 0, alice, 0.5 ether + 1, aliceProof);
        vm.expectRevert(errAlice); // somebody else's proof
        market.claim(pid, 0, alice, 0.3 ether, bobProof);
        vm.expectRevert(errAlice); // no proof
        market.claim(pid, 0, alice, 0.5 ether, new bytes32[](0));
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.InvalidProof.selector, pid, 0, outsider));
        market.claim(pid, 0, outsider, 0.5 ether, aliceProof); // somebody else's leaf
        // a proof of the next round's tree does not open this round's root
        bytes32[] memory nextProof = _p1(0);
        vm.expectRevert(errAlice);
        market.claim(pid, 0, alice, 1.2 ether, nextProof);
    }

    function test_revert_claim_innerNodeIsNotALeaf() public {
        _rollPastChallenge(pid, 0);
        // tree of 3: nodes[1] is an inner node over two leaves; presenting it as a "leaf" fails
        // because leaves are double-hashed (a 64-byte preimage can never be a leaf preimage).
        MerkleBuilder.Tree memory m = t0;
        bytes32[] memory proof = new bytes32[](1);
        proof[0] = m.nodes[2];
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.InvalidProof.selector, pid, 0, alice));
        market.claim(pid, 0, alice, uint256(m.nodes[1]), proof);
    }

    function test_revert_claim_twice() public {
        _rollPastChallenge(pid, 0);
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, alice, 0.5 ether, 0.5 ether)
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_olderLowerCumulative() public {
        bytes32 root1 = MerkleBuilder.root(t1);
        _finalizeNext(pid, root1, 1 ether);
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.2 ether, _p1(0));
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, alice, 0.5 ether, 1.2 ether)
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_zeroLeaf() public {
        MerkleBuilder.Tree memory t = _tree2(alice, 0, bob, 0);
        _finalizeNext(pid, t.root(), 0);
        _rollPastChallenge(pid, 1);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, alice, 0, 0));
        market.claim(pid, 1, alice, 0, proof);
    }

    function test_revert_claim_rootPromisesMoreThanAllocated() public {
        // the aggregator publishes a root worth 2.1 while the cumulative allocation is 1.5: first
        // come, first served, and never a wei beyond the allocation
        MerkleBuilder.Tree memory t = _tree2(alice, 1.3 ether, dave, 0.8 ether);
        _finalizeNext(pid, t.root(), 0.5 ether); // cumulative allocated: 1 + 0.5
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.3 ether, t.proof(0));
        bytes32[] memory daveProof = t.proof(1);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.ClaimExceedsAllocation.selector, pid, 0.8 ether, 0.2 ether)
        );
        market.claim(pid, 1, dave, 0.8 ether, daveProof);
        assertEq(market.getProject(pid).claimed, 1.3 ether, "claimed");
    }

    function test_claim_otherProjectsEscrowNeverAtRisk() public {
        uint256 other = _createEth(); // 3 ETH escrowed next to pid's
        MerkleBuilder.Tree memory t = _tree2(dave, 100 ether, alice, 0);
        _finalizeNext(pid, t.root(), 0); // promises 100 ETH, allocates nothing
        _rollPastChallenge(pid, 1);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.ClaimExceedsAllocation.selector, pid, 100 ether, 1 ether)
        );
        market.claim(pid, 1, dave, 100 ether, proof);
        assertEq(address(market).balance, 2 * BUDGET + 3 * STAKE, "both escrows intact");
        assertEq(market.getProject(other).unallocated, BUDGET, "other project untouched");
    }

    // ---------------------------------------------------------------- hostile receivers

    function test_claim_rejectingReceiverOnlyHurtsItself() public {
        uint256 p2 = _createEth();
        RejectingTrainer rt = new RejectingTrainer(market);
        rt.register{value: STAKE}(p2);
        MerkleBuilder.Tree memory t = _tree2(address(rt), 0.4 ether, alice, 0.6 ether);
        _finalizeNext(p2, t.root(), 1 ether);
        _rollPastChallenge(p2, 0);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(_err(RejectingTrainer.NoEtherPlease.selector));
        market.claim(p2, 0, address(rt), 0.4 ether, proof);
        assertEq(market.claimedBy(p2, address(rt)), 0, "nothing recorded");
        _claim(p2, 0, alice, 0.6 ether, t.proof(1));
        assertEq(market.claimedBy(p2, alice), 0.6 ether, "alice unaffected");
    }

    function test_claim_reentryRefused() public {
        uint256 p2 = _createEth();
        ReentrantTrainer rt = new ReentrantTrainer(market);
        MerkleBuilder.Tree memory t = _tree2(address(rt), 0.4 ether, alice, 0.6 ether);
        _finalizeNext(p2, t.root(), 1 ether);
        _rollPastChallenge(p2, 0);
        bytes32[] memory proof = t.proof(0);
        rt.arm(ReentrantTrainer.Attack.Claim, p2, 0, 0.4 ether, proof);
        market.claim(p2, 0, address(rt), 0.4 ether, proof);
        assertTrue(rt.reentryAttempted(), "attempted");
        assertFalse(rt.reentrySucceeded(), "refused");
        assertEq(rt.reentryError(), _err(ReentrancyGuard.ReentrancyGuardReentrantCall.selector), "by the guard");
        assertEq(address(rt).balance, 0.4 ether, "paid once");
        assertEq(rt.receivedCount(), 1, "one payment");
        assertEq(market.claimedBy(p2, address(rt)), 0.4 ether, "claimedBy");
    }
}
