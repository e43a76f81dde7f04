// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {FeeOnTransferToken} from "./mocks/FeeOnTransferToken.sol";
import {IERC20Errors} from "@openzeppelin/contracts/interfaces/draft-IERC6093.sol";

/// @notice createProject (parameters, escrow, payment checks), unknown projects, ownership hand-over.
contract CreateProjectTest is MarketFixture {
    // ---------------------------------------------------------------- happy paths

    function test_createProject_eth_escrowsBudgetAndEmits() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectCreated(1, owner, address(0), BUDGET, p);
        vm.expectEmit(address(market));
        emit LearningMarket.RoundOpened(1, 0, block.number);
        vm.prank(owner);
        uint256 pid = market.createProject{value: BUDGET}(p);

        assertEq(pid, 1, "ids start at 1");
        assertEq(market.projectCount(), 1, "projectCount");
        assertEq(address(market).balance, BUDGET, "escrow holds the budget");
        LearningMarket.Project memory s = market.getProject(pid);
        assertEq(s.owner, owner, "owner");
        assertEq(s.token, address(0), "token");
        assertEq(s.aggregator, aggregator, "aggregator");
        assertEq(s.arbiter, arbiter, "arbiter");
        assertEq(s.pendingOwner, address(0), "pendingOwner");
        assertEq(s.numRounds, ROUNDS, "numRounds");
        assertEq(s.currentRound, 0, "currentRound");
        assertEq(s.ended, false, "ended");
        assertEq(s.commitWindow, COMMIT, "commitWindow");
        assertEq(s.revealWindow, REVEAL, "revealWindow");
        assertEq(s.challengeWindow, CHALLENGE, "challengeWindow");
        assertEq(s.openedAt, block.number, "openedAt");
        assertEq(s.rewardPerRound, REWARD, "rewardPerRound");
        assertEq(s.stake, STAKE, "stake");
        assertEq(s.disputeBond, BOND, "disputeBond");
        assertEq(s.budget, BUDGET, "budget");
        assertEq(s.unallocated, BUDGET, "unallocated");
        assertEq(s.allocated, 0, "allocated");
        assertEq(s.claimed, 0, "claimed");
        assertEq(s.stakesHeld, 0, "stakesHeld");

        (uint256 round, uint256 openedAt, uint256 commitDl, uint256 revealDl) = market.roundDeadlines(pid);
        assertEq(round, 0, "round");
        assertEq(openedAt, block.number, "openedAt view");
        assertEq(commitDl, block.number + COMMIT, "commit deadline");
        assertEq(revealDl, block.number + COMMIT + REVEAL, "reveal deadline");
    }

    function test_createProject_erc20_pullsBudget() public {
        uint256 before = token.balanceOf(owner);
        LearningMarket.ProjectParams memory p = _params(address(token));
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectCreated(1, owner, address(token), BUDGET, p);
        uint256 pid = _create(p);
        assertEq(token.balanceOf(address(market)), BUDGET, "escrow");
        assertEq(token.balanceOf(owner), before - BUDGET, "owner paid");
        assertEq(market.getProject(pid).token, address(token), "token");
    }

    function test_createProject_idsIncrementAndProjectsAreSeparate() public {
        uint256 a = _createEth();
        uint256 b = _createErc20();
        assertEq(a, 1, "first");
        assertEq(b, 2, "second");
        assertEq(market.getProject(a).token, address(0), "a is ETH");
        assertEq(market.getProject(b).token, address(token), "b is token");
    }

    function test_createProject_challengeWindowMayEqualCommitPlusReveal() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = COMMIT + REVEAL;
        uint256 pid = _create(p);
        assertEq(market.getProject(pid).challengeWindow, COMMIT + REVEAL, "stored");
    }

    function test_createProject_zeroStakeAndBondAllowed() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.stake = 0;
        p.disputeBond = 0;
        uint256 pid = _create(p);
        vm.prank(alice);
        market.register(pid); // no value
        (bool registered, uint256 stake) = market.registration(pid, alice);
        assertTrue(registered, "registered");
        assertEq(stake, 0, "no stake");
    }

    // ---------------------------------------------------------------- parameter checks

    function _expectInvalid(LearningMarket.ProjectParams memory p, string memory what) internal {
        uint256 value = p.token == address(0) ? _budget(p) : 0;
        vm.prank(owner);
        vm.expectRevert(_invalid(what));
        market.createProject{value: value}(p);
    }

    function test_revert_createProject_zeroRounds() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.numRounds = 0;
        _expectInvalid(p, "numRounds must be > 0");
    }

    function test_revert_createProject_zeroReward() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.rewardPerRound = 0;
        _expectInvalid(p, "rewardPerRound must be > 0");
    }

    function test_revert_createProject_zeroWindows() public {
        string memory what = "windows must be > 0 blocks";
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = 0;
        _expectInvalid(p, what);
        p = _params(address(0));
        p.revealWindow = 0;
        _expectInvalid(p, what);
        p = _params(address(0));
        p.challengeWindow = 0;
        _expectInvalid(p, what);
    }

    function test_revert_createProject_challengeLongerThanCommitPlusReveal() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = COMMIT + REVEAL + 1;
        _expectInvalid(p, "challengeWindow must be <= commitWindow + revealWindow");
    }

    function test_revert_createProject_missingRoles() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.aggregator = address(0);
        _expectInvalid(p, "aggregator and arbiter must be set");
        p = _params(address(0));
        p.arbiter = address(0);
        _expectInvalid(p, "aggregator and arbiter must be set");
    }

    function test_revert_createProject_emptySpec() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.specCID = "";
        _expectInvalid(p, "specCID must be set");
    }

    function test_revert_createProject_budgetTooLarge() public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 2;
        p.rewardPerRound = uint128(type(uint104).max / 2) + 1; // 2x is just above uint104
        _expectInvalid(p, "budget too large");
    }

    function test_createProject_budgetAtUint104Max() public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 1;
        p.rewardPerRound = type(uint104).max;
        token.mint(owner, type(uint104).max);
        uint256 pid = _create(p);
        assertEq(market.getProject(pid).budget, type(uint104).max, "budget at the cap");
    }

    // ---------------------------------------------------------------- payment checks

    function test_revert_createProject_wrongEthPayment() public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        uint256[3] memory sent = [uint256(0), BUDGET - 1, BUDGET + 1];
        for (uint256 i = 0; i < sent.length; i++) {
            vm.prank(owner);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, BUDGET, sent[i]));
            market.createProject{value: sent[i]}(p);
        }
    }

    function test_revert_createProject_etherWithErc20Project() public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        vm.prank(owner);
        vm.expectRevert(_err(LearningMarket.UnexpectedEther.selector));
        market.createProject{value: 1}(p);
    }

    function test_revert_createProject_feeOnTransferTokenRefused() public {
        FeeOnTransferToken fee = new FeeOnTransferToken(100); // 1 %
        fee.mint(owner, BUDGET);
        vm.prank(owner);
        fee.approve(address(market), BUDGET);
        LearningMarket.ProjectParams memory p = _params(address(fee));
        uint256 received = BUDGET - BUDGET / 100;
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, BUDGET, received));
        market.createProject(p);
        assertEq(fee.balanceOf(address(market)), 0, "nothing kept");
        assertEq(market.projectCount(), 0, "no project");
    }

    function test_revert_createProject_withoutAllowance() public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        vm.prank(owner);
        token.approve(address(market), BUDGET - 1);
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(
                IERC20Errors.ERC20InsufficientAllowance.selector, address(market), BUDGET - 1, BUDGET
            )
        );
        market.createProject(p);
    }

    function test_revert_plainEtherTransferRefused() public {
        vm.prank(alice);
        (bool ok,) = address(market).call{value: 1 ether}("");
        assertFalse(ok, "no receive function");
    }

    // ---------------------------------------------------------------- unknown project

    function test_revert_unknownProject() public {
        bytes memory err = abi.encodeWithSelector(LearningMarket.UnknownProject.selector, 7);
        vm.expectRevert(err);
        market.getProject(7);
        vm.expectRevert(err);
        market.roundDeadlines(7);
        vm.prank(alice);
        vm.expectRevert(err);
        market.register(7);
        vm.prank(alice);
        vm.expectRevert(err);
        market.commit(7, 0, bytes32(uint256(5)));
        vm.prank(alice);
        vm.expectRevert(err);
        market.reveal(7, 0, "x", bytes32(0), bytes32(0));
        vm.prank(aggregator);
        vm.expectRevert(err);
        market.finalizeRound(7, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
        vm.prank(alice);
        vm.expectRevert(err);
        market.dispute(7, 0, "e");
        vm.prank(arbiter);
        vm.expectRevert(err);
        market.resolveDispute(7, 0, true, "r");
        vm.prank(arbiter);
        vm.expectRevert(err);
        market.slashStake(7, alice, "r");
        vm.expectRevert(err);
        market.claim(7, 0, alice, 1, new bytes32[](0));
        vm.prank(alice);
        vm.expectRevert(err);
        market.withdrawStake(7);
        vm.prank(alice);
        vm.expectRevert(err);
        market.withdrawCredit(7);
        vm.prank(owner);
        vm.expectRevert(err);
        market.endProject(7);
        vm.prank(owner);
        vm.expectRevert(err);
        market.transferProjectOwnership(7, alice);
        vm.prank(alice);
        vm.expectRevert(err);
        market.acceptProjectOwnership(7);
    }

    // ---------------------------------------------------------------- ownership

    function test_ownership_twoStepHandOver() public {
        uint256 pid = _createEth();
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectOwnershipTransferStarted(pid, owner, alice);
        vm.prank(owner);
        market.transferProjectOwnership(pid, alice);
        assertEq(market.getProject(pid).owner, owner, "not yet");
        assertEq(market.getProject(pid).pendingOwner, alice, "pending");

        vm.expectEmit(address(market));
        emit LearningMarket.ProjectOwnershipTransferred(pid, owner, alice);
        vm.prank(alice);
        market.acceptProjectOwnership(pid);
        assertEq(market.getProject(pid).owner, alice, "alice owns");
        assertEq(market.getProject(pid).pendingOwner, address(0), "pending cleared");

        // the old owner lost its rights, the new one has them
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotOwner.selector, pid, owner));
        market.transferProjectOwnership(pid, owner);
        _finishAllRounds(pid);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotOwner.selector, pid, owner));
        market.endProject(pid);
        uint256 before = alice.balance;
        vm.prank(alice);
        market.endProject(pid);
        assertEq(alice.balance, before + BUDGET, "the new owner gets the unallocated budget");
    }

    function test_ownership_newOwnerIsStakeholderOldOneIsNot() public {
        uint256 pid = _createEth();
        vm.prank(owner);
        market.transferProjectOwnership(pid, carol);
        vm.prank(carol);
        market.acceptProjectOwnership(pid);
        _finalizeNext(pid, bytes32(uint256(1)), 0);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotStakeholder.selector, pid, owner));
        market.dispute{value: BOND}(pid, 0, "e");
        _dispute(pid, 0, carol);
        assertEq(uint256(market.getRound(pid, 0).status), uint256(LearningMarket.RoundStatus.Disputed), "disputed");
    }

    function test_revert_transferOwnership_notOwner() public {
        uint256 pid = _createEth();
        address[3] memory others = [aggregator, arbiter, alice];
        for (uint256 i = 0; i < others.length; i++) {
            vm.prank(others[i]);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotOwner.selector, pid, others[i]));
            market.transferProjectOwnership(pid, others[i]);
        }
    }

    function test_revert_acceptOwnership_notPendingOwner() public {
        uint256 pid = _createEth();
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotPendingOwner.selector, pid, bob));
        market.acceptProjectOwnership(pid);
        vm.prank(owner);
        market.transferProjectOwnership(pid, alice);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotPendingOwner.selector, pid, bob));
        market.acceptProjectOwnership(pid);
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotPendingOwner.selector, pid, owner));
        market.acceptProjectOwnership(pid);
    }

    function test_ownership_cancelWithZeroAddress() public {
        uint256 pid = _createEth();
        vm.prank(owner);
        market.transferProjectOwnership(pid, alice);
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectOwnershipTransferStarted(pid, owner, address(0));
        vm.prank(owner);
        market.transferProjectOwnership(pid, address(0));
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotPendingOwner.selector, pid, alice));
        market.acceptProjectOwnership(pid);
        assertEq(market.getProject(pid).owner, owner, "unchanged");
    }

    function test_ownership_rolesDoNotLeakAcrossProjects() public {
        uint256 a = _createEth();
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.aggregator = bob;
        p.arbiter = carol;
        uint256 b = _create(p);
        _rollToFinalize(a);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotAggregator.selector, a, bob));
        market.finalizeRound(a, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
        vm.prank(aggregator);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NotAggregator.selector, b, aggregator));
        market.finalizeRound(b, 0, MODEL, RECORD, bytes32(uint256(1)), 0);
        vm.prank(owner);
        market.transferProjectOwnership(a, dave);
        assertEq(market.getProject(b).pendingOwner, address(0), "b untouched");
    }
}
