// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";

/// @notice Whole projects, ETH and ERC-20: four trainers over three rounds with a forfeited deposit,
/// a dishonest root corrected by an upheld dispute (the aggregator's bond to the round's revealers),
/// a dismissed dispute (its bond to the aggregator), cumulative claims with real 4-leaf trees, pool
/// shares, end, stake and credit withdrawals. Every wei is accounted for: the escrow ends empty and
/// each party's net change is exact.
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

    /// All four commit; the first `revealers` reveal.
    function _round(uint256 pid, uint256 round, uint256 revealers) internal {
        for (uint256 i = 0; i < 4; i++) _commit(pid, round, trainers[i]);
        _rollToReveal(pid);
        for (uint256 i = 0; i < revealers; i++) _reveal(pid, round, trainers[i]);
        _rollToFinalize(pid);
    }

    function _snapshot(address tok) internal {
        start[owner] = int256(_balance(tok, owner));
        start[aggregator] = int256(_balance(tok, aggregator));
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

        // round 0: everyone trains; its fixed allocation (1.0) is split
        _round(pid, 0, 4);
        MerkleBuilder.Tree memory t0 = _tree4(0.4 ether, 0.3 ether, 0.2 ether, 0.1 ether);
        _bond(pid);
        vm.expectEmit(address(market));
        emit ILearningMarket.RoundFinalized(pid, 0, MODEL, RECORD, t0.root(), REWARD);
        _finalize(pid, 0, t0.root());

        // round 1: dave commits and does not reveal (his deposit goes to the three revealers); the
        // aggregator publishes a root that pays dave anyway; carol disputes, the arbiter corrects it
        _round(pid, 1, 3);
        assertGt(block.number, _closesAt(pid, 0), "round 0 settled");
        _claim(pid, 0, alice, 0.4 ether, t0.proof(0));
        _claim(pid, 0, bob, 0.3 ether, t0.proof(1));
        market.forfeitDeposit(pid, 1, dave);
        MerkleBuilder.Tree memory bad = _tree4(0.4 ether, 0.3 ether, 0.2 ether, 1.1 ether);
        _finalize(pid, 1, bad.root());
        _dispute(pid, 1, carol);
        MerkleBuilder.Tree memory t1 = _tree4(0.9 ether, 0.6 ether, 0.4 ether, 0.1 ether);
        _resolve(pid, 1, 0, true, t1.root());
        assertEq(market.getProject(pid).allocated, 2 * uint256(REWARD), "the round keeps its allocation");
        uint256 pool = AGG_BOND + DEPOSIT;
        assertEq(market.getRound(pid, 1).pool, pool, "bond + deposit for the revealers");

        // round 2: the aggregator re-bonds; dave's frivolous dispute is dismissed
        _round(pid, 2, 4);
        MerkleBuilder.Tree memory t2 = _tree4(1.4 ether, 0.9 ether, 0.5 ether, 0.2 ether);
        _finalize(pid, 2, t2.root());
        _dispute(pid, 2, dave);
        _resolve(pid, 2, 0, false, bytes32(0));
        assertEq(uint256(market.getRound(pid, 2).cumulativeAllocated), BUDGET, "cumulative");

        // claims against the latest root pay each the difference
        vm.roll(_closesAt(pid, 2) + 1);
        uint256[4] memory cum = [uint256(1.4 ether), 0.9 ether, 0.5 ether, 0.2 ether];
        for (uint256 i = 0; i < 4; i++) _claim(pid, 2, trainers[i], cum[i], t2.proof(i));
        assertEq(market.getProject(pid).claimed, BUDGET, "all claimed");
        for (uint256 i = 0; i < 3; i++) {
            vm.prank(trainers[i]);
            market.claimPoolShare(pid, 1, trainers[i]);
        }

        // end: nothing unallocated; the aggregator's bond is credited back
        vm.expectEmit(address(market));
        emit ILearningMarket.ProjectEnded(pid, 0);
        _end(pid);
        for (uint256 i = 0; i < 4; i++) {
            vm.prank(trainers[i]);
            market.withdrawStake(pid);
        }
        vm.prank(carol);
        market.withdrawCredit(pid);
        vm.prank(aggregator);
        market.withdrawCredit(pid);
        vm.roll(block.number + CLAIM + 1);
        market.sweep(pid); // nothing left to sweep

        // every wei accounted for
        assertEq(_balance(tok, address(market)), 0, "escrow empty");
        assertEq(_delta(tok, owner), -int256(BUDGET), "owner: the budget, all of it paid to trainers");
        int256 share = int256(pool / 3);
        assertEq(_delta(tok, alice), 1.4 ether + share, "alice");
        assertEq(_delta(tok, bob), 0.9 ether + share, "bob");
        assertEq(_delta(tok, carol), 0.5 ether + share, "carol (bond refunded)");
        assertEq(_delta(tok, dave), 0.2 ether - int256(uint256(DEPOSIT) + BOND), "dave (deposit and bond lost)");
        assertEq(_delta(tok, aggregator), int256(uint256(BOND)) - int256(uint256(AGG_BOND)), "aggregator");
        ILearningMarket.Project memory p = market.getProject(pid);
        assertEq(p.stakesHeld, 0, "no stakes held");
        assertEq(p.unallocated, 0, "no budget");
        assertEq(p.pools, 0, "no pools");
        assertEq(p.allocated, p.claimed, "allocated == claimed");
    }
}
