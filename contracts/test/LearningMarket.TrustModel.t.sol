// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";

/// @notice One test per point of issue 13 ("Trust model v2"); each fails against the v1 contract
/// (which had no expiry, one dispute slot per round, chosen allocations, voids, free roles...).
contract TrustModelTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    function _oneRevealer(uint256 pid, address who) internal {
        _commit(pid, market.getProject(pid).currentRound, who);
        _rollToReveal(pid);
        _reveal(pid, market.getProject(pid).currentRound, who);
    }

    function _finalizeDeadline(uint256 pid) internal view returns (uint256) {
        (, uint256 revealDl) = _deadlines(pid);
        return revealDl + FINALIZE;
    }

    // 1. aggregator gone: anyone expires the rounds, anyone ends, every stake comes back
    function test_aggregatorGone_roundsExpire_projectEnds_stakesWithdrawn() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        for (uint256 r = 0; r < ROUNDS; r++) {
            _oneRevealer(pid, alice);
            uint256 dl = _finalizeDeadline(pid);
            vm.roll(dl);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeStillOpen.selector, pid, r, dl));
            market.expireRound(pid, r);
            vm.roll(dl + 1);
            vm.prank(outsider);
            market.expireRound(pid, r);
            assert(market.getRound(pid, r).status == ILearningMarket.RoundStatus.Expired);
        }
        vm.prank(outsider);
        market.endProject(pid);
        assertEq(market.creditOf(pid, owner), BUDGET, "the unallocated budget is the owner's, as a credit");
        uint256 before = bob.balance;
        vm.prank(bob);
        market.withdrawStake(pid);
        assertEq(bob.balance - before, STAKE, "bob.balance - before, STAKE");
        vm.prank(alice);
        market.withdrawStake(pid);
    }

    // 1b. a project without trainers needs no aggregator: empty rounds expire at the reveal deadline
    function test_noTrainers_roundsExpireRightAfterReveal() public {
        uint256 pid = _createEth();
        for (uint256 r = 0; r < ROUNDS; r++) {
            _rollToFinalize(pid);
            market.expireRound(pid, r);
        }
        _end(pid);
        assertEq(market.getProject(pid).unallocated, 0, "market.getProject(pid).unallocated, 0");
    }

    // 1c. a missed deadline slashes the aggregator's bond to the round's revealers, and frees the seat
    function test_missedFinalize_slashesBondToRevealers_ownerReplacesAggregator() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        _bond(pid);
        _oneRevealer(pid, alice);
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.RoleNotMissed.selector, pid, ILearningMarket.Role.Aggregator)
        );
        market.replaceRole(pid, ILearningMarket.Role.Aggregator, dave);
        vm.roll(_finalizeDeadline(pid) + 1);
        market.expireRound(pid, 0);
        assertEq(market.getRound(pid, 0).pool, AGG_BOND, "market.getRound(pid, 0).pool, AGG_BOND");
        assertEq(market.poolShareOf(pid, 0, alice), AGG_BOND, "market.poolShareOf(pid, 0, alice), AGG_B");
        uint256 before = carol.balance;
        vm.prank(alice);
        market.claimPoolShare(pid, 0, carol);
        assertEq(carol.balance - before, AGG_BOND, "carol.balance - before, AGG_BOND");
        // the expired round's share rolled over
        assertEq(market.roundAllocation(pid), 2 * uint256(REWARD), "market.roundAllocation(pid), 2 * uint256");
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, alice));
        market.replaceRole(pid, ILearningMarket.Role.Aggregator, alice); // a trainer
        vm.prank(owner);
        market.replaceRole(pid, ILearningMarket.Role.Aggregator, dave);
        assertEq(market.getProject(pid).aggregator, dave, "market.getProject(pid).aggregator, dave");
        _finalizeNext(pid, keccak256("r1"));
        assertEq(market.getRound(pid, 1).allocation, 2 * uint256(REWARD), "market.getRound(pid, 1).allocation, 2 * ");
    }

    // 2. arbiter silent: the dispute lapses, the round stands, the next finalize is not blocked
    function test_silentArbiter_disputeLapses_nextFinalizeProceeds_ownerReplacesArbiter() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalizeNext(pid, t.root());
        _dispute(pid, 0, alice);
        uint256 deadline = _closesAt(pid, 0) + RULE;
        assertEq(market.settlesAfter(pid, 0), deadline, "market.settlesAfter(pid, 0), deadline");
        _rollToFinalize(pid);
        if (block.number <= deadline) {
            vm.prank(aggregator);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, pid, 0, deadline));
            market.finalizeRound(pid, 1, MODEL, RECORD, keccak256("r1"), REWARD);
        }
        vm.roll(deadline + 1);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RulingClosed.selector, pid, 0, deadline));
        market.resolveDispute(pid, 0, 0, false, "late", bytes32(0));
        _finalize(pid, 1, keccak256("r1"));
        // the lapse refunds the bond and lets the owner replace the arbiter
        vm.prank(outsider);
        market.lapseDispute(pid, 0, 0);
        assertEq(market.creditOf(pid, alice), BOND, "market.creditOf(pid, alice), BOND");
        assert(market.getRound(pid, 0).status == ILearningMarket.RoundStatus.Dismissed);
        vm.prank(owner);
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, dave);
        assertEq(market.getProject(pid).arbiter, dave, "market.getProject(pid).arbiter, dave");
        _claim(pid, 0, alice, REWARD, t.proof(0));
    }

    // 3. withholding: the allocation is fixed by the parameters, not chosen by the aggregator
    function test_allocationIsFixed_aggregatorCannotAllocateOneWei() public {
        uint256 pid = _createEth();
        _bond(pid);
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, REWARD, 1));
        market.finalizeRound(pid, 0, MODEL, RECORD, keccak256("r"), 1);
    }

    // 5. several disputes per round; a colluder's dismissed dispute does not settle the round
    function test_severalDisputes_colluderFirst_honestStillHeard() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        _oneRevealer(pid, alice);
        MerkleBuilder.Tree memory bad = _tree2(bob, REWARD, alice, 0);
        _finalizeNext(pid, bad.root());
        _dispute(pid, 0, bob); // colluder, empty-handed
        _dispute(pid, 0, alice); // honest, second: v1 reverted here
        assertEq(market.getRound(pid, 0).disputeCount, 2, "market.getRound(pid, 0).disputeCount, 2");
        _resolve(pid, 0, 0, false, bytes32(0));
        _rollPastChallenge(pid, 0);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 0, _closesAt(pid, 0) + RULE + 1)
        );
        _claim(pid, 0, bob, REWARD, bad.proof(0));
        MerkleBuilder.Tree memory good = _tree2(alice, REWARD, bob, 0);
        _resolve(pid, 0, 1, true, good.root());
        assert(market.getRound(pid, 0).status == ILearningMarket.RoundStatus.Corrected);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, 0, bob));
        _claim(pid, 0, bob, REWARD, bad.proof(0));
        _claim(pid, 0, alice, REWARD, good.proof(0));
    }

    // 5b. nothing claimable before the window ends, even once the only dispute is dismissed
    function test_dismissedDispute_doesNotOpenClaimsEarly() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalizeNext(pid, t.root());
        _dispute(pid, 0, alice);
        _resolve(pid, 0, 0, false, bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotClaimable.selector, pid, 0, _closesAt(pid, 0) + 1));
        _claim(pid, 0, alice, REWARD, t.proof(0));
    }

    // 6. distinct roles
    function test_rolesMustBeDistinct() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.aggregator = owner;
        vm.deal(owner, BUDGET);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, owner));
        market.createProject{value: BUDGET}(p);
        p = _params(address(0));
        p.arbiter = aggregator;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, aggregator));
        market.createProject{value: BUDGET}(p);
        uint256 pid = _createEth();
        uint256 stake = STAKE;
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, aggregator));
        market.register{value: stake}(pid);
        vm.prank(owner);
        market.transferProjectOwnership(pid, arbiter);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, arbiter));
        market.acceptProjectOwnership(pid);
    }

    // 6b/9. forfeited bonds never go to the party that caused them: a dismissed owner's dispute
    // pays the aggregator, not the owner
    function test_ownersDismissedDispute_costsTheOwner() public {
        uint256 pid = _createEth();
        _finalizeNext(pid, keccak256("r0"));
        _dispute(pid, 0, owner);
        _resolve(pid, 0, 0, false, bytes32(0));
        assertEq(market.creditOf(pid, aggregator), BOND, "market.creditOf(pid, aggregator), BOND");
        assertEq(market.creditOf(pid, owner), 0, "market.creditOf(pid, owner), 0");
    }

    // 7. a correction instead of a void: on the last round the owner gets nothing back
    function test_upheldLastRound_correctsRoot_ownerRecoversNothing() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.numRounds = 1;
        vm.prank(owner);
        uint256 pid = market.createProject{value: REWARD}(p);
        _register(pid, alice);
        _oneRevealer(pid, alice);
        _finalizeNext(pid, _tree2(bob, REWARD, alice, 0).root());
        _dispute(pid, 0, alice);
        vm.prank(arbiter);
        vm.expectRevert(ILearningMarket.EmptyRoot.selector);
        market.resolveDispute(pid, 0, 0, true, "r", bytes32(0));
        MerkleBuilder.Tree memory good = _tree2(alice, REWARD, bob, 0);
        _resolve(pid, 0, 0, true, good.root());
        assertEq(market.getRound(pid, 0).pool, AGG_BOND, "the aggregator's bond goes to the revealers");
        vm.roll(market.settlesAfter(pid, 0) + 1);
        _end(pid);
        assertEq(market.getProject(pid).unallocated, 0, "market.getProject(pid).unallocated, 0");
        _claim(pid, 0, alice, REWARD, good.proof(0));
    }

    // 8a. minimum bond, stake, deposit and challenge window
    function test_minimums() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.disputeBond = 0;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 1, 0, REWARD / 100));
        market.createProject{value: BUDGET}(p);
        p = _params(address(0));
        p.stake = DEPOSIT - 1;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 0, DEPOSIT - 1, DEPOSIT));
        market.createProject{value: BUDGET}(p);
        p = _params(address(0));
        p.commitDeposit = 0;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 3, 0, REWARD / 1000));
        market.createProject{value: BUDGET}(p);
        p = _params(address(0));
        p.challengeWindow = 1;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WindowTooShort.selector, 1, 2));
        market.createProject{value: BUDGET}(p);
    }

    // 8b. an unrevealed commitment costs its deposit, paid to the round's revealers; a revealed one
    // cannot be touched (slashing only by a missed reveal or a ruled dispute)
    function test_unrevealedCommit_forfeitsDepositToRevealers() public {
        uint256 pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        _commit(pid, 0, alice);
        _commit(pid, 0, bob);
        _rollToReveal(pid);
        _reveal(pid, 0, alice);
        vm.expectRevert();
        market.forfeitDeposit(pid, 0, bob); // reveal window still open
        _rollToFinalize(pid);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AlreadyRevealed.selector, pid, 0, alice));
        market.forfeitDeposit(pid, 0, alice);
        vm.prank(outsider);
        market.forfeitDeposit(pid, 0, bob);
        (, uint256 left) = market.registration(pid, bob);
        assertEq(left, STAKE - DEPOSIT, "left, STAKE - DEPOSIT");
        _finalize(pid, 0, _tree2(alice, REWARD, bob, 0).root());
        assertEq(market.poolShareOf(pid, 0, alice), DEPOSIT, "market.poolShareOf(pid, 0, alice), DEPOS");
        assertEq(market.poolShareOf(pid, 0, bob), 0, "market.poolShareOf(pid, 0, bob), 0");
    }

    // 8c. claim to a chosen recipient
    function test_claimTo_paysTheRecipient() public {
        uint256 pid = _createEth();
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalizeNext(pid, t.root());
        _rollPastChallenge(pid, 0);
        uint256 before = carol.balance;
        bytes32[] memory proof = t.proof(0);
        vm.prank(alice);
        market.claimTo(pid, 0, REWARD, proof, carol);
        assertEq(carol.balance - before, REWARD, "carol.balance - before, REWARD");
    }

    // 8d. a claim deadline and a sweep of what no leaf claimed
    function test_claimDeadline_andSweep() public {
        uint256 pid = _createEth();
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalizeNext(pid, t.root());
        _finishAllRounds(pid);
        _end(pid);
        uint256 deadline = block.number + CLAIM;
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimsStillOpen.selector, pid, deadline));
        market.sweep(pid);
        vm.roll(deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimsClosed.selector, pid, deadline));
        _claim(pid, 0, alice, REWARD, t.proof(0));
        vm.prank(outsider);
        market.sweep(pid);
        assertEq(market.creditOf(pid, owner), REWARD, "market.creditOf(pid, owner), REWARD");
    }
}
