// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice dispute, resolveDispute, withdrawCredit and slashStake.
contract DisputesTest is MarketFixture {
    uint256 internal pid;

    function setUp() public override {
        super.setUp();
        pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        _finalizeNext(pid, keccak256("root0"), 0.8 ether);
    }

    function _status(uint256 p, uint256 round) internal view returns (uint256) {
        return uint256(market.getRound(p, round).status);
    }

    // ---------------------------------------------------------------- dispute

    function test_dispute_byTrainer_freezesRoundAndHoldsBond() public {
        uint256 before = address(market).balance;
        vm.expectEmit(address(market));
        emit LearningMarket.RoundDisputed(pid, 0, alice, "bafyevidence", BOND);
        _dispute(pid, 0, alice);
        assertEq(_status(pid, 0), uint256(LearningMarket.RoundStatus.Disputed), "disputed");
        LearningMarket.Dispute memory d = market.getDispute(pid, 0);
        assertEq(d.disputer, alice, "disputer");
        assertEq(d.bond, BOND, "bond");
        assertEq(address(market).balance, before + BOND, "bond held");
    }

    function test_dispute_byOwner() public {
        _dispute(pid, 0, owner);
        assertEq(market.getDispute(pid, 0).disputer, owner, "owner is a stakeholder");
    }

    function test_dispute_atLastBlockOfWindow() public {
        vm.roll(_closesAt(pid, 0));
        _dispute(pid, 0, bob);
        assertEq(_status(pid, 0), uint256(LearningMarket.RoundStatus.Disputed), "disputed in time");
    }

    function test_dispute_erc20PullsBond() public {
        uint256 p2 = _createErc20();
        _register(p2, alice);
        _finalizeNext(p2, keccak256("r"), 0);
        uint256 before = token.balanceOf(alice);
        _dispute(p2, 0, alice);
        assertEq(token.balanceOf(alice), before - BOND, "bond paid in tokens");
        assertEq(token.balanceOf(address(market)), BUDGET + STAKE + BOND, "escrow");
    }

    function test_dispute_zeroBond() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.disputeBond = 0;
        uint256 p2 = _create(p);
        _register(p2, alice);
        _finalizeNext(p2, keccak256("r"), 0);
        vm.prank(alice);
        market.dispute(p2, 0, "bafyevidence");
        assertEq(market.getDispute(p2, 0).bond, 0, "no bond");
    }

    function test_dispute_slashedTrainerIsStillAStakeholder() public {
        vm.prank(arbiter);
        market.slashStake(pid, alice, "bafyslash");
        _dispute(pid, 0, alice);
        assertEq(market.getDispute(pid, 0).disputer, alice, "disputed");
    }

    function test_revert_dispute_nonStakeholder() public {
        address[3] memory others = [outsider, aggregator, arbiter];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotStakeholder.selector, pid, others[i]));
            market.dispute{value: BOND}(pid, 0, "bafyevidence");
        }
    }

    function test_revert_dispute_afterWindow() public {
        uint256 closesAt = _closesAt(pid, 0);
        vm.roll(closesAt + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ChallengeWindowClosed.selector, pid, 0, closesAt));
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    function test_revert_dispute_twice() public {
        _dispute(pid, 0, alice);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotFinalized.selector, pid, 0));
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
        _resolve(pid, 0, false); // a dismissed round cannot be disputed again either
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotFinalized.selector, pid, 0));
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    function test_revert_dispute_voidedRound() public {
        _dispute(pid, 0, alice);
        _resolve(pid, 0, true);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotFinalized.selector, pid, 0));
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    function test_revert_dispute_unfinalizedRound() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotFinalized.selector, pid, 1));
        market.dispute{value: BOND}(pid, 1, "bafyevidence");
    }

    function test_revert_dispute_wrongBond() public {
        uint256[3] memory sent = [uint256(0), BOND - 1, BOND + 1];
        for (uint256 i = 0; i < sent.length; i++) {
            vm.prank(alice);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, BOND, sent[i]));
            market.dispute{value: sent[i]}(pid, 0, "bafyevidence");
        }
    }

    function test_revert_dispute_etherWithErc20Project() public {
        uint256 p2 = _createErc20();
        _register(p2, alice);
        _finalizeNext(p2, keccak256("r"), 0);
        vm.prank(alice);
        vm.expectRevert(_err(LearningMarket.UnexpectedEther.selector));
        market.dispute{value: BOND}(p2, 0, "bafyevidence");
    }

    // ---------------------------------------------------------------- resolve: upheld

    function test_resolve_upheld_voidsRoundReturnsAllocationCreditsBond() public {
        _dispute(pid, 0, alice);
        vm.expectEmit(address(market));
        emit LearningMarket.DisputeResolved(pid, 0, true, "bafyreason");
        _resolve(pid, 0, true);
        assertEq(_status(pid, 0), uint256(LearningMarket.RoundStatus.Voided), "voided");
        LearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.allocated, 0, "allocation withdrawn");
        assertEq(p.unallocated, BUDGET, "back in the pool");
        assertEq(market.creditOf(pid, alice), BOND, "bond credited");

        uint256 before = alice.balance;
        vm.expectEmit(address(market));
        emit LearningMarket.CreditWithdrawn(pid, alice, BOND);
        vm.prank(alice);
        market.withdrawCredit(pid);
        assertEq(alice.balance, before + BOND, "bond refunded");
        assertEq(market.creditOf(pid, alice), 0, "credit spent");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, alice));
        market.withdrawCredit(pid);
    }

    function test_resolve_upheld_nextRoundMayReallocate() public {
        _dispute(pid, 0, alice);
        _resolve(pid, 0, true);
        _rollToFinalize(pid);
        // round 1 of 3: its own share plus round 0's (voided) share
        vm.prank(aggregator);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, 2 * REWARD + 1, 2 * REWARD)
        );
        market.finalizeRound(pid, 1, MODEL, RECORD, keccak256("root1"), 2 * REWARD + 1);
        _finalize(pid, 1, keccak256("root1"), 2 * REWARD);
        assertEq(market.getRound(pid, 1).cumulativeAllocated, 2 * REWARD, "voided round not counted");
    }

    function test_resolve_upheld_erc20Credit() public {
        uint256 p2 = _createErc20();
        _register(p2, bob);
        _finalizeNext(p2, keccak256("r"), 0.5 ether);
        _dispute(p2, 0, bob);
        _resolve(p2, 0, true);
        uint256 before = token.balanceOf(bob);
        vm.prank(bob);
        market.withdrawCredit(p2);
        assertEq(token.balanceOf(bob), before + BOND, "refunded in tokens");
    }

    // ---------------------------------------------------------------- resolve: dismissed

    function test_resolve_dismissed_bondForfeitedToPool() public {
        _dispute(pid, 0, bob);
        vm.expectEmit(address(market));
        emit LearningMarket.DisputeResolved(pid, 0, false, "bafyreason");
        _resolve(pid, 0, false);
        assertEq(_status(pid, 0), uint256(LearningMarket.RoundStatus.Dismissed), "dismissed");
        LearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.allocated, 0.8 ether, "round stands");
        assertEq(p.unallocated, BUDGET - 0.8 ether + BOND, "bond joins the pool");
        assertEq(market.creditOf(pid, bob), 0, "no credit");
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, bob));
        market.withdrawCredit(pid);
    }

    function test_revert_resolve_notArbiter() public {
        _dispute(pid, 0, alice);
        address[4] memory others = [owner, aggregator, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotArbiter.selector, pid, others[i]));
            market.resolveDispute(pid, 0, true, "bafyreason");
        }
    }

    function test_revert_resolve_notDisputed() public {
        vm.prank(arbiter); // finalized, undisputed
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotDisputed.selector, pid, 0));
        market.resolveDispute(pid, 0, true, "bafyreason");
        vm.prank(arbiter); // never finalized
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotDisputed.selector, pid, 1));
        market.resolveDispute(pid, 1, true, "bafyreason");
        _dispute(pid, 0, alice);
        _resolve(pid, 0, true);
        vm.prank(arbiter); // already resolved
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotDisputed.selector, pid, 0));
        market.resolveDispute(pid, 0, false, "bafyreason");
    }

    function test_revert_withdrawCredit_none() public {
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, outsider));
        market.withdrawCredit(pid);
    }

    function test_withdrawCredit_reentryRefused() public {
        ReentrantTrainer rt = new ReentrantTrainer(market);
        rt.register{value: STAKE}(pid);
        rt.dispute{value: BOND}(pid, 0, "bafyevidence");
        _resolve(pid, 0, true);
        rt.arm(ReentrantTrainer.Attack.WithdrawCredit, pid, 0, 0, new bytes32[](0));
        rt.withdrawCredit(pid);
        assertFalse(rt.reentrySucceeded(), "refused");
        assertEq(rt.reentryError(), _err(ReentrancyGuard.ReentrancyGuardReentrantCall.selector), "by the guard");
        assertEq(address(rt).balance, BOND, "paid once");
    }

    // ---------------------------------------------------------------- slash

    function test_slash_movesStakeToPool() public {
        vm.expectEmit(address(market));
        emit LearningMarket.StakeSlashed(pid, alice, STAKE, "bafyslash");
        vm.prank(arbiter);
        market.slashStake(pid, alice, "bafyslash");
        (bool registered, uint256 stake) = market.registration(pid, alice);
        assertTrue(registered, "still registered");
        assertEq(stake, 0, "stake gone");
        LearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.stakesHeld, STAKE, "bob's stake only");
        assertEq(p.unallocated, BUDGET - 0.8 ether + STAKE, "slashed stake joins the pool");
        // a slashed trainer may still take part
        _commit(pid, 1, alice);
        assertEq(market.commitmentState(pid, 1, alice), 1, "still commits");
    }

    function test_slash_poolMayBeAllocated() public {
        vm.prank(arbiter);
        market.slashStake(pid, alice, "bafyslash");
        _rollToFinalize(pid);
        uint256 available = BUDGET - 0.8 ether + STAKE - REWARD; // round 1 of 3: round 2 reserved
        vm.prank(aggregator);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, available + 1, available)
        );
        market.finalizeRound(pid, 1, MODEL, RECORD, keccak256("r1"), available + 1);
        _finalize(pid, 1, keccak256("r1"), available);
    }

    function test_revert_slash_notArbiter() public {
        address[4] memory others = [owner, aggregator, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotArbiter.selector, pid, others[i]));
            market.slashStake(pid, bob, "bafyslash");
        }
    }

    function test_revert_slash_nothingStaked() public {
        vm.prank(arbiter); // not registered
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, carol));
        market.slashStake(pid, carol, "bafyslash");
        vm.prank(arbiter);
        market.slashStake(pid, alice, "bafyslash");
        vm.prank(arbiter); // already slashed
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, alice));
        market.slashStake(pid, alice, "bafyslash");
    }

    function test_revert_slash_zeroStakeProject() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.stake = 0;
        uint256 p2 = _create(p);
        vm.prank(carol);
        market.register(p2);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, p2, carol));
        market.slashStake(p2, carol, "bafyslash");
    }

    function test_revert_slash_afterEnd() public {
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(arbiter);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, pid));
        market.slashStake(pid, alice, "bafyslash");
    }
}
