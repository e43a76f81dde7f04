// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {LearningMarket} from "../src/LearningMarket.sol";

/// @notice Property tests over arbitrary parameters, amounts, windows and secrets
/// (runs set by [fuzz] in foundry.toml).
contract FuzzTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    struct Raw {
        uint32 numRounds;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 challengeWindow;
        uint128 rewardPerRound;
        uint128 stake;
        uint128 disputeBond;
    }

    function _bounded(Raw memory raw, bool erc20) internal view returns (LearningMarket.ProjectParams memory p) {
        p = _params(erc20 ? address(token) : address(0));
        p.numRounds = uint32(bound(raw.numRounds, 1, 10_000));
        p.commitWindow = uint32(bound(raw.commitWindow, 1, type(uint32).max));
        p.revealWindow = uint32(bound(raw.revealWindow, 1, type(uint32).max));
        p.challengeWindow =
            uint32(bound(raw.challengeWindow, 1, _min(type(uint32).max, uint256(p.commitWindow) + p.revealWindow)));
        // ETH budgets are limited by what the test account can hold; tokens go up to the uint104 cap
        uint256 maxBudget = erc20 ? type(uint104).max : 1e30;
        p.rewardPerRound = uint128(bound(raw.rewardPerRound, 1, maxBudget / p.numRounds));
        p.stake = raw.stake;
        p.disputeBond = raw.disputeBond;
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    // ---------------------------------------------------------------- createProject

    function testFuzz_createProject_storesParamsAndEscrowsBudget(Raw memory raw, bool erc20) public {
        LearningMarket.ProjectParams memory p = _bounded(raw, erc20);
        uint256 budget = _budget(p);
        if (erc20) token.mint(owner, budget);
        else vm.deal(owner, budget);
        uint256 before = _balance(p.token, address(market));
        vm.expectEmit(address(market));
        emit LearningMarket.ProjectCreated(1, owner, p.token, budget, p);
        uint256 pid = _create(p);

        assertEq(_balance(p.token, address(market)), before + budget, "escrow holds the budget");
        LearningMarket.Project memory s = market.getProject(pid);
        assertEq(s.numRounds, p.numRounds, "numRounds");
        assertEq(s.commitWindow, p.commitWindow, "commitWindow");
        assertEq(s.revealWindow, p.revealWindow, "revealWindow");
        assertEq(s.challengeWindow, p.challengeWindow, "challengeWindow");
        assertEq(s.rewardPerRound, p.rewardPerRound, "rewardPerRound");
        assertEq(s.stake, p.stake, "stake");
        assertEq(s.disputeBond, p.disputeBond, "disputeBond");
        assertEq(s.budget, budget, "budget");
        assertEq(s.unallocated, budget, "unallocated");
        (uint256 round,, uint256 commitDl, uint256 revealDl) = market.roundDeadlines(pid);
        assertEq(round, 0, "round 0 open");
        assertEq(commitDl, block.number + p.commitWindow, "commit deadline");
        assertEq(revealDl, block.number + uint256(p.commitWindow) + p.revealWindow, "reveal deadline");
    }

    function testFuzz_createProject_rejectsLongChallengeWindow(uint32 c, uint32 r, uint32 extra) public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 1, type(uint32).max / 2));
        p.revealWindow = uint32(bound(r, 1, type(uint32).max / 2));
        uint256 limit = uint256(p.commitWindow) + p.revealWindow;
        p.challengeWindow = uint32(bound(extra, limit + 1, type(uint32).max));
        vm.prank(owner);
        vm.expectRevert(_invalid("challengeWindow must be <= commitWindow + revealWindow"));
        market.createProject{value: BUDGET}(p);
    }

    function testFuzz_createProject_rejectsBudgetAboveUint104(uint32 n, uint128 reward) public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = uint32(bound(n, 1, type(uint32).max));
        p.rewardPerRound = uint128(bound(reward, uint256(type(uint104).max) / p.numRounds + 1, type(uint128).max));
        vm.prank(owner);
        vm.expectRevert(_invalid("budget too large"));
        market.createProject(p);
    }

    function testFuzz_createProject_rejectsWrongEthPayment(uint256 sent) public {
        vm.assume(sent != BUDGET);
        sent = bound(sent, 0, FUNDS);
        vm.assume(sent != BUDGET);
        LearningMarket.ProjectParams memory p = _params(address(0));
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.WrongPayment.selector, BUDGET, sent));
        market.createProject{value: sent}(p);
    }

    // ---------------------------------------------------------------- commit / reveal

    function testFuzz_commitReveal_onlyTheCommittedValuesOpen(
        string memory cid,
        bytes32 digest,
        bytes32 salt,
        bytes32 otherSalt,
        string memory otherCid
    ) public {
        vm.assume(otherSalt != salt);
        vm.assume(keccak256(bytes(otherCid)) != keccak256(bytes(cid)));
        uint256 pid = _createEth();
        _register(pid, alice);
        _register(pid, bob);
        bytes32 c = market.commitmentOf(pid, 0, alice, cid, digest, salt);
        vm.assume(c != bytes32(0) && c != bytes32(uint256(1)));
        vm.prank(alice);
        market.commit(pid, 0, c);
        vm.prank(bob); // a copier
        market.commit(pid, 0, c);
        _rollToReveal(pid);

        bytes memory mismatch = abi.encodeWithSelector(LearningMarket.RevealMismatch.selector, pid, 0, alice);
        vm.prank(alice);
        vm.expectRevert(mismatch);
        market.reveal(pid, 0, cid, digest, otherSalt);
        vm.prank(alice);
        vm.expectRevert(mismatch);
        market.reveal(pid, 0, otherCid, digest, salt);
        vm.prank(alice);
        vm.expectRevert(mismatch);
        market.reveal(pid, 0, cid, ~digest, salt);
        vm.prank(bob);
        vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealMismatch.selector, pid, 0, bob));
        market.reveal(pid, 0, cid, digest, salt);

        vm.expectEmit(address(market));
        emit LearningMarket.UpdateRevealed(pid, 0, alice, cid, digest);
        vm.prank(alice);
        market.reveal(pid, 0, cid, digest, salt);
        assertEq(market.commitmentState(pid, 0, alice), 2, "revealed");
        assertEq(market.commitmentState(pid, 0, bob), 1, "copier stays committed");
    }

    function testFuzz_commitReveal_windows(uint32 c, uint32 r, uint256 commitAt, uint256 revealAt) public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 1, 1000));
        p.revealWindow = uint32(bound(r, 1, 1000));
        p.challengeWindow = 1;
        uint256 pid = _create(p);
        _register(pid, alice);
        uint256 opened = block.number;
        uint256 commitDl = opened + p.commitWindow;
        uint256 revealDl = commitDl + p.revealWindow;
        commitAt = bound(commitAt, opened, revealDl + 5);
        vm.roll(commitAt);
        bytes32 cm = market.commitmentOf(pid, 0, alice, "cid", bytes32(0), bytes32(0));
        if (commitAt > commitDl) {
            vm.prank(alice);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.CommitClosed.selector, pid, 0, commitDl));
            market.commit(pid, 0, cm);
            return;
        }
        vm.prank(alice);
        market.commit(pid, 0, cm);
        revealAt = bound(revealAt, commitAt, revealDl + 5);
        vm.roll(revealAt);
        vm.prank(alice);
        if (revealAt <= commitDl) {
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealNotOpen.selector, pid, 0, commitDl));
        } else if (revealAt > revealDl) {
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.RevealClosed.selector, pid, 0, revealDl));
        }
        market.reveal(pid, 0, "cid", bytes32(0), bytes32(0));
    }

    // ---------------------------------------------------------------- allocations

    /// Each round may allocate anything up to unallocated - rewardPerRound * (rounds left after it),
    /// and not a wei more; whatever is never allocated goes back to the owner at the end.
    function testFuzz_allocation_aroundAvailable(uint8 n, uint128 reward, uint256[8] memory seeds) public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = uint32(bound(n, 1, 8));
        p.rewardPerRound = uint128(bound(reward, 1, 1e30));
        p.challengeWindow = 1;
        uint256 budget = _budget(p);
        token.mint(owner, budget);
        uint256 pid = _create(p);
        uint256 total;
        for (uint256 r = 0; r < p.numRounds; r++) {
            uint256 available = budget - total - uint256(p.rewardPerRound) * (p.numRounds - r - 1);
            // try just above the bound (by 1..3 wei), then something at or below it
            uint256 over = available + 1 + (seeds[r] % 3);
            _rollToFinalize(pid);
            vm.prank(aggregator);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, over, available));
            market.finalizeRound(pid, r, MODEL, RECORD, bytes32(uint256(1)), over);
            uint256 allocation = seeds[r] % 4 == 0 ? available : bound(seeds[r] >> 8, 0, available);
            _finalize(pid, r, bytes32(uint256(1)), allocation);
            total += allocation;
            assertEq(market.getRound(pid, r).cumulativeAllocated, total, "cumulative");
        }
        _rollPastChallenge(pid, p.numRounds - 1);
        uint256 before = token.balanceOf(owner);
        _end(pid);
        assertEq(token.balanceOf(owner) - before, budget - total, "end returns exactly the unallocated budget");
    }

    // ---------------------------------------------------------------- claims

    struct Split {
        uint256 alloc0;
        uint256 alloc1;
        uint256 a0; // alice's cumulative after round 0
        uint256 b0;
        uint256 a1; // after round 1
        uint256 b1;
    }

    function _split(uint256 alloc0, uint256 split0, uint256 alloc1, uint256 split1)
        internal
        pure
        returns (Split memory s)
    {
        s.alloc0 = bound(alloc0, 0, 1e27);
        split0 = bound(split0, 0, s.alloc0);
        s.alloc1 = bound(alloc1, 0, 2e27 - s.alloc0);
        split1 = bound(split1, 0, s.alloc1);
        s.a0 = split0;
        s.b0 = s.alloc0 - split0;
        s.a1 = s.a0 + split1;
        s.b1 = s.b0 + s.alloc1 - split1;
    }

    /// Two rounds, two trainers, arbitrary splits: a claim always pays the difference between the
    /// proven cumulative amount and what was already paid, and the totals match the trees.
    function testFuzz_claim_cumulativePaysDifference(
        uint256 alloc0,
        uint256 split0,
        uint256 alloc1,
        uint256 split1,
        bool aliceClaimsEarly
    ) public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 2;
        p.rewardPerRound = 1e27;
        token.mint(owner, 2e27);
        uint256 pid = _create(p);
        Split memory s = _split(alloc0, split0, alloc1, split1);

        MerkleBuilder.Tree memory t0 = _tree2(alice, s.a0, bob, s.b0);
        MerkleBuilder.Tree memory t1 = _tree2(alice, s.a1, bob, s.b1);
        _finalizeNext(pid, t0.root(), s.alloc0);
        _finalizeNext(pid, t1.root(), s.alloc1);
        _rollPastChallenge(pid, 1);

        uint256 aliceStart = token.balanceOf(alice);
        if (aliceClaimsEarly) _claimOrNothing(pid, 0, alice, s.a0, t0.proof(0), 0);
        _claimOrNothing(pid, 1, alice, s.a1, t1.proof(0), aliceClaimsEarly ? s.a0 : 0);
        assertEq(token.balanceOf(alice) - aliceStart, s.a1, "alice got her cumulative, in total");
        assertEq(market.claimedBy(pid, alice), s.a1, "claimedBy alice");

        uint256 bobStart = token.balanceOf(bob);
        _claimOrNothing(pid, 1, bob, s.b1, t1.proof(1), 0);
        assertEq(token.balanceOf(bob) - bobStart, s.b1, "bob");
        // an old, smaller root never pays again
        if (s.b1 > 0) {
            bytes32[] memory proof = t0.proof(1);
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, bob, s.b0, s.b1));
            market.claim(pid, 0, bob, s.b0, proof);
        }
        assertEq(market.getProject(pid).claimed, s.a1 + s.b1, "project claimed");
        assertEq(s.a1 + s.b1, s.alloc0 + s.alloc1, "trees add up to the allocations");
    }

    function _claimOrNothing(
        uint256 pid,
        uint256 round,
        address who,
        uint256 cumulative,
        bytes32[] memory proof,
        uint256 already
    ) internal {
        uint256 before = token.balanceOf(who);
        if (cumulative <= already) {
            vm.expectRevert(
                abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, who, cumulative, already)
            );
            market.claim(pid, round, who, cumulative, proof);
            return;
        }
        vm.expectEmit(address(market));
        emit LearningMarket.RewardClaimed(pid, round, who, cumulative, cumulative - already);
        market.claim(pid, round, who, cumulative, proof);
        assertEq(token.balanceOf(who) - before, cumulative - already, "paid exactly the difference");
    }

    /// Whatever a root promises, the project never pays more than it allocated.
    function testFuzz_claim_neverExceedsAllocation(uint256 promised, uint256 allocation) public {
        uint256 pid = _createEth();
        allocation = bound(allocation, 0, REWARD);
        promised = bound(promised, 1, 1e30);
        MerkleBuilder.Tree memory t = _tree2(alice, promised, bob, 0);
        _finalizeNext(pid, t.root(), allocation);
        _rollPastChallenge(pid, 0);
        bytes32[] memory proof = t.proof(0);
        if (promised > allocation) {
            vm.expectRevert(
                abi.encodeWithSelector(LearningMarket.ClaimExceedsAllocation.selector, pid, promised, allocation)
            );
        }
        market.claim(pid, 0, alice, promised, proof);
        assertLe(market.getProject(pid).claimed, allocation, "claimed <= allocated");
    }

    function testFuzz_claim_windowBoundary(uint32 challenge, uint256 offset) public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = uint32(bound(challenge, 1, COMMIT + REVEAL));
        uint256 pid = _create(p);
        MerkleBuilder.Tree memory t = _tree2(alice, 0.5 ether, bob, 0.5 ether);
        _finalizeNext(pid, t.root(), 1 ether);
        uint256 finalizedAt = block.number;
        offset = bound(offset, 0, 3 * uint256(p.challengeWindow));
        vm.roll(finalizedAt + offset);
        bytes32[] memory proof = t.proof(0);
        if (offset <= p.challengeWindow) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    LearningMarket.ChallengeWindowOpen.selector, pid, 0, finalizedAt + p.challengeWindow
                )
            );
        }
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    // ---------------------------------------------------------------- disputes

    function testFuzz_dispute_windowBoundary(uint32 challenge, uint256 offset) public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = uint32(bound(challenge, 1, COMMIT + REVEAL));
        uint256 pid = _create(p);
        _register(pid, alice);
        _finalizeNext(pid, bytes32(uint256(1)), 0);
        uint256 closesAt = block.number + p.challengeWindow;
        offset = bound(offset, 0, 3 * uint256(p.challengeWindow));
        vm.roll(block.number + offset);
        vm.prank(alice);
        if (block.number > closesAt) {
            vm.expectRevert(abi.encodeWithSelector(LearningMarket.ChallengeWindowClosed.selector, pid, 0, closesAt));
        }
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    function testFuzz_resolve_conservesValue(bool upheld, uint256 allocation, uint128 bond) public {
        LearningMarket.ProjectParams memory p = _params(address(token));
        p.disputeBond = uint128(bound(bond, 0, 1e30));
        uint256 pid = _create(p);
        token.mint(alice, p.disputeBond);
        _register(pid, alice);
        allocation = bound(allocation, 0, REWARD);
        _finalizeNext(pid, bytes32(uint256(1)), allocation);
        _dispute(pid, 0, alice);
        _resolve(pid, 0, upheld);
        LearningMarket.Project memory s = market.getProject(pid);
        uint256 credit = market.creditOf(pid, alice);
        assertEq(s.allocated, upheld ? 0 : allocation, "allocated");
        assertEq(credit, upheld ? p.disputeBond : 0, "credit");
        assertEq(
            uint256(s.unallocated) + s.allocated + credit,
            BUDGET + p.disputeBond,
            "pool + allocations + credits == budget + bond"
        );
        assertEq(token.balanceOf(address(market)), BUDGET + STAKE + p.disputeBond, "escrow");
    }

    // ---------------------------------------------------------------- liveness

    /// finalize is never held up by the previous round's challenge window (only by a dispute):
    /// with challengeWindow <= commitWindow + revealWindow it has closed by the reveal deadline.
    function testFuzz_finalize_neverWaitsForChallengeWindow(uint32 c, uint32 r, uint32 ch, uint8 rounds) public {
        LearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 1, 1e6));
        p.revealWindow = uint32(bound(r, 1, 1e6));
        p.challengeWindow = uint32(bound(ch, 1, uint256(p.commitWindow) + p.revealWindow));
        p.numRounds = uint32(bound(rounds, 2, 6));
        uint256 pid = _create(_withBudgetFunded(p));
        for (uint256 i = 0; i < p.numRounds; i++) {
            _rollToFinalize(pid);
            if (i > 0) assertGt(block.number, _closesAt(pid, i - 1), "previous window closed by the reveal deadline");
            _finalize(pid, i, bytes32(uint256(1)), 0);
        }
        _rollPastChallenge(pid, p.numRounds - 1);
        _end(pid);
    }

    function _withBudgetFunded(LearningMarket.ProjectParams memory p)
        internal
        returns (LearningMarket.ProjectParams memory)
    {
        vm.deal(owner, owner.balance + _budget(p));
        return p;
    }
}
