// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {RejectingTrainer, ReentrantTrainer} from "./mocks/EtherReceivers.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice endProject and withdrawStake.
contract SettlementTest is MarketFixture {
    uint256 internal pid;

    function setUp() public override {
        super.setUp();
        pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
    }

    // ---------------------------------------------------------------- end

    function test_end_returnsExactlyTheUnallocatedAmount() public {
        _finalizeNext(pid, keccak256("r0"), 0.5 ether);
        _finalizeNext(pid, keccak256("r1"), 1 ether);
        _dispute(pid, 1, alice);
        _resolve(pid, 1, true); // 1 ether back to the pool, alice's bond credited
        vm.prank(arbiter);
        market.slashStake(pid, bob, "bafyslash"); // + STAKE
        _finalizeNext(pid, keccak256("r2"), 0.7 ether);
        _dispute(pid, 2, bob);
        _resolve(pid, 2, false); // + BOND forfeited
        vm.roll(block.number + 1);

        uint256 expected = BUDGET - 0.5 ether - 0.7 ether + STAKE + BOND;
        assertEq(market.getProject(pid).unallocated, expected, "pool before end");
        uint256 before = owner.balance;
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectEnded(pid, expected);
        _end(pid);
        assertEq(owner.balance, before + expected, "owner got exactly the unallocated amount");
        LearningMarket.Project memory p = market.getProject(pid);
        assertTrue(p.ended, "ended");
        assertEq(p.unallocated, 0, "pool emptied");
        assertEq(p.allocated, 1.2 ether, "allocations stay for claims");
        // what remains: allocations not yet claimed, alice's stake, alice's credit
        assertEq(address(market).balance, 1.2 ether + STAKE + BOND, "escrow after end");
    }

    function test_end_erc20() public {
        uint256 p2 = _createErc20();
        _finalizeNext(p2, keccak256("r0"), 0.25 ether);
        _finishAllRounds(p2);
        uint256 before = token.balanceOf(owner);
        _end(p2);
        assertEq(token.balanceOf(owner), before + BUDGET - 0.25 ether, "token returned");
    }

    function test_revert_end_notOwner() public {
        _finishAllRounds(pid);
        address[4] memory others = [aggregator, arbiter, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotOwner.selector, pid, others[i]));
            market.endProject(pid);
        }
    }

    function test_revert_end_roundsRemaining() public {
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundsRemaining.selector, pid, 0, ROUNDS));
        market.endProject(pid);
        _finalizeNext(pid, keccak256("r0"), 0);
        _rollPastChallenge(pid, 0);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundsRemaining.selector, pid, 1, ROUNDS));
        market.endProject(pid);
    }

    function test_revert_end_insideLastChallengeWindow() public {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)), 0);
        }
        uint256 closesAt = _closesAt(pid, ROUNDS - 1);
        vm.roll(closesAt);
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.ChallengeWindowOpen.selector, pid, ROUNDS - 1, closesAt)
        );
        market.endProject(pid);
        vm.roll(closesAt + 1);
        _end(pid);
    }

    function test_revert_end_lastRoundDisputed() public {
        for (uint256 r = 0; r < ROUNDS; r++) {
            _finalizeNext(pid, keccak256(abi.encode(r)), 0.5 ether);
        }
        _dispute(pid, ROUNDS - 1, alice);
        _rollPastChallenge(pid, ROUNDS - 1);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.PreviousRoundUnsettled.selector, pid, ROUNDS - 1));
        market.endProject(pid);
        _resolve(pid, ROUNDS - 1, true);
        uint256 before = owner.balance;
        _end(pid);
        assertEq(owner.balance, before + BUDGET - 1 ether, "voided last round returns to the owner");
    }

    function test_revert_end_twice() public {
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, pid));
        market.endProject(pid);
    }

    // ---------------------------------------------------------------- withdrawStake

    function test_revert_withdrawStake_beforeEnd() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ProjectNotEnded.selector, pid));
        market.withdrawStake(pid);
        _finishAllRounds(pid);
        vm.prank(alice); // all rounds done but not ended
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ProjectNotEnded.selector, pid));
        market.withdrawStake(pid);
    }

    function test_withdrawStake_afterEnd() public {
        _finishAllRounds(pid);
        _end(pid);
        uint256 before = alice.balance;
        vm.expectEmit(address(market));
        emit LearningMarket.StakeWithdrawn(pid, alice, STAKE);
        vm.prank(alice);
        market.withdrawStake(pid);
        assertEq(alice.balance, before + STAKE, "stake back");
        (bool registered, uint256 stake) = market.registration(pid, alice);
        assertTrue(registered, "still registered");
        assertEq(stake, 0, "nothing staked");
        assertEq(market.getProject(pid).stakesHeld, STAKE, "bob's remains");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, alice));
        market.withdrawStake(pid);
    }

    function test_revert_withdrawStake_nothingStaked() public {
        vm.prank(arbiter);
        market.slashStake(pid, bob, "bafyslash");
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(bob); // slashed
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, bob));
        market.withdrawStake(pid);
        vm.prank(outsider); // never registered
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, outsider));
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
        assertEq(rt.reentryError(), _err(ReentrancyGuard.ReentrancyGuardReentrantCall.selector), "by the guard");
        assertEq(address(rt).balance, STAKE, "paid once");
    }
}
