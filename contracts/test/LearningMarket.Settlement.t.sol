// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {RejectingTrainer, ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice endProject, withdrawStake and sweep.
contract SettlementTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    uint256 internal pid;

    function setUp() public override {
        super.setUp();
        pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
    }

    function _revealOne(address who) internal {
        uint256 round = market.getProject(pid).currentRound;
        _commit(pid, round, who);
        _rollToReveal(pid);
        _reveal(pid, round, who);
    }

    // ---------------------------------------------------------------- end

    /// Adapted: v1 returned voided allocations, slashed stakes and forfeited bonds to the owner; v2
    /// returns only what no round allocated (an expired round's share rolled into the last round).
    function test_end_returnsExactlyTheUnallocatedAmount() public {
        _finalizeNext(pid, keccak256("r0")); // 1 allocated
        _rollToFinalize(pid);
        market.expireRound(pid, 1); // nobody revealed: its share rolls over
        _commit(pid, 2, alice); // alice commits, never reveals
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 2, alice); // no revealer: the deposit joins the budget
        market.expireRound(pid, 2); // the last round expires as well
        uint256 expected = BUDGET - REWARD + DEPOSIT;
        assertEq(market.getProject(pid).unallocated, expected, "unallocated before end");
        uint256 before = owner.balance;
        vm.expectEmit(address(market));
        emit ILearningMarket.ProjectEnded(pid, expected);
        _end(pid);
        assertEq(owner.balance, before + expected, "owner got exactly the unallocated amount");
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.endedAt, block.number, "ended");
        assertEq(p.unallocated, 0, "budget emptied");
        assertEq(p.allocated, REWARD, "allocations stay for claims");
        assertEq(market.creditOf(pid, aggregator), AGG_BOND, "bond credited back to the aggregator");
        assertEq(p.bondHeld, 0, "no bond held");
        // what remains: the allocation not yet claimed, the stakes, the aggregator's credit
        assertEq(address(market).balance, REWARD + 2 * STAKE - DEPOSIT + AGG_BOND, "escrow after end");
    }

    function test_end_erc20() public {
        uint256 p2 = _createErc20();
        _finalizeNext(p2, keccak256("r0"));
        _finishAllRounds(p2);
        uint256 before = token.balanceOf(owner);
        _end(p2);
        assertEq(token.balanceOf(owner), before + BUDGET - REWARD, "token returned");
    }

    /// Adapted: v1 allowed only the owner; v2 lets anyone end, crediting the owner.
    function test_end_byAnyoneCreditsTheOwner() public {
        _finishAllRounds(pid);
        uint256 before = owner.balance;
        vm.expectEmit(address(market));
        emit ILearningMarket.Credited(pid, owner, BUDGET);
        vm.prank(alice);
        market.endProject(pid);
        assertEq(owner.balance, before, "not paid to the owner directly");
        assertEq(market.creditOf(pid, owner), BUDGET, "credited instead");
        vm.prank(owner);
        market.withdrawCredit(pid);
        assertEq(owner.balance, before + BUDGET, "withdrawn");
    }

    function test_revert_end_roundsRemaining() public {
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundsRemaining.selector, pid, 0, ROUNDS));
        market.endProject(pid);
        _finalizeNext(pid, keccak256("r0"));
        _rollPastChallenge(pid, 0);
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundsRemaining.selector, pid, 1, ROUNDS));
        market.endProject(pid);
    }

    /// Adapted from v1's ChallengeWindowOpen.
    function test_revert_end_insideLastChallengeWindow() public {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)));
        }
        uint256 closesAt = _closesAt(pid, ROUNDS - 1);
        vm.roll(closesAt);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, pid, ROUNDS - 1, closesAt));
        market.endProject(pid);
        vm.roll(closesAt + 1);
        _end(pid);
    }

    /// Adapted: a pending dispute on the last round holds the end until its ruling deadline; then
    /// the project ends whatever the arbiter does. An upheld last round returns nothing to the owner.
    function test_revert_end_lastRoundDisputed() public {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)));
        }
        _dispute(pid, ROUNDS - 1, alice);
        _rollPastChallenge(pid, ROUNDS - 1);
        uint256 settles = market.settlesAfter(pid, ROUNDS - 1);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, pid, ROUNDS - 1, settles));
        market.endProject(pid);
        _resolve(pid, ROUNDS - 1, 0, true, keccak256("fixed"));
        assertLt(block.number, settles, "ruled before the deadline: settled once the challenge window closed");
        uint256 before = owner.balance;
        _end(pid);
        // the allocation stays with the trainers; only the slashed aggregator bond, which had no
        // revealer to go to, joins the returned budget
        assertEq(owner.balance, before + AGG_BOND, "a corrected last round returns no allocation");
    }

    /// The arbiter's silence does not lock the project: after the ruling deadline it ends, and the
    /// pending dispute can still be lapsed (refunding its bond).
    function test_end_afterRulingDeadlineWithPendingDispute() public {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)));
        }
        _dispute(pid, ROUNDS - 1, alice);
        vm.roll(market.settlesAfter(pid, ROUNDS - 1) + 1);
        vm.prank(outsider);
        market.endProject(pid);
        market.lapseDispute(pid, ROUNDS - 1, 0);
        assertEq(market.creditOf(pid, alice), BOND, "bond refunded after the end");
        vm.prank(alice);
        market.withdrawStake(pid);
        vm.prank(alice);
        market.withdrawCredit(pid);
    }

    function test_revert_end_twice() public {
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectEndedAlready.selector, pid));
        market.endProject(pid);
    }

    // ---------------------------------------------------------------- withdrawStake

    function test_revert_withdrawStake_beforeEnd() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectNotEnded.selector, pid));
        market.withdrawStake(pid);
        _finishAllRounds(pid);
        vm.prank(alice); // all rounds done but not ended
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectNotEnded.selector, pid));
        market.withdrawStake(pid);
    }

    function test_withdrawStake_afterEnd() public {
        _finishAllRounds(pid);
        _end(pid);
        uint256 before = alice.balance;
        vm.expectEmit(address(market));
        emit ILearningMarket.StakeWithdrawn(pid, alice, STAKE, alice);
        vm.prank(alice);
        market.withdrawStake(pid);
        assertEq(alice.balance, before + STAKE, "stake back");
        (bool registered, uint256 stake) = market.registration(pid, alice);
        assertTrue(registered, "still registered");
        assertEq(stake, 0, "nothing staked");
        assertEq(market.getProject(pid).stakesHeld, STAKE, "bob's remains");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, alice));
        market.withdrawStake(pid);
    }

    /// Adapted: v1's slashed trainer had nothing left; v2 only takes a missed reveal's deposit.
    function test_withdrawStake_lessForfeitedDeposits() public {
        _commit(pid, 0, bob);
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 0, bob);
        _finishAllRounds(pid);
        _end(pid);
        uint256 before = bob.balance;
        vm.prank(bob);
        market.withdrawStake(pid);
        assertEq(bob.balance, before + STAKE - DEPOSIT, "stake less the deposit");
        vm.prank(outsider); // never registered
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, outsider));
        market.withdrawStake(pid);
    }

    function test_withdrawStake_erc20() public {
        uint256 p2 = _createErc20();
        _register(p2, carol);
        _finishAllRounds(p2);
        _end(p2);
        uint256 before = token.balanceOf(carol);
        vm.prank(carol);
        market.withdrawStake(p2);
        assertEq(token.balanceOf(carol), before + STAKE, "token stake back");
    }

    function test_withdrawStake_rejectingReceiverKeepsItsStake() public {
        RejectingTrainer rt = new RejectingTrainer(market);
        rt.register{value: STAKE}(pid);
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(address(rt));
        vm.expectRevert(_err(RejectingTrainer.NoEtherPlease.selector));
        market.withdrawStake(pid);
        (, uint256 stake) = market.registration(pid, address(rt));
        assertEq(stake, STAKE, "still held, can be retried");
    }

    function test_withdrawStake_reentryRefused() public {
        ReentrantTrainer rt = new ReentrantTrainer(market);
        rt.register{value: STAKE}(pid);
        _finishAllRounds(pid);
        _end(pid);
        rt.arm(ReentrantTrainer.Attack.WithdrawStake, pid, 0, 0, new bytes32[](0));
        rt.withdrawStake(pid);
        assertTrue(rt.reentryAttempted(), "attempted");
        assertFalse(rt.reentrySucceeded(), "refused");
        assertEq(
            rt.reentryError(), _err(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector), "by the guard"
        );
        assertEq(address(rt).balance, STAKE, "paid once");
    }

    // ---------------------------------------------------------------- sweep

    function test_sweep_creditsUnclaimedToOwnerOnce() public {
        MerkleBuilder.Tree memory t = _tree2(alice, 0.6 ether, bob, 0.4 ether);
        _finalizeNext(pid, t.root());
        _finishAllRounds(pid);
        _end(pid);
        _claim(pid, 0, alice, 0.6 ether, t.proof(0));
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.UnknownProject.selector, pid + 1));
        market.sweep(pid + 1);
        uint256 deadline = market.getProject(pid).endedAt + CLAIM;
        vm.roll(deadline);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimsStillOpen.selector, pid, deadline));
        market.sweep(pid);
        vm.roll(deadline + 1);
        vm.expectEmit(address(market));
        emit ILearningMarket.Swept(pid, 0.4 ether);
        vm.prank(outsider);
        market.sweep(pid);
        assertTrue(market.getProject(pid).swept, "swept");
        assertEq(market.creditOf(pid, owner), 0.4 ether, "the unclaimed part (the budget was paid at the end)");
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ClaimsClosed.selector, pid, deadline));
        market.sweep(pid);
    }

    function test_revert_sweep_beforeEnd() public {
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectNotEnded.selector, pid));
        market.sweep(pid);
    }
}
