// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {FeeOnTransferToken} from "./mocks/FeeOnTransferToken.sol";

/// @notice register, commit, reveal, forfeitDeposit, postBond, finalizeRound and expireRound:
/// every revert path and the state each leaves.
contract RoundsTest is MarketFixture {
    uint256 internal eth;
    uint256 internal erc;

    function setUp() public override {
        super.setUp();
        eth = _createEth();
        erc = _createErc20();
    }

    function _finalizeDl(uint256 pid) internal view returns (uint256) {
        (, uint256 revealDl) = _deadlines(pid);
        return revealDl + market.getProject(pid).finalizeWindow;
    }

    // ---------------------------------------------------------------- register

    function test_register_eth_holdsStakeAndEmits() public {
        vm.expectEmit(address(market));
        emit ILearningMarket.TrainerRegistered(eth, alice, STAKE);
        vm.prank(alice);
        market.register{value: STAKE}(eth);
        (bool registered, uint256 stake) = market.registration(eth, alice);
        assertTrue(registered, "registered");
        assertEq(stake, STAKE, "stake");
        assertEq(market.getProject(eth).stakesHeld, STAKE, "stakesHeld");
        assertEq(address(market).balance, BUDGET + STAKE, "escrow");
    }

    function test_register_erc20_pullsStake() public {
        uint256 before = token.balanceOf(alice);
        vm.prank(alice);
        market.register(erc);
        assertEq(token.balanceOf(alice), before - STAKE, "paid");
        assertEq(token.balanceOf(address(market)), BUDGET + STAKE, "escrow");
    }

    function test_register_unregisteredViewIsEmpty() public view {
        (bool registered, uint256 stake) = market.registration(eth, outsider);
        assertFalse(registered, "not registered");
        assertEq(stake, 0, "no stake");
    }

    function test_revert_register_twice() public {
        _register(eth, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AlreadyRegistered.selector, eth, alice));
        market.register{value: STAKE}(eth);
    }

    function test_revert_register_roleHolders() public {
        address[3] memory roles = [owner, aggregator, arbiter];
        for (uint256 i = 0; i < roles.length; i++) {
            vm.prank(roles[i]);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RolesNotDistinct.selector, roles[i]));
            market.register{value: STAKE}(eth);
        }
    }

    function test_revert_register_wrongStake() public {
        uint256[3] memory sent = [uint256(0), STAKE - 1, STAKE + 1];
        for (uint256 i = 0; i < sent.length; i++) {
            vm.prank(alice);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, STAKE, sent[i]));
            market.register{value: sent[i]}(eth);
        }
    }

    function test_revert_register_etherWithErc20Project() public {
        vm.prank(alice);
        vm.expectRevert(_err(ILearningMarket.UnexpectedEther.selector));
        market.register{value: STAKE}(erc);
    }

    function test_revert_register_feeTokenStartsCharging() public {
        FeeOnTransferToken fee = new FeeOnTransferToken(0);
        fee.mint(owner, BUDGET);
        fee.mint(alice, STAKE);
        vm.prank(owner);
        fee.approve(address(market), BUDGET);
        vm.prank(alice);
        fee.approve(address(market), STAKE);
        uint256 pid = _create(_params(address(fee)));
        fee.setFee(500); // 5 %
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, STAKE, STAKE - STAKE / 20));
        market.register(pid);
    }

    function test_revert_register_afterEnd() public {
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectEndedAlready.selector, eth));
        market.register{value: STAKE}(eth);
    }

    // ---------------------------------------------------------------- commit

    function test_commit_storesAndEmits() public {
        _register(eth, alice);
        bytes32 c = market.commitmentOf(eth, 0, alice, _cid(alice, 0), _digest(alice, 0), _salt(alice, 0));
        vm.expectEmit(address(market));
        emit ILearningMarket.UpdateCommitted(eth, 0, alice, c);
        vm.prank(alice);
        market.commit(eth, 0, c);
        assertEq(market.commitmentState(eth, 0, alice), 1, "committed");
        assertEq(market.commitmentState(eth, 0, bob), 0, "bob none");
    }

    function test_commit_atDeadlineAccepted() public {
        _register(eth, alice);
        (uint256 commitDl,) = _deadlines(eth);
        vm.roll(commitDl);
        _commit(eth, 0, alice);
        assertEq(market.commitmentState(eth, 0, alice), 1, "committed at the deadline block");
    }

    function test_revert_commit_unregistered() public {
        vm.prank(outsider);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotRegistered.selector, eth, outsider));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_registeredInAnotherProjectOnly() public {
        _register(erc, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotRegistered.selector, eth, alice));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_late() public {
        _register(eth, alice);
        (uint256 commitDl,) = _deadlines(eth);
        vm.roll(commitDl + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.CommitClosed.selector, eth, 0, commitDl));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_twice() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AlreadyCommitted.selector, eth, 0, alice));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_wrongRound() public {
        _register(eth, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.commit(eth, 1, bytes32(uint256(7)));
        _finalizeNext(eth, bytes32(uint256(1)));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 0, 1));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_reservedValues() public {
        _register(eth, alice);
        bytes32[3] memory reserved = [bytes32(0), bytes32(uint256(1)), bytes32(uint256(2))]; // none, REVEALED, FORFEITED
        for (uint256 i = 0; i < reserved.length; i++) {
            vm.prank(alice);
            vm.expectRevert(_err(ILearningMarket.InvalidCommitment.selector));
            market.commit(eth, 0, reserved[i]);
        }
        vm.prank(alice);
        market.commit(eth, 0, bytes32(uint256(3)));
    }

    function test_revert_commit_stakeBelowDeposit() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.stake = DEPOSIT; // one deposit, no more
        uint256 pid = _create(p);
        _register(pid, alice);
        _register(pid, bob);
        _commit(pid, 0, alice);
        _commit(pid, 0, bob);
        _rollToReveal(pid);
        _reveal(pid, 0, bob);
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 0, alice);
        _finalize(pid, 0, bytes32(uint256(1)));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.StakeBelowDeposit.selector, pid, 0, DEPOSIT));
        market.commit(pid, 1, bytes32(uint256(7)));
        _commit(pid, 1, bob); // bob's stake is intact
    }

    function test_revert_commit_afterEnd() public {
        _register(eth, alice);
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, ROUNDS, ROUNDS));
        market.commit(eth, ROUNDS, bytes32(uint256(7)));
    }

    // ---------------------------------------------------------------- reveal

    function test_reveal_marksRevealedAndEmits() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        vm.expectEmit(address(market));
        emit ILearningMarket.UpdateRevealed(eth, 0, alice, _cid(alice, 0), _digest(alice, 0));
        _reveal(eth, 0, alice);
        assertEq(market.commitmentState(eth, 0, alice), 2, "revealed");
        assertEq(market.getProject(eth).reveals, 1, "counted");
    }

    function test_reveal_atDeadlineAccepted() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl);
        _reveal(eth, 0, alice);
        assertEq(market.commitmentState(eth, 0, alice), 2, "revealed at the deadline block");
    }

    function test_revert_reveal_beforeCommitDeadline() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        (uint256 commitDl,) = _deadlines(eth);
        vm.roll(commitDl); // still the commit phase
        string memory cid = _cid(alice, 0);
        bytes32 digest = _digest(alice, 0);
        bytes32 salt = _salt(alice, 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealNotOpen.selector, eth, 0, commitDl));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_afterDeadline() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl + 1);
        string memory cid = _cid(alice, 0);
        bytes32 digest = _digest(alice, 0);
        bytes32 salt = _salt(alice, 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealClosed.selector, eth, 0, revealDl));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_notCommitted() public {
        _register(eth, alice);
        _rollToReveal(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotCommitted.selector, eth, 0, alice));
        market.reveal(eth, 0, "x", bytes32(0), bytes32(0));
    }

    function test_revert_reveal_twice() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        string memory cid = _cid(alice, 0);
        bytes32 digest = _digest(alice, 0);
        bytes32 salt = _salt(alice, 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AlreadyRevealed.selector, eth, 0, alice));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_wrongRound() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.reveal(eth, 1, "x", bytes32(0), bytes32(0));
    }

    function _expectMismatch(address who, string memory cid, bytes32 digest, bytes32 salt) internal {
        vm.prank(who);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealMismatch.selector, eth, 0, who));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_mismatch() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        string memory cid = _cid(alice, 0);
        bytes32 digest = _digest(alice, 0);
        bytes32 salt = _salt(alice, 0);
        _expectMismatch(alice, "bafyother", digest, salt); // wrong cid
        _expectMismatch(alice, cid, bytes32(uint256(digest) ^ 1), salt); // wrong digest
        _expectMismatch(alice, cid, digest, bytes32(uint256(salt) + 1)); // wrong salt
        assertEq(market.commitmentState(eth, 0, alice), 1, "still only committed");
        _reveal(eth, 0, alice); // the right values still work
    }

    function test_revert_reveal_copiedCommitmentIsWorthless() public {
        _register(eth, alice);
        _register(eth, bob);
        // bob copies alice's commitment from the mempool and, later, her revealed values
        bytes32 c = market.commitmentOf(eth, 0, alice, _cid(alice, 0), _digest(alice, 0), _salt(alice, 0));
        vm.prank(alice);
        market.commit(eth, 0, c);
        vm.prank(bob);
        market.commit(eth, 0, c);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        _expectMismatch(bob, _cid(alice, 0), _digest(alice, 0), _salt(alice, 0));
        // and the copier pays for it: its deposit is forfeited to alice's round
        _rollToFinalize(eth);
        market.forfeitDeposit(eth, 0, bob);
        assertEq(market.commitmentState(eth, 0, bob), 3, "forfeited");
    }

    function test_commitmentOf_bindsProjectRoundAndTrainer() public view {
        bytes32 base = market.commitmentOf(eth, 0, alice, "cid", bytes32(uint256(1)), bytes32(uint256(2)));
        assertTrue(base != market.commitmentOf(erc, 0, alice, "cid", bytes32(uint256(1)), bytes32(uint256(2))), "project");
        assertTrue(base != market.commitmentOf(eth, 1, alice, "cid", bytes32(uint256(1)), bytes32(uint256(2))), "round");
        assertTrue(base != market.commitmentOf(eth, 0, bob, "cid", bytes32(uint256(1)), bytes32(uint256(2))), "trainer");
        assertEq(
            base,
            keccak256(abi.encode(eth, 0, alice, keccak256(bytes("cid")), bytes32(uint256(1)), bytes32(uint256(2)))),
            "documented formula"
        );
    }

    // ---------------------------------------------------------------- forfeitDeposit

    function test_forfeit_movesDepositToRoundPoolAndEmits() public {
        _register(eth, alice);
        _register(eth, bob);
        _commit(eth, 0, alice);
        _commit(eth, 0, bob);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        _rollToFinalize(eth);
        vm.expectEmit(address(market));
        emit ILearningMarket.DepositForfeited(eth, 0, bob, DEPOSIT);
        vm.prank(outsider);
        market.forfeitDeposit(eth, 0, bob);
        ILearningMarket.Project memory p = market.getProject(eth);
        assertEq(p.stakesHeld, 2 * STAKE - DEPOSIT, "stakesHeld");
        assertEq(p.pools, DEPOSIT, "pools");
        assertEq(market.getRound(eth, 0).pool, DEPOSIT, "round pool (before finalize)");
        assertEq(market.commitmentState(eth, 0, bob), 3, "forfeited state");
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotCommitted.selector, eth, 0, bob));
        market.forfeitDeposit(eth, 0, bob); // only once
    }

    function test_forfeit_withoutRevealersGoesToUnallocated() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToFinalize(eth);
        market.forfeitDeposit(eth, 0, alice);
        assertEq(market.getProject(eth).unallocated, BUDGET + DEPOSIT, "no revealer: unallocated");
        assertEq(market.roundAllocation(eth), REWARD + DEPOSIT, "and the open round allocates it");
    }

    function test_forfeit_pastRoundAfterFinalize() public {
        _register(eth, alice);
        _register(eth, bob);
        _commit(eth, 0, alice);
        _commit(eth, 0, bob);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        _finalizeNext(eth, bytes32(uint256(1)));
        market.forfeitDeposit(eth, 0, bob); // round 0 is closed
        assertEq(market.poolShareOf(eth, 0, alice), DEPOSIT, "alice's share");
    }

    function test_revert_forfeit_revealStillOpen() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealStillOpen.selector, eth, 0, revealDl));
        market.forfeitDeposit(eth, 0, alice);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealStillOpen.selector, eth, 1, revealDl));
        market.forfeitDeposit(eth, 1, alice); // a future round
    }

    function test_revert_forfeit_notCommittedOrRevealed() public {
        _register(eth, alice);
        _register(eth, bob);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        _rollToFinalize(eth);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotCommitted.selector, eth, 0, bob));
        market.forfeitDeposit(eth, 0, bob);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AlreadyRevealed.selector, eth, 0, alice));
        market.forfeitDeposit(eth, 0, alice);
    }

    function test_revert_forfeit_afterEnd() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _finishAllRounds(eth);
        _end(eth);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectEndedAlready.selector, eth));
        market.forfeitDeposit(eth, 0, alice);
    }

    // ---------------------------------------------------------------- postBond

    function test_postBond_holdsBondAndEmits() public {
        vm.expectEmit(address(market));
        emit ILearningMarket.AggregatorBonded(eth, aggregator, AGG_BOND);
        vm.prank(aggregator);
        market.postBond{value: AGG_BOND}(eth);
        assertEq(market.getProject(eth).bondHeld, AGG_BOND, "bondHeld");
        assertEq(address(market).balance, BUDGET + AGG_BOND, "escrow");
        uint256 before = token.balanceOf(aggregator);
        _bond(erc);
        assertEq(token.balanceOf(aggregator), before - AGG_BOND, "token bond pulled");
    }

    function test_revert_postBond_notAggregator() public {
        address[3] memory others = [owner, arbiter, alice];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotAggregator.selector, eth, others[i]));
            market.postBond{value: AGG_BOND}(eth);
        }
    }

    function test_revert_postBond_twice() public {
        _bond(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BondAlreadyPosted.selector, eth));
        market.postBond{value: AGG_BOND}(eth);
    }

    function test_revert_postBond_wrongPaymentOrAfterEnd() public {
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, AGG_BOND, 1));
        market.postBond{value: 1}(eth);
        vm.prank(aggregator);
        vm.expectRevert(_err(ILearningMarket.UnexpectedEther.selector));
        market.postBond{value: AGG_BOND}(erc);
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ProjectEndedAlready.selector, eth));
        market.postBond{value: AGG_BOND}(eth);
    }

    // ---------------------------------------------------------------- finalize

    function test_finalize_recordsRoundOpensNextAndEmits() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        _bond(eth);
        _rollToFinalize(eth);
        bytes32 root = keccak256("root");
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundFinalized(eth, 0, MODEL, RECORD, root, REWARD);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundOpened(eth, 1, block.number);
        _finalize(eth, 0, root);

        ILearningMarket.Round memory r = market.getRound(eth, 0);
        assertEq(uint256(r.status), uint256(ILearningMarket.RoundStatus.Finalized), "status");
        assertEq(r.finalizedAt, block.number, "finalizedAt");
        assertEq(r.allocation, REWARD, "allocation");
        assertEq(r.cumulativeAllocated, REWARD, "cumulative");
        assertEq(r.rewardsRoot, root, "root");
        assertEq(r.reveals, 1, "reveals copied");
        ILearningMarket.Project memory p = market.getProject(eth);
        assertEq(p.currentRound, 1, "next round open");
        assertEq(p.openedAt, block.number, "opened now");
        assertEq(p.allocated, REWARD, "allocated");
        assertEq(p.unallocated, BUDGET - REWARD, "unallocated");
        assertEq(p.reveals, 0, "reveal counter reset");
        assertEq(p.bondHeld, AGG_BOND, "bond stays posted");
        assertEq(market.settlesAfter(eth, 0), block.number + CHALLENGE, "settlesAfter");
    }

    function test_finalize_lastRoundOpensNothing() public {
        _finalizeNext(eth, bytes32(uint256(1)));
        _finalizeNext(eth, bytes32(uint256(2)));
        _rollToFinalize(eth);
        uint256 allocation = market.roundAllocation(eth);
        vm.recordLogs();
        vm.prank(aggregator);
        market.finalizeRound(eth, 2, MODEL, RECORD, bytes32(uint256(3)), allocation);
        assertEq(vm.getRecordedLogs().length, 1, "only RoundFinalized");
        assertEq(market.getProject(eth).currentRound, ROUNDS, "currentRound == numRounds");
        assertEq(market.roundAllocation(eth), 0, "no open round allocates");
    }

    function test_finalize_atDeadlineAccepted() public {
        _bond(eth);
        vm.roll(_finalizeDl(eth));
        _finalize(eth, 0, bytes32(uint256(1)));
    }

    function test_revert_finalize_notAggregator() public {
        _rollToFinalize(eth);
        address[4] memory others = [owner, arbiter, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NotAggregator.selector, eth, others[i]));
            market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
        }
    }

    function test_revert_finalize_beforeRevealDeadline() public {
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealStillOpen.selector, eth, 0, revealDl));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    function test_revert_finalize_afterFinalizeDeadline() public {
        _bond(eth);
        uint256 dl = _finalizeDl(eth);
        vm.roll(dl + 1);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeClosed.selector, eth, 0, dl));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    function test_revert_finalize_bondNotPosted() public {
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.BondNotPosted.selector, eth, AGG_BOND));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    function test_revert_finalize_twice() public {
        _finalizeNext(eth, bytes32(uint256(1)));
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 0, 1));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    function test_revert_finalize_wrongRound() public {
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    function test_revert_finalize_emptyRoot() public {
        _bond(eth);
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(_err(ILearningMarket.EmptyRoot.selector));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(0), REWARD);
    }

    function test_revert_finalize_emptyCids() public {
        _bond(eth);
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(_err(ILearningMarket.EmptyCID.selector));
        market.finalizeRound(eth, 0, "", RECORD, bytes32(uint256(1)), REWARD);
        vm.prank(aggregator);
        vm.expectRevert(_err(ILearningMarket.EmptyCID.selector));
        market.finalizeRound(eth, 0, MODEL, "", bytes32(uint256(1)), REWARD);
    }

    /// Adapted from v1's AllocationTooLarge: the allocation is fixed, above or below.
    function test_revert_finalize_allocationMismatch() public {
        _bond(eth);
        _rollToFinalize(eth);
        uint256[3] memory wrong = [uint256(0), REWARD - 1, REWARD + 1];
        for (uint256 i = 0; i < wrong.length; i++) {
            vm.prank(aggregator);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, REWARD, wrong[i]));
            market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), wrong[i]);
        }
        _finalize(eth, 0, bytes32(uint256(1))); // exactly the fixed allocation
    }

    /// Adapted from v1's PreviousRoundUnsettled: a pending dispute holds the next finalize until it
    /// is ruled or the ruling deadline passes (never past the finalize deadline).
    function test_revert_finalize_previousRoundDisputed() public {
        _register(eth, alice);
        _finalizeNext(eth, bytes32(uint256(1)));
        _dispute(eth, 0, alice);
        _rollToFinalize(eth);
        uint256 settles = market.settlesAfter(eth, 0);
        assertEq(settles, _closesAt(eth, 0) + RULE, "ruling deadline");
        assertLt(settles, _finalizeDl(eth), "settled before the next finalize deadline");
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, eth, 0, settles));
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(2)), REWARD);
        // once ruled, only the challenge window counts (closed by now): finalize proceeds
        _resolve(eth, 0, 0, false, bytes32(0));
        assertGt(block.number, _closesAt(eth, 0), "challenge window closed");
        _finalize(eth, 1, bytes32(uint256(2)));
    }

    /// With a challenge window longer than commit + reveal the previous window may still be open
    /// after the reveal deadline: RoundUnsettled, then finalize once it closes.
    function test_revert_finalize_previousChallengeWindowOpen() public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = COMMIT + REVEAL + 5;
        uint256 pid = _create(p);
        _finalizeNext(pid, bytes32(uint256(1)));
        uint256 closes = _closesAt(pid, 0);
        _rollToFinalize(pid);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundUnsettled.selector, pid, 0, closes));
        market.finalizeRound(pid, 1, MODEL, RECORD, bytes32(uint256(2)), REWARD);
        vm.roll(closes + 1);
        _finalize(pid, 1, bytes32(uint256(2)));
    }

    function test_revert_finalize_afterEnd() public {
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, ROUNDS, ROUNDS));
        market.finalizeRound(eth, ROUNDS, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    // ---------------------------------------------------------------- expireRound

    function test_expire_emptyRoundRightAfterRevealDeadline() public {
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeStillOpen.selector, eth, 0, revealDl));
        market.expireRound(eth, 0);
        vm.roll(revealDl + 1);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundExpired(eth, 0, 0);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundOpened(eth, 1, block.number);
        vm.prank(outsider);
        market.expireRound(eth, 0);
        ILearningMarket.Round memory r = market.getRound(eth, 0);
        assertEq(uint256(r.status), uint256(ILearningMarket.RoundStatus.Expired), "expired");
        assertEq(r.allocation, 0, "allocates nothing");
        assertEq(market.settlesAfter(eth, 0), 0, "settled at once");
        assertFalse(market.getProject(eth).aggregatorMissed, "nobody to blame");
        assertEq(market.roundAllocation(eth), 2 * uint256(REWARD), "share rolls over");
    }

    function test_expire_revealedRoundOnlyAfterFinalizeDeadline_slashesBond() public {
        _register(eth, alice);
        _bond(eth);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        _reveal(eth, 0, alice);
        uint256 dl = _finalizeDl(eth);
        vm.roll(dl);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeStillOpen.selector, eth, 0, dl));
        market.expireRound(eth, 0);
        vm.roll(dl + 1);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundExpired(eth, 0, AGG_BOND);
        vm.expectEmit(address(market));
        emit ILearningMarket.AggregatorSlashed(eth, 0, aggregator, AGG_BOND);
        market.expireRound(eth, 0);
        ILearningMarket.Project memory p = market.getProject(eth);
        assertTrue(p.aggregatorMissed, "missed");
        assertEq(p.bondHeld, 0, "bond gone");
        assertEq(p.pools, AGG_BOND, "to the revealers' pool");
        assertEq(market.getRound(eth, 0).reveals, 1, "reveals recorded");
    }

    function test_expire_lastRoundOpensNothing() public {
        _finishAllRounds(eth);
        assertEq(market.getProject(eth).currentRound, ROUNDS, "all closed");
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, ROUNDS, ROUNDS));
        market.expireRound(eth, ROUNDS);
    }

    function test_revert_expire_wrongRound() public {
        _rollToFinalize(eth);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.expireRound(eth, 1);
    }

    /// The aggregator may still finalize a round nobody revealed in, until someone expires it.
    function test_expire_emptyRoundMayStillBeFinalized() public {
        _finalizeNext(eth, bytes32(uint256(1)));
        assertEq(uint256(market.getRound(eth, 0).status), uint256(ILearningMarket.RoundStatus.Finalized), "final");
    }

    // ---------------------------------------------------------------- rollover

    /// Adapted: v1 let the aggregator allocate 0 to carry a share forward; v2 carries forward only
    /// what an expired round did not allocate.
    function test_rollover_expiredShareCarriesForward() public {
        _rollToFinalize(eth);
        market.expireRound(eth, 0); // round 0 pays nothing
        _rollToFinalize(eth);
        _bond(eth);
        vm.prank(aggregator);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, 2 * REWARD, 2 * REWARD + 1)
        );
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(2)), 2 * REWARD + 1);
        _finalize(eth, 1, bytes32(uint256(2))); // round 1 uses both shares
        _rollToFinalize(eth);
        assertEq(_finalize(eth, 2, bytes32(uint256(3))), REWARD, "last round: its share");
        ILearningMarket.Project memory p = market.getProject(eth);
        assertEq(p.allocated, BUDGET, "all allocated");
        assertEq(p.unallocated, 0, "nothing left");
        assertEq(market.getRound(eth, 2).cumulativeAllocated, BUDGET, "cumulative");
    }

    function test_rollover_slashWithoutRevealersJoinsNextAllocation() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToFinalize(eth);
        market.forfeitDeposit(eth, 0, alice); // no revealer: into the budget
        market.expireRound(eth, 0);
        assertEq(market.roundAllocation(eth), 2 * uint256(REWARD) + DEPOSIT, "share + rolled share + deposit");
    }
}
