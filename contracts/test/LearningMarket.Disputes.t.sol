// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice dispute, resolveDispute (corrections), lapseDispute, replaceRole and withdrawCredit.
contract DisputesTest is MarketFixture {
    uint256 internal pid;
    bytes32 internal constant ROOT0 = keccak256("root0");
    bytes32 internal constant FIXED = keccak256("fixed0");

    function setUp() public override {
        super.setUp();
        pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        _commit(pid, 0, alice);
        _rollToReveal(pid);
        _reveal(pid, 0, alice);
        _finalizeNext(pid, ROOT0);
    }

    function _status(uint256 p, uint256 round) internal view returns (uint256) {
        return uint256(market.getRound(p, round).status);
    }

    function _ruling(uint256 p, uint256 round) internal view returns (uint256) {
        return _closesAt(p, round) + market.getProject(p).ruleWindow;
    }

    // ---------------------------------------------------------------- dispute

    function test_dispute_byTrainer_holdsBondAndEmits() public {
        uint256 before = address(market).balance;
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundDisputed(pid, 0, 0, alice, "bafyevidence", BOND);
        _dispute(pid, 0, alice);
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Disputed), "disputed");
        ILearningMarket.Dispute memory d = market.getDispute(pid, 0, 0);
        assertEq(d.disputer, alice, "disputer");
        assertEq(d.bond, BOND, "bond");
        assertEq(uint256(d.status), uint256(ILearningMarket.DisputeStatus.Pending), "pending");
        assertEq(address(market).balance, before + BOND, "bond held");
        ILearningMarket.Round memory r = market.getRound(pid, 0);
        assertEq(r.disputeCount, 1, "count");
        assertEq(r.pendingDisputes, 1, "pending");
    }

    function test_dispute_byOwner() public {
        _dispute(pid, 0, owner);
        assertEq(market.getDispute(pid, 0, 0).disputer, owner, "owner is a stakeholder");
    }

    function test_dispute_atLastBlockOfWindow() public {
        vm.roll(_closesAt(pid, 0));
        _dispute(pid, 0, bob);
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Disputed), "disputed in time");
    }

    function test_dispute_erc20PullsBond() public {
        uint256 p2 = _createErc20();
        _register(p2, alice);
        _finalizeNext(p2, keccak256("r"));
        uint256 before = token.balanceOf(alice);
        _dispute(p2, 0, alice);
        assertEq(token.balanceOf(alice), before - BOND, "bond paid in tokens");
        assertEq(token.balanceOf(address(market)), BUDGET + STAKE + AGG_BOND + BOND, "escrow");
    }

    /// Adapted: v1 refused a second dispute (one slot per round); v2 takes any number, each with
    /// its own index, evidence and bond, inside the window, also after a ruling.
    function test_dispute_severalPerRound() public {
        _dispute(pid, 0, alice);
        _dispute(pid, 0, bob);
        _dispute(pid, 0, owner);
        assertEq(market.getRound(pid, 0).disputeCount, 3, "three");
        assertEq(market.getDispute(pid, 0, 1).disputer, bob, "second");
        _resolve(pid, 0, 1, false, bytes32(0));
        assertEq(market.getRound(pid, 0).pendingDisputes, 2, "two left");
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Disputed), "still disputed");
        _resolve(pid, 0, 0, false, bytes32(0));
        _resolve(pid, 0, 2, false, bytes32(0));
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Dismissed), "dismissed");
        _dispute(pid, 0, alice); // a dismissed round may be disputed again inside its window
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Disputed), "disputed again");
    }

    function test_revert_dispute_nonStakeholder() public {
        address[3] memory others = [outsider, aggregator, arbiter];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotStakeholder.selector, pid, others[i]));
            market.dispute{value: BOND}(pid, 0, "bafyevidence");
        }
    }

    function test_revert_dispute_emptyEvidence() public {
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.EmptyCID.selector));
        market.dispute{value: BOND}(pid, 0, "");
    }

    function test_revert_dispute_afterWindow() public {
        uint256 closesAt = _closesAt(pid, 0);
        vm.roll(closesAt + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ChallengeWindowClosed.selector, pid, 0, closesAt));
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    function test_revert_dispute_unfinalizedOrExpiredRound() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotFinalized.selector, pid, 1));
        market.dispute{value: BOND}(pid, 1, "bafyevidence");
        _rollToFinalize(pid);
        market.expireRound(pid, 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotFinalized.selector, pid, 1));
        market.dispute{value: BOND}(pid, 1, "bafyevidence");
    }

    function test_revert_dispute_wrongBond() public {
        uint256[3] memory sent = [uint256(0), BOND - 1, BOND + 1];
        for (uint256 i = 0; i < sent.length; i++) {
            vm.prank(alice);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, BOND, sent[i]));
            market.dispute{value: sent[i]}(pid, 0, "bafyevidence");
        }
    }

    function test_revert_dispute_etherWithErc20Project() public {
        uint256 p2 = _createErc20();
        _register(p2, alice);
        _finalizeNext(p2, keccak256("r"));
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.UnexpectedEther.selector));
        market.dispute{value: BOND}(p2, 0, "bafyevidence");
    }

    // ---------------------------------------------------------------- resolve: upheld

    /// Adapted from v1's void: the root is corrected, the allocation stays, the bond comes back,
    /// the aggregator's bond goes to the round's revealers.
    function test_resolve_upheld_correctsRootCreditsBondSlashesAggregator() public {
        _dispute(pid, 0, bob);
        vm.expectEmit(address(market));
        emit ILearningMarket.DisputeResolved(pid, 0, 0, true, "bafyreason", FIXED);
        vm.expectEmit(address(market));
        emit ILearningMarket.AggregatorSlashed(pid, 0, aggregator, AGG_BOND);
        _resolve(pid, 0, 0, true, FIXED);
        ILearningMarket.Round memory r = market.getRound(pid, 0);
        assertEq(uint256(r.status), uint256(ILearningMarket.RoundStatus.Corrected), "corrected");
        assertEq(r.rewardsRoot, FIXED, "root replaced");
        assertTrue(r.corrected, "flag");
        assertEq(r.allocation, REWARD, "allocation unchanged");
        assertEq(r.pool, AGG_BOND, "slashed bond in the pool");
        assertEq(uint256(market.getDispute(pid, 0, 0).status), uint256(ILearningMarket.DisputeStatus.Upheld), "up");
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.allocated, REWARD, "allocation stays");
        assertEq(p.bondHeld, 0, "bond gone");
        assertEq(market.creditOf(pid, bob), BOND, "bond credited");
        assertEq(market.poolShareOf(pid, 0, alice), AGG_BOND, "the revealer's share");

        uint256 before = bob.balance;
        vm.expectEmit(address(market));
        emit ILearningMarket.CreditWithdrawn(pid, bob, BOND, bob);
        vm.prank(bob);
        market.withdrawCredit(pid);
        assertEq(bob.balance, before + BOND, "bond refunded");
        assertEq(market.creditOf(pid, bob), 0, "credit spent");
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, bob));
        market.withdrawCredit(pid);
    }

    function test_resolve_upheld_aggregatorMustRebondBeforeNextFinalize() public {
        _dispute(pid, 0, bob);
        _resolve(pid, 0, 0, true, FIXED);
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BondNotPosted.selector, pid, AGG_BOND));
        market.finalizeRound(pid, 1, MODEL, RECORD, keccak256("r1"), REWARD);
        _finalize(pid, 1, keccak256("r1")); // re-posts, then finalizes
        assertEq(market.getRound(pid, 1).cumulativeAllocated, 2 * REWARD, "corrected round still counted");
    }

    /// Two upheld disputes: the later correction wins, the bond is slashed once.
    function test_resolve_twoUpheld_lastCorrectionWins() public {
        _dispute(pid, 0, alice);
        _dispute(pid, 0, bob);
        _resolve(pid, 0, 0, true, FIXED);
        _resolve(pid, 0, 1, true, keccak256("fixed-again"));
        ILearningMarket.Round memory r = market.getRound(pid, 0);
        assertEq(r.rewardsRoot, keccak256("fixed-again"), "latest root");
        assertEq(r.pool, AGG_BOND, "slashed once");
        assertEq(market.creditOf(pid, alice), BOND, "alice refunded");
        assertEq(market.creditOf(pid, bob), BOND, "bob refunded");
    }

    /// Upheld then dismissed: the round stays Corrected.
    function test_resolve_upheldThenDismissed_staysCorrected() public {
        _dispute(pid, 0, alice);
        _dispute(pid, 0, bob);
        _resolve(pid, 0, 0, true, FIXED);
        _resolve(pid, 0, 1, false, bytes32(0));
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Corrected), "corrected");
        assertEq(market.creditOf(pid, aggregator), BOND, "bob's bond to the aggregator");
    }

    function test_resolve_upheld_erc20Credit() public {
        uint256 p2 = _createErc20();
        _register(p2, bob);
        _finalizeNext(p2, keccak256("r"));
        _dispute(p2, 0, bob);
        _resolve(p2, 0, 0, true, FIXED);
        uint256 before = token.balanceOf(bob);
        vm.prank(bob);
        market.withdrawCredit(p2);
        assertEq(token.balanceOf(bob), before + BOND, "refunded in tokens");
    }

    /// Upheld on a round nobody revealed in: the slashed bond has no revealer and joins the budget.
    function test_resolve_upheld_noRevealers_slashToUnallocated() public {
        _finalizeNext(pid, keccak256("r1"));
        _dispute(pid, 1, bob);
        uint256 before = market.getProject(pid).unallocated;
        _resolve(pid, 1, 0, true, FIXED);
        assertEq(market.getProject(pid).unallocated, before + AGG_BOND, "to the budget");
        assertEq(market.getRound(pid, 1).pool, 0, "no pool");
    }

    function test_revert_resolve_upheldNeedsRoot() public {
        _dispute(pid, 0, alice);
        vm.prank(arbiter);
        vm.expectRevert(_err(ILearningMarket.EmptyRoot.selector));
        market.resolveDispute(pid, 0, 0, true, "bafyreason", bytes32(0));
    }

    // ---------------------------------------------------------------- resolve: dismissed

    /// Adapted: v1 forfeited the bond to the owner's pool; v2 credits it to the aggregator (never
    /// to the party that caused it).
    function test_resolve_dismissed_bondToAggregator() public {
        _dispute(pid, 0, bob);
        vm.expectEmit(address(market));
        emit ILearningMarket.DisputeResolved(pid, 0, 0, false, "bafyreason", bytes32(0));
        _resolve(pid, 0, 0, false, keccak256("ignored"));
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Dismissed), "dismissed");
        assertEq(market.getRound(pid, 0).rewardsRoot, ROOT0, "root unchanged");
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.allocated, REWARD, "round stands");
        assertEq(p.unallocated, BUDGET - REWARD, "budget unchanged");
        assertEq(p.bondHeld, AGG_BOND, "aggregator keeps its bond");
        assertEq(market.creditOf(pid, bob), 0, "no credit");
        assertEq(market.creditOf(pid, aggregator), BOND, "the aggregator's");
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, bob));
        market.withdrawCredit(pid);
    }

    function test_revert_resolve_notArbiter() public {
        _dispute(pid, 0, alice);
        address[4] memory others = [owner, aggregator, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotArbiter.selector, pid, others[i]));
            market.resolveDispute(pid, 0, 0, true, "bafyreason", FIXED);
        }
    }

    /// Adapted from v1's NotDisputed.
    function test_revert_resolve_disputeNotPending() public {
        vm.prank(arbiter); // finalized, undisputed
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.DisputeNotPending.selector, pid, 0, 0));
        market.resolveDispute(pid, 0, 0, true, "bafyreason", FIXED);
        vm.prank(arbiter); // never finalized
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.DisputeNotPending.selector, pid, 1, 0));
        market.resolveDispute(pid, 1, 0, true, "bafyreason", FIXED);
        _dispute(pid, 0, alice);
        vm.prank(arbiter); // an index that does not exist
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.DisputeNotPending.selector, pid, 0, 1));
        market.resolveDispute(pid, 0, 1, true, "bafyreason", FIXED);
        _resolve(pid, 0, 0, true, FIXED);
        vm.prank(arbiter); // already resolved
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.DisputeNotPending.selector, pid, 0, 0));
        market.resolveDispute(pid, 0, 0, false, "bafyreason", bytes32(0));
    }

    function test_resolve_atRulingDeadline_thenRulingClosed() public {
        _dispute(pid, 0, alice);
        _dispute(pid, 0, bob);
        uint256 deadline = _ruling(pid, 0);
        vm.roll(deadline);
        _resolve(pid, 0, 0, false, bytes32(0));
        vm.roll(deadline + 1);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RulingClosed.selector, pid, 0, deadline));
        market.resolveDispute(pid, 0, 1, true, "late", FIXED);
    }

    // ---------------------------------------------------------------- lapse

    function test_lapse_refundsBondRoundStandsArbiterMissed() public {
        _dispute(pid, 0, bob);
        uint256 deadline = _ruling(pid, 0);
        vm.roll(deadline);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RulingStillOpen.selector, pid, 0, deadline));
        market.lapseDispute(pid, 0, 0);
        vm.roll(deadline + 1);
        vm.expectEmit(address(market));
        emit ILearningMarket.DisputeLapsed(pid, 0, 0);
        vm.expectEmit(address(market));
        emit ILearningMarket.Credited(pid, bob, BOND);
        vm.prank(outsider);
        market.lapseDispute(pid, 0, 0);
        assertEq(uint256(market.getDispute(pid, 0, 0).status), uint256(ILearningMarket.DisputeStatus.Lapsed), "lap");
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Dismissed), "round stands");
        assertEq(market.getRound(pid, 0).rewardsRoot, ROOT0, "root unchanged");
        assertTrue(market.getProject(pid).arbiterMissed, "arbiter missed");
        assertEq(market.creditOf(pid, bob), BOND, "refunded");
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.DisputeNotPending.selector, pid, 0, 0));
        market.lapseDispute(pid, 0, 0);
    }

    /// A lapse after an upheld dispute keeps the correction.
    function test_lapse_afterUpheld_keepsCorrection() public {
        _dispute(pid, 0, alice);
        _dispute(pid, 0, bob);
        _resolve(pid, 0, 0, true, FIXED);
        vm.roll(_ruling(pid, 0) + 1);
        market.lapseDispute(pid, 0, 1);
        assertEq(_status(pid, 0), uint256(ILearningMarket.RoundStatus.Corrected), "corrected");
        assertEq(market.getRound(pid, 0).rewardsRoot, FIXED, "correction kept");
    }

    // ---------------------------------------------------------------- replaceRole

    function test_replaceArbiter_onlyAfterLapse() public {
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.RoleNotMissed.selector, pid, ILearningMarket.Role.Arbiter)
        );
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, dave);
        _dispute(pid, 0, bob);
        vm.roll(_ruling(pid, 0) + 1);
        market.lapseDispute(pid, 0, 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotOwner.selector, pid, alice));
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, dave);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoleReplaced(pid, ILearningMarket.Role.Arbiter, arbiter, dave);
        vm.prank(owner);
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, dave);
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.arbiter, dave, "replaced");
        assertFalse(p.arbiterMissed, "flag cleared");
        vm.prank(owner); // once only
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.RoleNotMissed.selector, pid, ILearningMarket.Role.Arbiter)
        );
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, carol);
    }

    function test_revert_replaceRole_replacementNotDistinct() public {
        _dispute(pid, 0, bob);
        vm.roll(_ruling(pid, 0) + 1);
        market.lapseDispute(pid, 0, 0);
        address[5] memory bad = [address(0), owner, aggregator, arbiter, alice];
        for (uint256 i = 0; i < bad.length; i++) {
            vm.prank(owner);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, bad[i]));
            market.replaceRole(pid, ILearningMarket.Role.Arbiter, bad[i]);
        }
    }

    function test_replaceAggregator_creditsReposttedBondToOldAggregator() public {
        _commit(pid, 1, alice);
        _rollToReveal(pid);
        _reveal(pid, 1, alice);
        _rollToFinalize(pid);
        vm.roll(block.number + FINALIZE);
        market.expireRound(pid, 1); // slashes the bond
        _bond(pid); // the old aggregator re-posts
        vm.prank(owner);
        market.replaceRole(pid, ILearningMarket.Role.Aggregator, dave);
        assertEq(market.creditOf(pid, aggregator), AGG_BOND, "re-posted bond credited back");
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.bondHeld, 0, "the new aggregator must bond");
        assertFalse(p.aggregatorMissed, "flag cleared");
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotAggregator.selector, pid, aggregator));
        market.postBond{value: AGG_BOND}(pid);
    }

    /// A missed aggregator that finalizes the next round in time clears its flag: no replacement.
    function test_replaceAggregator_flagClearedByTimelyFinalize() public {
        _commit(pid, 1, alice);
        _rollToReveal(pid);
        _reveal(pid, 1, alice);
        _rollToFinalize(pid);
        vm.roll(block.number + FINALIZE);
        market.expireRound(pid, 1);
        _finalizeNext(pid, keccak256("r2"));
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.RoleNotMissed.selector, pid, ILearningMarket.Role.Aggregator)
        );
        market.replaceRole(pid, ILearningMarket.Role.Aggregator, dave);
    }

    function test_revert_replaceRole_afterEnd() public {
        _finishAllRounds(pid);
        vm.roll(block.number + 100);
        _end(pid);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectEndedAlready.selector, pid));
        market.replaceRole(pid, ILearningMarket.Role.Arbiter, dave);
    }

    // ---------------------------------------------------------------- credits

    function test_revert_withdrawCredit_none() public {
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, outsider));
        market.withdrawCredit(pid);
    }

    function test_withdrawCredit_reentryRefused() public {
        ReentrantTrainer rt = new ReentrantTrainer(market);
        rt.register{value: STAKE}(pid);
        rt.dispute{value: BOND}(pid, 0, "bafyevidence");
        _resolve(pid, 0, 0, true, FIXED);
        rt.arm(ReentrantTrainer.Attack.WithdrawCredit, pid, 0, 0, new bytes32[](0));
        rt.withdrawCredit(pid);
        assertFalse(rt.reentrySucceeded(), "refused");
        assertEq(
            rt.reentryError(), _err(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector), "by the guard"
        );
        assertEq(address(rt).balance, BOND, "paid once");
    }
}
