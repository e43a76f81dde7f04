// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {BlocklistToken} from "./mocks/HostileTokens.sol";
import {RejectingTrainer} from "./mocks/EtherReceivers.sol";

/// @notice Issue 13, point 8: every pull payment can go to an address the beneficiary names, so a
/// trainer (or owner, or aggregator) whose own address the token blocks is never stuck:
/// withdrawStakeTo and withdrawCreditTo next to claimTo and claimPoolShare.
contract RecipientsTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    BlocklistToken internal blk;
    uint256 internal pid;

    function setUp() public override {
        super.setUp();
        blk = new BlocklistToken();
        address[8] memory everyone = [owner, aggregator, arbiter, alice, bob, carol, dave, outsider];
        for (uint256 i = 0; i < everyone.length; i++) {
            blk.mint(everyone[i], FUNDS);
            vm.prank(everyone[i]);
            blk.approve(address(market), type(uint256).max);
        }
        pid = _create(_params(address(blk)));
        _register(pid, alice);
        _register(pid, bob);
    }

    function _blocked(address who) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(BlocklistToken.Blocked.selector, who);
    }

    // ---------------------------------------------------------------- withdrawStakeTo

    function test_withdrawStakeTo_blockedTrainerIsPaidElsewhere() public {
        _finishAllRounds(pid);
        _end(pid);
        blk.setBlocked(alice, true);
        vm.prank(alice);
        vm.expectRevert(_blocked(alice));
        market.withdrawStake(pid);
        uint256 before = blk.balanceOf(carol);
        vm.expectEmit(address(market));
        emit ILearningMarket.StakeWithdrawn(pid, alice, STAKE, carol);
        vm.prank(alice);
        market.withdrawStakeTo(pid, carol);
        assertEq(blk.balanceOf(carol) - before, STAKE, "the stake went to the named recipient");
        (bool registered, uint256 left) = market.registration(pid, alice);
        assertTrue(registered, "still registered");
        assertEq(left, 0, "nothing staked");
        assertEq(market.getProject(pid).stakesHeld, STAKE, "bob's stake remains");
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, alice));
        market.withdrawStakeTo(pid, carol);
    }

    function test_revert_withdrawStakeTo_beforeEnd_zeroRecipient_notRegistered() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectNotEnded.selector, pid));
        market.withdrawStakeTo(pid, carol);
        _finishAllRounds(pid);
        _end(pid);
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.ZeroRecipient.selector));
        market.withdrawStakeTo(pid, address(0));
        // the recipient never withdraws someone else's stake: the caller's own is what moves
        vm.prank(carol);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, carol));
        market.withdrawStakeTo(pid, alice);
    }

    function test_withdrawStakeTo_etherRejectingTrainerNamesAnotherAddress() public {
        uint256 p2 = _createEth();
        RejectingTrainer rt = new RejectingTrainer(market);
        rt.register{value: STAKE}(p2);
        _finishAllRounds(p2);
        _end(p2);
        uint256 before = dave.balance;
        vm.prank(address(rt));
        market.withdrawStakeTo(p2, dave);
        assertEq(dave.balance - before, STAKE, "paid to dave");
    }

    // ---------------------------------------------------------------- withdrawCreditTo

    function test_withdrawCreditTo_blockedDisputerGetsItsBondBack() public {
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalizeNext(pid, t.root());
        _dispute(pid, 0, alice);
        _resolve(pid, 0, 0, true, _tree2(alice, REWARD / 2, bob, REWARD / 2).root());
        assertEq(market.creditOf(pid, alice), BOND, "bond credited back");
        blk.setBlocked(alice, true);
        vm.prank(alice);
        vm.expectRevert(_blocked(alice));
        market.withdrawCredit(pid);
        uint256 before = blk.balanceOf(carol);
        vm.expectEmit(address(market));
        emit ILearningMarket.CreditWithdrawn(pid, alice, BOND, carol);
        vm.prank(alice);
        market.withdrawCreditTo(pid, carol);
        assertEq(blk.balanceOf(carol) - before, BOND, "paid to carol");
        assertEq(market.creditOf(pid, alice), 0, "credit spent");
    }

    /// A blocked owner cannot end the project itself (the returned budget would be paid to it), but
    /// anyone else can, and the credited budget then goes where the owner says.
    function test_withdrawCreditTo_blockedOwnerRecoversTheReturnedBudget() public {
        _finishAllRounds(pid);
        blk.setBlocked(owner, true);
        vm.prank(owner);
        vm.expectRevert(_blocked(owner));
        market.endProject(pid);
        vm.prank(outsider);
        market.endProject(pid);
        assertEq(market.creditOf(pid, owner), BUDGET, "the budget is credited");
        uint256 before = blk.balanceOf(dave);
        vm.prank(owner);
        market.withdrawCreditTo(pid, dave);
        assertEq(blk.balanceOf(dave) - before, BUDGET, "paid to dave");
    }

    function test_revert_withdrawCreditTo_zeroRecipient_nothing() public {
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToWithdraw.selector, pid, alice));
        market.withdrawCreditTo(pid, carol);
        _finalizeNext(pid, keccak256("r0"));
        _dispute(pid, 0, alice);
        _resolve(pid, 0, 0, true, keccak256("fixed"));
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.ZeroRecipient.selector));
        market.withdrawCreditTo(pid, address(0));
        assertEq(market.creditOf(pid, alice), BOND, "untouched");
    }

    // ---------------------------------------------------------------- every payment at once

    /// A trainer blocked for the whole project still takes out everything it is owed: its reward
    /// (claimTo), its share of the round's pool (claimPoolShare), its refunded bond
    /// (withdrawCreditTo) and its stake (withdrawStakeTo).
    function test_blockedTrainer_takesOutEverythingThroughRecipients() public {
        _commit(pid, 0, alice);
        _commit(pid, 0, bob);
        _rollToReveal(pid);
        _reveal(pid, 0, alice); // bob never reveals: his deposit goes to alice's pool
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 0, bob);
        MerkleBuilder.Tree memory t = _tree2(alice, REWARD, bob, 0);
        _finalize(pid, 0, t.root());
        _dispute(pid, 0, alice);
        MerkleBuilder.Tree memory fixed_ = _tree2(alice, REWARD, bob, 1);
        _resolve(pid, 0, 0, true, fixed_.root()); // upheld: bond back, aggregator bond to the pool
        blk.setBlocked(alice, true);
        _finishAllRounds(pid);
        vm.prank(outsider);
        market.endProject(pid);

        uint256 before = blk.balanceOf(carol);
        uint256 pool = market.poolShareOf(pid, 0, alice);
        assertEq(pool, DEPOSIT + AGG_BOND, "deposit and slashed bond");
        bytes32[] memory proof = fixed_.proof(0);
        vm.startPrank(alice);
        market.claimTo(pid, 0, REWARD, proof, carol);
        market.claimPoolShare(pid, 0, carol);
        market.withdrawCreditTo(pid, carol);
        market.withdrawStakeTo(pid, carol);
        vm.stopPrank();
        assertEq(blk.balanceOf(carol) - before, REWARD + pool + BOND + STAKE, "everything reached carol");
        assertEq(blk.balanceOf(alice), FUNDS - STAKE - BOND, "nothing moved to or from alice");
    }
}
