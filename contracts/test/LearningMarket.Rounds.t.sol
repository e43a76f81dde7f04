// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {FeeOnTransferToken} from "./mocks/FeeOnTransferToken.sol";

/// @notice register, commit, reveal and finalizeRound: every revert path and the state each leaves.
contract RoundsTest is MarketFixture {
    uint256 internal eth;
    uint256 internal erc;

    function setUp() public override {
        super.setUp();
        eth = _createEth();
        erc = _createErc20();
    }

    // ---------------------------------------------------------------- register

    function test_register_eth_holdsStakeAndEmits() public {
        vm.expectEmit(address(market));
        emit LearningMarket.TrainerRegistered(eth, alice, STAKE);
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AlreadyRegistered.selector, eth, alice));
        market.register{value: STAKE}(eth);
    }

    function test_revert_register_wrongStake() public {
        uint256[3] memory sent = [uint256(0), STAKE - 1, STAKE + 1];
        for (uint256 i = 0; i < sent.length; i++) {
            vm.prank(alice);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, STAKE, sent[i]));
            market.register{value: sent[i]}(eth);
        }
    }

    function test_revert_register_etherWithErc20Project() public {
        vm.prank(alice);
        vm.expectRevert(_err(LearningMarket.UnexpectedEther.selector));
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, STAKE, STAKE - STAKE / 20));
        market.register(pid);
    }

    function test_revert_register_afterEnd() public {
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, eth));
        market.register{value: STAKE}(eth);
    }

    // ---------------------------------------------------------------- commit

    function test_commit_storesAndEmits() public {
        _register(eth, alice);
        bytes32 c = market.commitmentOf(eth, 0, alice, _cid(alice, 0), _digest(alice, 0), _salt(alice, 0));
        vm.expectEmit(address(market));
        emit LearningMarket.UpdateCommitted(eth, 0, alice, c);
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotRegistered.selector, eth, outsider));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_registeredInAnotherProjectOnly() public {
        _register(erc, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotRegistered.selector, eth, alice));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_late() public {
        _register(eth, alice);
        (uint256 commitDl,) = _deadlines(eth);
        vm.roll(commitDl + 1);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.CommitClosed.selector, eth, 0, commitDl));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_twice() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AlreadyCommitted.selector, eth, 0, alice));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_wrongRound() public {
        _register(eth, alice);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.commit(eth, 1, bytes32(uint256(7)));
        _finalizeNext(eth, bytes32(uint256(1)), 0);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, 0, 1));
        market.commit(eth, 0, bytes32(uint256(7)));
    }

    function test_revert_commit_reservedValues() public {
        _register(eth, alice);
        vm.prank(alice);
        vm.expectRevert(_invalid("commitment"));
        market.commit(eth, 0, bytes32(0));
        vm.prank(alice);
        vm.expectRevert(_invalid("commitment")); // the REVEALED marker
        market.commit(eth, 0, bytes32(uint256(1)));
    }

    function test_revert_commit_afterEnd() public {
        _register(eth, alice);
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, ROUNDS, ROUNDS));
        market.commit(eth, ROUNDS, bytes32(uint256(7)));
    }

    // ---------------------------------------------------------------- reveal

    function test_reveal_marksRevealedAndEmits() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        vm.expectEmit(address(market));
        emit LearningMarket.UpdateRevealed(eth, 0, alice, _cid(alice, 0), _digest(alice, 0));
        _reveal(eth, 0, alice);
        assertEq(market.commitmentState(eth, 0, alice), 2, "revealed");
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealNotOpen.selector, eth, 0, commitDl));
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealClosed.selector, eth, 0, revealDl));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_notCommitted() public {
        _register(eth, alice);
        _rollToReveal(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotCommitted.selector, eth, 0, alice));
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
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AlreadyRevealed.selector, eth, 0, alice));
        market.reveal(eth, 0, cid, digest, salt);
    }

    function test_revert_reveal_wrongRound() public {
        _register(eth, alice);
        _commit(eth, 0, alice);
        _rollToReveal(eth);
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.reveal(eth, 1, "x", bytes32(0), bytes32(0));
    }

    function _expectMismatch(address who, string memory cid, bytes32 digest, bytes32 salt) internal {
        vm.prank(who);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealMismatch.selector, eth, 0, who));
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

    // ---------------------------------------------------------------- finalize

    function test_finalize_recordsRoundOpensNextAndEmits() public {
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl + 1);
        bytes32 root = keccak256("root");
        vm.expectEmit(address(market));
        emit LearningMarket.RoundFinalized(eth, 0, MODEL, RECORD, root, 0.4 ether);
        vm.expectEmit(address(market));
        emit LearningMarket.RoundOpened(eth, 1, block.number);
        _finalize(eth, 0, root, 0.4 ether);

        LearningMarket.Round memory r = market.getRound(eth, 0);
        assertEq(uint256(r.status), uint256(LearningMarket.RoundStatus.Finalized), "status");
        assertEq(r.finalizedAt, block.number, "finalizedAt");
        assertEq(r.allocation, 0.4 ether, "allocation");
        assertEq(r.cumulativeAllocated, 0.4 ether, "cumulative");
        assertEq(r.rewardsRoot, root, "root");
        LearningMarket.Project memory p = market.getProject(eth);
        assertEq(p.currentRound, 1, "next round open");
        assertEq(p.openedAt, block.number, "opened now");
        assertEq(p.allocated, 0.4 ether, "allocated");
        assertEq(p.unallocated, BUDGET - 0.4 ether, "unallocated");
    }

    function test_finalize_lastRoundOpensNothing() public {
        _finalizeNext(eth, bytes32(uint256(1)), 0);
        _finalizeNext(eth, bytes32(uint256(2)), 0);
        _rollToFinalize(eth);
        vm.recordLogs();
        _finalize(eth, 2, bytes32(uint256(3)), 0);
        assertEq(vm.getRecordedLogs().length, 1, "only RoundFinalized");
        assertEq(market.getProject(eth).currentRound, ROUNDS, "currentRound == numRounds");
    }

    function test_revert_finalize_notAggregator() public {
        _rollToFinalize(eth);
        address[4] memory others = [owner, arbiter, alice, outsider];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotAggregator.selector, eth, others[i]));
            market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
        }
    }

    function test_revert_finalize_beforeRevealDeadline() public {
        (, uint256 revealDl) = _deadlines(eth);
        vm.roll(revealDl);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealStillOpen.selector, eth, 0, revealDl));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    function test_revert_finalize_twice() public {
        _finalizeNext(eth, bytes32(uint256(1)), 0);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, 0, 1));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    function test_revert_finalize_wrongRound() public {
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, 1, 0));
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    function test_revert_finalize_emptyRoot() public {
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(_err(LearningMarket.EmptyRoot.selector));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(0), 0);
    }

    function test_revert_finalize_emptyCids() public {
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(_invalid("CIDs must be set"));
        market.finalizeRound(eth, 0, "", RECORD, bytes32(uint256(1)), 0);
        vm.prank(aggregator);
        vm.expectRevert(_invalid("CIDs must be set"));
        market.finalizeRound(eth, 0, MODEL, "", bytes32(uint256(1)), 0);
    }

    function test_revert_finalize_allocationTooLarge() public {
        _rollToFinalize(eth);
        // round 0 of 3 may use its own share only: the other two are reserved
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, REWARD + 1, REWARD));
        market.finalizeRound(eth, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD + 1);
        _finalize(eth, 0, bytes32(uint256(1)), REWARD); // exactly the bound is fine
    }

    function test_revert_finalize_previousRoundDisputed() public {
        _register(eth, alice);
        _finalizeNext(eth, bytes32(uint256(1)), 0);
        _dispute(eth, 0, alice);
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.PreviousRoundUnsettled.selector, eth, 0));
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(2)), 0);
        // settled either way, the next round can be finalized
        _resolve(eth, 0, false);
        _finalize(eth, 1, bytes32(uint256(2)), 0);
    }

    /// finalize's ChallengeWindowOpen branch cannot be reached: createProject requires
    /// challengeWindow <= commitWindow + revealWindow and the next round opens at finalize, so by
    /// the time its reveal deadline has passed the previous window has closed (fuzzed in
    /// FuzzTest.testFuzz_finalize_neverWaitsForChallengeWindow). The tightest case:
    function test_finalize_challengeWindowAlwaysClosedByRevealDeadline() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = COMMIT + REVEAL;
        uint256 pid = _create(p);
        _finalizeNext(pid, bytes32(uint256(1)), 0);
        (, uint256 revealDl) = _deadlines(pid);
        assertEq(revealDl, _closesAt(pid, 0), "deadlines coincide");
        vm.roll(revealDl);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealStillOpen.selector, pid, 1, revealDl));
        market.finalizeRound(pid, 1, MODEL, RECORD, bytes32(uint256(2)), 0);
        vm.roll(revealDl + 1);
        _finalize(pid, 1, bytes32(uint256(2)), 0);
    }

    function test_revert_finalize_afterEnd() public {
        _finishAllRounds(eth);
        _end(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, eth, ROUNDS, ROUNDS));
        market.finalizeRound(eth, ROUNDS, MODEL, RECORD, bytes32(uint256(1)), 0);
    }

    // ---------------------------------------------------------------- rollover

    function test_rollover_unallocatedShareCarriesForward() public {
        _finalizeNext(eth, bytes32(uint256(1)), 0); // round 0 pays nothing
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(
            abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, 2 * REWARD + 1, 2 * REWARD)
        );
        market.finalizeRound(eth, 1, MODEL, RECORD, bytes32(uint256(2)), 2 * REWARD + 1);
        _finalize(eth, 1, bytes32(uint256(2)), 2 * REWARD); // round 1 uses both shares
        _rollToFinalize(eth);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, REWARD + 1, REWARD));
        market.finalizeRound(eth, 2, MODEL, RECORD, bytes32(uint256(3)), REWARD + 1);
        _finalize(eth, 2, bytes32(uint256(3)), REWARD);
        LearningMarket.Project memory p = market.getProject(eth);
        assertEq(p.allocated, BUDGET, "all allocated");
        assertEq(p.unallocated, 0, "nothing left");
        assertEq(market.getRound(eth, 2).cumulativeAllocated, BUDGET, "cumulative");
    }

    function test_rollover_partialAllocationsAccumulate() public {
        _finalizeNext(eth, bytes32(uint256(1)), 0.25 ether);
        _finalizeNext(eth, bytes32(uint256(2)), 1.5 ether); // 0.75 left over + 1 share - ... bound 1.75
        _rollToFinalize(eth);
        uint256 left = BUDGET - 1.75 ether;
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, left + 1, left));
        market.finalizeRound(eth, 2, MODEL, RECORD, bytes32(uint256(3)), left + 1);
        _finalize(eth, 2, bytes32(uint256(3)), left);
        assertEq(market.getProject(eth).unallocated, 0, "fully allocated");
    }
}
