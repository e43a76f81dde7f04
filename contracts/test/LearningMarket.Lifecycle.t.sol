// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {LearningMarket} from "../src/LearningMarket.sol";

/// @notice Whole projects, ETH and ERC-20: four trainers over three rounds with a voided round, a
/// dismissed dispute, a slash, cumulative claims with real 4-leaf trees, end and stake withdrawals.
/// Every wei is accounted for: the escrow ends empty and each party's net change is exact.
contract LifecycleTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    address[4] internal trainers;
    mapping(address => int256) internal start;

    function setUp() public override {
        super.setUp();
        trainers = [alice, bob, carol, dave];
    }

    function test_lifecycle_eth() public {
        _lifecycle(address(0));
    }

    function test_lifecycle_erc20() public {
        _lifecycle(address(token));
    }

    function _tree4(uint256 a, uint256 b, uint256 c, uint256 d) internal view returns (MerkleBuilder.Tree memory) {
        address[] memory accounts = new address[](4);
        uint256[] memory amounts = new uint256[](4);
        for (uint256 i = 0; i < 4; i++) accounts[i] = trainers[i];
        (amounts[0], amounts[1], amounts[2], amounts[3]) = (a, b, c, d);
        return MerkleBuilder.build(accounts, amounts);
    }

    function _round(uint256 pid, uint256 round, uint256 participants) internal {
        for (uint256 i = 0; i < participants; i++) _commit(pid, round, trainers[i]);
        _rollToReveal(pid);
        for (uint256 i = 0; i < participants; i++) _reveal(pid, round, trainers[i]);
        _rollToFinalize(pid);
    }

    function _snapshot(address tok) internal {
        start[owner] = int256(_balance(tok, owner));
        for (uint256 i = 0; i < 4; i++) start[trainers[i]] = int256(_balance(tok, trainers[i]));
    }

    function _delta(address tok, address who) internal view returns (int256) {
        return int256(_balance(tok, who)) - start[who];
    }

    function _lifecycle(address tok) internal {
        _snapshot(tok);
        uint256 pid = _create(_params(tok));
        for (uint256 i = 0; i < 4; i++) _register(pid, trainers[i]);
        assertEq(_balance(tok, address(market)), BUDGET + 4 * STAKE, "escrow after registration");

        // round 0: everyone trains; 1.0 allocated
        _round(pid, 0, 4);
        MerkleBuilder.Tree memory t0 = _tree4(0.4 ether, 0.3 ether, 0.2 ether, 0.1 ether);
        vm.expectEmit(address(market));
        emit LearningMarket.RoundFinalized(pid, 0, MODEL, RECORD, t0.root(), 1 ether);
        _finalize(pid, 0, t0.root(), 1 ether);

        // round 1: carol disputes the round (say its record shows a wrong score); the arbiter
        // voids it and her bond is credited back
        _round(pid, 1, 3); // by the end of round 1's reveal phase, round 0's window has closed
        assertGt(block.number, _closesAt(pid, 0), "round 0 settled");
        _claim(pid, 0, alice, 0.4 ether, t0.proof(0));
        _claim(pid, 0, bob, 0.3 ether, t0.proof(1));
        MerkleBuilder.Tree memory t1 = _tree4(0.9 ether, 0.3 ether, 0.7 ether, 0.1 ether);
        _finalize(pid, 1, t1.root(), 1 ether);
        _dispute(pid, 1, carol);
        _resolve(pid, 1, true);
        assertEq(market.getProject(pid).allocated, 1 ether, "round 1 withdrawn");
        vm.prank(arbiter);
        market.slashStake(pid, dave, "bafycopied"); // dave was caught copying

        // round 2: 1.8 allocated (its share, round 1's voided share, minus 0.2 kept back)
        _round(pid, 2, 4);
        MerkleBuilder.Tree memory t2 = _tree4(1.4 ether, 0.8 ether, 0.5 ether, 0.1 ether);
        _finalize(pid, 2, t2.root(), 1.8 ether);
        _dispute(pid, 2, dave); // frivolous
        _resolve(pid, 2, false);
        assertEq(uint256(market.getRound(pid, 2).cumulativeAllocated), 2.8 ether, "cumulative");

        // claims against the latest root pay each the difference
        for (uint256 i = 0; i < 4; i++) {
            uint256[4] memory cum = [uint256(1.4 ether), 0.8 ether, 0.5 ether, 0.1 ether];
            _claim(pid, 2, trainers[i], cum[i], t2.proof(i));
        }
        assertEq(market.getProject(pid).claimed, 2.8 ether, "all claimed");

        // end: 3 - 2.8 allocated + dave's slashed stake + dave's forfeited bond
        vm.roll(_closesAt(pid, 2) + 1);
        uint256 returned = BUDGET - 2.8 ether + STAKE + BOND;
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectEnded(pid, returned);
        _end(pid);
        for (uint256 i = 0; i < 3; i++) {
            vm.prank(trainers[i]);
            market.withdrawStake(pid);
        }
        vm.prank(dave);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, dave));
        market.withdrawStake(pid);
        vm.prank(carol);
        market.withdrawCredit(pid);

        // every wei accounted for
        assertEq(_balance(tok, address(market)), 0, "escrow empty");
        assertEq(_delta(tok, owner), -int256(BUDGET) + int256(returned), "owner");
        assertEq(_delta(tok, alice), 1.4 ether, "alice");
        assertEq(_delta(tok, bob), 0.8 ether, "bob");
        assertEq(_delta(tok, carol), 0.5 ether, "carol (bond refunded)");
        assertEq(_delta(tok, dave), 0.1 ether - int256(uint256(STAKE + BOND)), "dave (slashed, bond lost)");
        LearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.stakesHeld, 0, "no stakes held");
        assertEq(p.unallocated, 0, "no pool");
        assertEq(p.allocated, p.claimed, "allocated == claimed");
    }
}
