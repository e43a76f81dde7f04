// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {RejectingTrainer, ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice claim, claimTo and claimPoolShare: proofs, cumulative payouts, windows, statuses, caps,
/// the claim deadline, hostile receivers.
contract ClaimsTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    uint256 internal pid;
    MerkleBuilder.Tree internal t0; // alice 0.5, bob 0.3, carol 0.2 (allocation 1)
    MerkleBuilder.Tree internal t1; // alice 1.2, bob 0.6, carol 0.2 (cumulative allocation 2)

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
        _finalizeNext(pid, a.root());
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

    function _reentryError() internal pure returns (bytes memory) {
        return _err(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
    }

    // ---------------------------------------------------------------- happy paths

    function test_claim_paysAndEmits() public {
        _rollPastChallenge(pid, 0);
        uint256 before = alice.balance;
        bytes32[] memory proof = _p0(0);
        vm.expectEmit(address(market));
        emit ILearningMarket.RewardClaimed(pid, 0, alice, 0.5 ether, 0.5 ether, alice);
        _claim(pid, 0, alice, 0.5 ether, proof);
        assertEq(alice.balance, before + 0.5 ether, "paid");
        assertEq(market.claimedBy(pid, alice), 0.5 ether, "claimedBy");
        assertEq(market.getProject(pid).claimed, 0.5 ether, "project claimed");
    }

    function test_claim_cumulativePaysOnlyTheDifference() public {
        _rollPastChallenge(pid, 0);
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        bytes32 root1 = MerkleBuilder.root(t1);
        _finalizeNext(pid, root1);
        _rollPastChallenge(pid, 1);
        uint256 before = alice.balance;
        bytes32[] memory proof = _p1(0);
        vm.expectEmit(address(market));
        emit ILearningMarket.RewardClaimed(pid, 1, alice, 1.2 ether, 0.7 ether, alice);
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
        _finalizeNext(p2, t.root());
        _rollPastChallenge(p2, 0);
        uint256 before = token.balanceOf(bob);
        _claim(p2, 0, bob, 0.4 ether, t.proof(1));
        assertEq(token.balanceOf(bob), before + 0.4 ether, "token paid");
        assertEq(token.balanceOf(address(market)), BUDGET + AGG_BOND - 0.4 ether, "escrow");
    }

    /// Adapted: allocated money outlives the project until the claim deadline (v1: forever).
    function test_claim_afterEndStillPaysUntilDeadline() public {
        _finishAllRounds(pid);
        _end(pid);
        uint256 before = carol.balance;
        vm.roll(block.number + CLAIM);
        _claim(pid, 0, carol, 0.2 ether, _p0(2));
        assertEq(carol.balance, before + 0.2 ether, "paid at the claim deadline");
        vm.roll(block.number + 1);
        bytes32[] memory proof = _p0(0);
        uint256 deadline = market.getProject(pid).endedAt + CLAIM;
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimsClosed.selector, pid, deadline));
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    // ---------------------------------------------------------------- claimTo

    function test_claimTo_paysRecipientRecordsTrainer() public {
        _rollPastChallenge(pid, 0);
        uint256 before = dave.balance;
        bytes32[] memory proof = _p0(1);
        vm.expectEmit(address(market));
        emit ILearningMarket.RewardClaimed(pid, 0, bob, 0.3 ether, 0.3 ether, dave);
        vm.prank(bob);
        market.claimTo(pid, 0, 0.3 ether, proof, dave);
        assertEq(dave.balance, before + 0.3 ether, "recipient paid");
        assertEq(market.claimedBy(pid, bob), 0.3 ether, "recorded against the leaf");
    }

    function test_revert_claimTo_onlyTheLeafsOwnAccount() public {
        _rollPastChallenge(pid, 0);
        bytes32[] memory proof = _p0(0);
        vm.prank(outsider); // alice's proof, but the caller's leaf is checked
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, outsider));
        market.claimTo(pid, 0, 0.5 ether, proof, outsider);
    }

    function test_revert_claimTo_zeroRecipient() public {
        _rollPastChallenge(pid, 0);
        bytes32[] memory proof = _p0(0);
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.ZeroRecipient.selector));
        market.claimTo(pid, 0, 0.5 ether, proof, address(0));
    }

    // ---------------------------------------------------------------- windows and statuses

    function test_revert_claim_insideChallengeWindow() public {
        uint256 closesAt = _closesAt(pid, 0);
        bytes32[] memory proof = _p0(0);
        bytes memory err = abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 0, closesAt + 1);
        vm.expectRevert(err);
        market.claim(pid, 0, alice, 0.5 ether, proof);
        vm.roll(closesAt);
        vm.expectRevert(err);
        market.claim(pid, 0, alice, 0.5 ether, proof);
        vm.roll(closesAt + 1);
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_roundNotFinalized() public {
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 1, 0));
        market.claim(pid, 1, alice, 0.5 ether, proof);
    }

    function test_revert_claim_expiredRound() public {
        _rollToFinalize(pid);
        market.expireRound(pid, 1);
        vm.roll(block.number + 100);
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 1, 0));
        market.claim(pid, 1, alice, 0.5 ether, proof);
    }

    /// Adapted from v1's voided round: a disputed round waits for its ruling deadline; an upheld
    /// dispute replaces the root, so the old proofs fail and the corrected ones pay.
    function test_claim_disputedThenCorrectedRound() public {
        _dispute(pid, 0, bob);
        _rollPastChallenge(pid, 0);
        uint256 ruling = _closesAt(pid, 0) + RULE;
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 0, ruling + 1));
        market.claim(pid, 0, alice, 0.5 ether, proof);
        MerkleBuilder.Tree memory fixed_ = _tree3(alice, 0.4 ether, bob, 0.4 ether, carol, 0.2 ether);
        _resolve(pid, 0, 0, true, fixed_.root());
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, alice));
        market.claim(pid, 0, alice, 0.5 ether, proof);
        _claim(pid, 0, bob, 0.4 ether, fixed_.proof(1));
        assertEq(market.claimedBy(pid, bob), 0.4 ether, "corrected amount");
    }

    /// Adapted: v1 made a dismissed round claimable at once; v2 waits for the window's end.
    function test_claim_dismissedRoundClaimableAfterWindow() public {
        _dispute(pid, 0, bob);
        _resolve(pid, 0, 0, false, bytes32(0));
        bytes32[] memory proof = _p0(0);
        uint256 closes = _closesAt(pid, 0);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 0, closes + 1));
        market.claim(pid, 0, alice, 0.5 ether, proof);
        vm.roll(closes + 1);
        _claim(pid, 0, alice, 0.5 ether, proof);
        assertEq(market.claimedBy(pid, alice), 0.5 ether, "paid");
    }

    // ---------------------------------------------------------------- proofs and amounts

    function test_revert_claim_badProof() public {
        _rollPastChallenge(pid, 0);
        bytes32[] memory aliceProof = _p0(0);
        bytes32[] memory bobProof = _p0(1);
        bytes memory errAlice = abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, alice);
        vm.expectRevert(errAlice); // inflated amount
        market.claim(pid, 0, alice, 0.5 ether + 1, aliceProof);
        vm.expectRevert(errAlice); // somebody else's proof
        market.claim(pid, 0, alice, 0.3 ether, bobProof);
        vm.expectRevert(errAlice); // no proof
        market.claim(pid, 0, alice, 0.5 ether, new bytes32[](0));
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, outsider));
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
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, alice));
        market.claim(pid, 0, alice, uint256(m.nodes[1]), proof);
    }

    function test_revert_claim_twice() public {
        _rollPastChallenge(pid, 0);
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.NothingToClaim.selector, pid, alice, 0.5 ether, 0.5 ether)
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_olderLowerCumulative() public {
        bytes32 root1 = MerkleBuilder.root(t1);
        _finalizeNext(pid, root1);
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.2 ether, _p1(0));
        bytes32[] memory proof = _p0(0);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.NothingToClaim.selector, pid, alice, 0.5 ether, 1.2 ether)
        );
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    function test_revert_claim_zeroLeaf() public {
        MerkleBuilder.Tree memory t = _tree2(alice, 0, bob, 0);
        _finalizeNext(pid, t.root());
        _rollPastChallenge(pid, 1);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToClaim.selector, pid, alice, 0, 0));
        market.claim(pid, 1, alice, 0, proof);
    }

    /// A dishonest root promising more than the cumulative allocation (2.1 against 2): first come,
    /// first served, and never a wei beyond the allocation.
    function test_revert_claim_rootPromisesMoreThanAllocated() public {
        _rollPastChallenge(pid, 0);
        _claim(pid, 0, alice, 0.5 ether, _p0(0));
        MerkleBuilder.Tree memory t = _tree2(alice, 1.3 ether, dave, 0.8 ether);
        _finalizeNext(pid, t.root()); // cumulative allocated: 1 + 1
        _rollPastChallenge(pid, 1);
        _claim(pid, 1, alice, 1.3 ether, t.proof(0));
        bytes32[] memory daveProof = t.proof(1);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.ClaimExceedsAllocation.selector, pid, 0.8 ether, 0.7 ether)
        );
        market.claim(pid, 1, dave, 0.8 ether, daveProof);
        assertEq(market.getProject(pid).claimed, 1.3 ether, "claimed");
    }

    function test_claim_otherProjectsEscrowNeverAtRisk() public {
        uint256 other = _createEth(); // 3 ETH escrowed next to pid's
        MerkleBuilder.Tree memory t = _tree2(dave, 100 ether, alice, 0);
        _finalizeNext(pid, t.root()); // promises 100 ETH, the cumulative allocation is 2
        _rollPastChallenge(pid, 1);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.ClaimExceedsAllocation.selector, pid, 100 ether, 2 ether)
        );
        market.claim(pid, 1, dave, 100 ether, proof);
        assertEq(address(market).balance, 2 * BUDGET + 3 * STAKE + AGG_BOND, "both escrows intact");
        assertEq(market.getProject(other).unallocated, BUDGET, "other project untouched");
    }

    // ---------------------------------------------------------------- pool shares

    function test_claimPoolShare_splitsSlashedBondAmongRevealers() public {
        // round 1: alice and bob reveal, the aggregator misses the deadline
        _commit(pid, 1, alice);
        _commit(pid, 1, bob);
        _commit(pid, 1, carol);
        _rollToReveal(pid);
        _reveal(pid, 1, alice);
        _reveal(pid, 1, bob);
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 1, carol);
        vm.roll(block.number + FINALIZE);
        market.expireRound(pid, 1);
        uint256 pool = AGG_BOND + DEPOSIT;
        assertEq(market.getRound(pid, 1).pool, pool, "pool");
        assertEq(market.poolShareOf(pid, 1, alice), pool / 2, "alice's share");
        assertEq(market.poolShareOf(pid, 1, carol), 0, "non-revealer: none");
        vm.expectEmit(address(market));
        emit ILearningMarket.PoolShareClaimed(pid, 1, alice, pool / 2, dave);
        vm.prank(alice);
        market.claimPoolShare(pid, 1, dave);
        assertEq(market.poolShareOf(pid, 1, alice), 0, "taken");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, alice));
        market.claimPoolShare(pid, 1, alice);
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, carol));
        market.claimPoolShare(pid, 1, carol);
        vm.prank(bob);
        market.claimPoolShare(pid, 1, bob);
        assertEq(market.getProject(pid).pools, 0, "pool emptied");
    }

    function test_revert_claimPoolShare_openRoundOrZeroRecipient() public {
        _commit(pid, 1, alice);
        _rollToReveal(pid);
        _reveal(pid, 1, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, alice));
        market.claimPoolShare(pid, 1, alice); // round still open
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.ZeroRecipient.selector));
        market.claimPoolShare(pid, 1, address(0));
    }

    // ---------------------------------------------------------------- hostile receivers

    function test_claim_rejectingReceiverOnlyHurtsItself() public {
        uint256 p2 = _createEth();
        RejectingTrainer rt = new RejectingTrainer(market);
        rt.register{value: STAKE}(p2);
        MerkleBuilder.Tree memory t = _tree2(address(rt), 0.4 ether, alice, 0.6 ether);
        _finalizeNext(p2, t.root());
        _rollPastChallenge(p2, 0);
        bytes32[] memory proof = t.proof(0);
        vm.expectRevert(_err(RejectingTrainer.NoEtherPlease.selector));
        market.claim(p2, 0, address(rt), 0.4 ether, proof);
        assertEq(market.claimedBy(p2, address(rt)), 0, "nothing recorded");
        _claim(p2, 0, alice, 0.6 ether, t.proof(1));
        assertEq(market.claimedBy(p2, alice), 0.6 ether, "alice unaffected");
        // and claimTo rescues it: the contract names another recipient
        uint256 before = carol.balance;
        vm.prank(address(rt));
        market.claimTo(p2, 0, 0.4 ether, proof, carol);
        assertEq(carol.balance, before + 0.4 ether, "paid elsewhere");
    }

    function test_claim_reentryRefused() public {
        uint256 p2 = _createEth();
        ReentrantTrainer rt = new ReentrantTrainer(market);
        MerkleBuilder.Tree memory t = _tree2(address(rt), 0.4 ether, alice, 0.6 ether);
        _finalizeNext(p2, t.root());
        _rollPastChallenge(p2, 0);
        bytes32[] memory proof = t.proof(0);
        rt.arm(ReentrantTrainer.Attack.Claim, p2, 0, 0.4 ether, proof);
        market.claim(p2, 0, address(rt), 0.4 ether, proof);
        assertTrue(rt.reentryAttempted(), "attempted");
        assertFalse(rt.reentrySucceeded(), "refused");
        assertEq(rt.reentryError(), _reentryError(), "by the guard");
        assertEq(address(rt).balance, 0.4 ether, "paid once");
        assertEq(rt.receivedCount(), 1, "one payment");
        assertEq(market.claimedBy(p2, address(rt)), 0.4 ether, "claimedBy");
    }
}
