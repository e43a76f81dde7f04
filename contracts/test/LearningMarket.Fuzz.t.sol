// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {MarketFixture} from "./utils/MarketFixture.sol";
import {MerkleBuilder} from "./utils/MerkleBuilder.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";

/// @notice Property tests over arbitrary parameters, amounts, windows and secrets
/// (runs set by [fuzz] in foundry.toml).
contract FuzzTest is MarketFixture {
    using MerkleBuilder for MerkleBuilder.Tree;

    struct Raw {
        uint32 numRounds;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 challengeWindow;
        uint32 finalizeWindow;
        uint32 ruleWindow;
        uint32 claimWindow;
        uint128 rewardPerRound;
        uint128 stakeExtra;
        uint128 bondExtra;
        uint128 aggBondExtra;
        uint72 depositExtra;
    }

    function _min(uint256 a, uint256 b) internal pure returns (uint256) {
        return a < b ? a : b;
    }

    function _floor(uint256 reward, uint256 divisor) internal pure returns (uint256) {
        uint256 m = reward / divisor;
        return m == 0 ? 1 : m;
    }

    /// A valid parameter set from arbitrary input: every window, minimum and cap respected.
    function _bounded(Raw memory raw, bool erc20) internal view returns (ILearningMarket.ProjectParams memory p) {
        p = _params(erc20 ? address(token) : address(0));
        p.numRounds = uint32(bound(raw.numRounds, 1, 10_000));
        p.commitWindow = uint32(bound(raw.commitWindow, 2, type(uint32).max / 4)); // room >= 4
        p.revealWindow = uint32(bound(raw.revealWindow, 1, type(uint32).max / 4));
        p.finalizeWindow = uint32(bound(raw.finalizeWindow, 1, type(uint32).max / 4));
        uint256 room = uint256(p.commitWindow) + p.revealWindow + p.finalizeWindow;
        p.challengeWindow = uint32(bound(raw.challengeWindow, 2, _min(room - 2, type(uint32).max)));
        p.ruleWindow = uint32(bound(raw.ruleWindow, 1, room - 1 - p.challengeWindow));
        p.claimWindow = uint32(bound(raw.claimWindow, 1, type(uint32).max));
        // up to the scale at which a uint72 deposit can still reach its minimum (rewardPerRound / 1000)
        uint256 maxReward = uint256(type(uint72).max) * 1000;
        p.rewardPerRound = uint128(bound(raw.rewardPerRound, 1, _min(maxReward, type(uint96).max / p.numRounds)));
        uint256 reward = p.rewardPerRound;
        p.commitDeposit = uint72(bound(raw.depositExtra, _floor(reward, 1000), type(uint72).max));
        p.stake = uint128(bound(raw.stakeExtra, p.commitDeposit, 1e30));
        p.disputeBond = uint128(bound(raw.bondExtra, _floor(reward, 100), 1e30));
        p.aggregatorBond = uint128(bound(raw.aggBondExtra, _floor(reward, 10), 1e30));
    }

    // ---------------------------------------------------------------- createProject

    function testFuzz_createProject_storesParamsAndEscrowsBudget(Raw memory raw, bool erc20) public {
        ILearningMarket.ProjectParams memory p = _bounded(raw, erc20);
        uint256 budget = _budget(p);
        if (erc20) token.mint(owner, budget);
        else vm.deal(owner, budget);
        uint256 before = _balance(p.token, address(market));
        vm.expectEmit(address(market));
        emit ILearningMarket.ProjectCreated(1, owner, p.token, budget, SPEC);
        uint256 pid = _create(p);

        assertEq(_balance(p.token, address(market)), before + budget, "escrow holds the budget");
        ILearningMarket.Project memory s = market.getProject(pid);
        assertEq(s.numRounds, p.numRounds, "numRounds");
        assertEq(s.commitWindow, p.commitWindow, "commitWindow");
        assertEq(s.revealWindow, p.revealWindow, "revealWindow");
        assertEq(s.challengeWindow, p.challengeWindow, "challengeWindow");
        assertEq(s.finalizeWindow, p.finalizeWindow, "finalizeWindow");
        assertEq(s.ruleWindow, p.ruleWindow, "ruleWindow");
        assertEq(s.claimWindow, p.claimWindow, "claimWindow");
        assertEq(s.rewardPerRound, p.rewardPerRound, "rewardPerRound");
        assertEq(s.stake, p.stake, "stake");
        assertEq(s.disputeBond, p.disputeBond, "disputeBond");
        assertEq(s.aggregatorBond, p.aggregatorBond, "aggregatorBond");
        assertEq(s.commitDeposit, p.commitDeposit, "commitDeposit");
        assertEq(s.budget, budget, "budget");
        assertEq(s.unallocated, budget, "unallocated");
        assertEq(market.roundAllocation(pid), p.rewardPerRound, "round 0 allocates one share");
        (uint256 round,, uint256 commitDl, uint256 revealDl) = market.roundDeadlines(pid);
        assertEq(round, 0, "round 0 open");
        assertEq(commitDl, block.number + p.commitWindow, "commit deadline");
        assertEq(revealDl, block.number + uint256(p.commitWindow) + p.revealWindow, "reveal deadline");
    }

    /// challenge + rule must leave at least one block before the next finalize deadline.
    function testFuzz_createProject_settlementMustFit(uint32 c, uint32 r, uint32 f, uint32 ch, uint32 rule) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 1, 1e6));
        p.revealWindow = uint32(bound(r, 1, 1e6));
        p.finalizeWindow = uint32(bound(f, 1, 1e6));
        p.challengeWindow = uint32(bound(ch, 2, 4e6));
        p.ruleWindow = uint32(bound(rule, 1, 4e6));
        uint256 room = uint256(p.commitWindow) + p.revealWindow + p.finalizeWindow;
        uint256 settlement = uint256(p.challengeWindow) + p.ruleWindow;
        vm.prank(owner);
        if (settlement >= room) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.SettlementDoesNotFit.selector, settlement, room));
        }
        market.createProject{value: BUDGET}(p);
    }

    function testFuzz_createProject_rejectsBudgetAboveUint96(uint32 n, uint128 reward) public {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = uint32(bound(n, 1, type(uint32).max));
        p.rewardPerRound = uint128(bound(reward, uint256(type(uint96).max) / p.numRounds + 1, type(uint128).max));
        vm.prank(owner);
        vm.expectRevert(
            abi.encodeWithSelector(ILearningMarket.BudgetTooLarge.selector, uint256(p.rewardPerRound) * p.numRounds)
        );
        market.createProject(p);
    }

    function testFuzz_createProject_rejectsWrongEthPayment(uint256 sent) public {
        sent = bound(sent, 0, FUNDS);
        vm.assume(sent != BUDGET);
        ILearningMarket.ProjectParams memory p = _params(address(0));
        vm.prank(owner);
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, BUDGET, sent));
        market.createProject{value: sent}(p);
    }

    /// Each minimum is max(1, reward / divisor); the checks run in the order bond, aggregator bond,
    /// deposit, stake, and the first one short is reported.
    function testFuzz_createProject_minimums(uint128 reward, uint128 bond, uint128 aggBond, uint72 dep, uint128 stake)
        public
    {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 1;
        p.rewardPerRound = uint128(bound(reward, 1, uint256(type(uint72).max) * 1000));
        uint256 r = p.rewardPerRound;
        (p.disputeBond, p.aggregatorBond, p.commitDeposit, p.stake) = (bond, aggBond, dep, stake);
        token.mint(owner, r);
        bytes memory err;
        if (bond < _floor(r, 100)) {
            err = abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 1, bond, _floor(r, 100));
        } else if (aggBond < _floor(r, 10)) {
            err = abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 2, aggBond, _floor(r, 10));
        } else if (dep < _floor(r, 1000)) {
            err = abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 3, dep, _floor(r, 1000));
        } else if (stake < dep) {
            err = abi.encodeWithSelector(ILearningMarket.BelowMinimum.selector, 0, stake, dep);
        }
        vm.prank(owner);
        if (err.length != 0) vm.expectRevert(err);
        market.createProject(p);
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
        vm.assume(uint256(c) > 2);
        vm.prank(alice);
        market.commit(pid, 0, c);
        vm.prank(bob); // a copier
        market.commit(pid, 0, c);
        _rollToReveal(pid);

        bytes memory mismatch = abi.encodeWithSelector(ILearningMarket.RevealMismatch.selector, pid, 0, alice);
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
        vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealMismatch.selector, pid, 0, bob));
        market.reveal(pid, 0, cid, digest, salt);

        vm.expectEmit(address(market));
        emit ILearningMarket.UpdateRevealed(pid, 0, alice, cid, digest);
        vm.prank(alice);
        market.reveal(pid, 0, cid, digest, salt);
        assertEq(market.commitmentState(pid, 0, alice), 2, "revealed");
        assertEq(market.commitmentState(pid, 0, bob), 1, "copier stays committed");
        // the copier pays its deposit to the round it tried to free-ride
        _rollToFinalize(pid);
        market.forfeitDeposit(pid, 0, bob);
        assertEq(market.getProject(pid).pools, DEPOSIT, "deposit pooled for alice");
    }

    function testFuzz_commitReveal_windows(uint32 c, uint32 r, uint256 commitAt, uint256 revealAt) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 1, 1000));
        p.revealWindow = uint32(bound(r, 1, 1000));
        p.challengeWindow = 2;
        p.ruleWindow = 1;
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
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.CommitClosed.selector, pid, 0, commitDl));
            market.commit(pid, 0, cm);
            return;
        }
        vm.prank(alice);
        market.commit(pid, 0, cm);
        revealAt = bound(revealAt, commitAt, revealDl + 5);
        vm.roll(revealAt);
        vm.prank(alice);
        if (revealAt <= commitDl) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealNotOpen.selector, pid, 0, commitDl));
        } else if (revealAt > revealDl) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealClosed.selector, pid, 0, revealDl));
        }
        market.reveal(pid, 0, "cid", bytes32(0), bytes32(0));
    }

    // ---------------------------------------------------------------- deadlines

    /// finalize is accepted exactly in (revealDl, revealDl + finalizeWindow]; expire exactly after
    /// it (with a reveal), or after the reveal deadline (without one).
    function testFuzz_deadlines_finalizeAndExpire(uint32 c, uint32 r, uint32 f, uint256 when, bool revealed) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 2, 1e6)); // challenge 2 + rule 1 must fit
        p.revealWindow = uint32(bound(r, 1, 1e6));
        p.finalizeWindow = uint32(bound(f, 1, 1e6));
        p.challengeWindow = 2;
        p.ruleWindow = 1;
        uint256 pid = _create(p);
        _register(pid, alice);
        _bond(pid);
        if (revealed) {
            _commit(pid, 0, alice);
            _rollToReveal(pid);
            _reveal(pid, 0, alice);
        }
        (, uint256 revealDl) = _deadlines(pid);
        uint256 finalizeDl = revealDl + p.finalizeWindow;
        when = bound(when, block.number, finalizeDl + 3);
        vm.roll(when);
        uint256 expiresAfter = revealed ? finalizeDl : revealDl;
        if (when <= expiresAfter) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeStillOpen.selector, pid, 0, expiresAfter));
            market.expireRound(pid, 0);
        } else {
            if (revealed && when > finalizeDl) {
                vm.prank(aggregator);
                vm.expectRevert(abi.encodeWithSelector(ILearningMarket.FinalizeClosed.selector, pid, 0, finalizeDl));
                market.finalizeRound(pid, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
            }
            uint256 snap = market.getProject(pid).bondHeld;
            market.expireRound(pid, 0);
            assertEq(market.getProject(pid).bondHeld, revealed ? 0 : snap, "slashed only with a revealer");
            return;
        }
        vm.prank(aggregator);
        if (when <= revealDl) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RevealStillOpen.selector, pid, 0, revealDl));
        }
        market.finalizeRound(pid, 0, MODEL, RECORD, bytes32(uint256(1)), REWARD);
    }

    /// resolveDispute is accepted until finalizedAt + challenge + rule; lapseDispute only after.
    function testFuzz_deadlines_rulingAndLapse(uint32 ch, uint32 rule, uint256 when, bool upheld) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = uint32(bound(ch, 2, 40));
        p.ruleWindow = uint32(bound(rule, 1, COMMIT + REVEAL + FINALIZE - 1 - p.challengeWindow));
        uint256 pid = _create(p);
        _register(pid, alice);
        _finalizeNext(pid, bytes32(uint256(1)));
        _dispute(pid, 0, alice);
        uint256 deadline = market.settlesAfter(pid, 0);
        assertEq(deadline, market.getRound(pid, 0).finalizedAt + uint256(p.challengeWindow) + p.ruleWindow, "dl");
        when = bound(when, block.number, deadline + 5);
        vm.roll(when);
        if (when <= deadline) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RulingStillOpen.selector, pid, 0, deadline));
            market.lapseDispute(pid, 0, 0);
            _resolve(pid, 0, 0, upheld, bytes32(uint256(2)));
        } else {
            vm.prank(arbiter);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.RulingClosed.selector, pid, 0, deadline));
            market.resolveDispute(pid, 0, 0, upheld, "r", bytes32(uint256(2)));
            market.lapseDispute(pid, 0, 0);
            assertTrue(market.getProject(pid).arbiterMissed, "missed");
        }
        assertEq(market.getRound(pid, 0).pendingDisputes, 0, "closed either way");
    }

    // ---------------------------------------------------------------- allocations

    /// Each round allocates exactly unallocated - rewardPerRound * (rounds after it), whether rounds
    /// before it were finalized or expired and whatever deposits were forfeited into the budget; no
    /// other amount is accepted, the total never exceeds what came in, and the end returns the rest.
    function testFuzz_allocation_fixedAndWithinBudget(uint8 n, uint128 reward, uint256[8] memory seeds) public {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = uint32(bound(n, 1, 8));
        p.rewardPerRound = uint128(bound(reward, 1, 1e24));
        p.commitDeposit = uint72(_floor(p.rewardPerRound, 1000));
        p.stake = uint128(p.commitDeposit) * 8;
        p.disputeBond = uint128(_floor(p.rewardPerRound, 100));
        p.aggregatorBond = uint128(_floor(p.rewardPerRound, 10));
        uint256 budget = _budget(p);
        token.mint(owner, budget);
        uint256 pid = _create(p);
        _register(pid, alice);
        uint256 total;
        uint256 extra;
        for (uint256 r = 0; r < p.numRounds; r++) {
            uint256 unallocated = market.getProject(pid).unallocated;
            uint256 expected = unallocated - uint256(p.rewardPerRound) * (p.numRounds - r - 1);
            assertEq(market.roundAllocation(pid), expected, "fixed allocation");
            assertGe(expected, p.rewardPerRound, "at least its own share");
            bool forfeit = seeds[r] & 1 == 1;
            if (forfeit) _commit(pid, r, alice);
            _rollToFinalize(pid);
            if (forfeit) {
                market.forfeitDeposit(pid, r, alice); // nobody revealed: the deposit joins the budget
                extra += p.commitDeposit;
                expected += p.commitDeposit;
            }
            if (seeds[r] & 2 == 2) {
                market.expireRound(pid, r);
                continue;
            }
            _bond(pid);
            uint256 off = 1 + (seeds[r] >> 8) % 3;
            vm.prank(aggregator);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, expected, expected + off));
            market.finalizeRound(pid, r, MODEL, RECORD, bytes32(uint256(1)), expected + off);
            vm.prank(aggregator);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, expected, expected - 1));
            market.finalizeRound(pid, r, MODEL, RECORD, bytes32(uint256(1)), expected - 1);
            assertEq(_finalize(pid, r, bytes32(uint256(1))), expected, "finalized with it");
            total += expected;
            assertEq(market.getRound(pid, r).cumulativeAllocated, total, "cumulative");
            assertLe(total, budget + extra, "never more than came in");
        }
        vm.roll(block.number + CHALLENGE + 1);
        uint256 before = token.balanceOf(owner);
        _end(pid);
        assertEq(token.balanceOf(owner) - before, budget + extra - total, "end returns exactly the rest");
        assertEq(market.getProject(pid).allocated, total, "allocated");
    }

    // ---------------------------------------------------------------- claims

    /// Two rounds with fixed allocations (1e24 each), two trainers, arbitrary splits: a claim
    /// always pays the difference between the proven cumulative amount and what was already paid.
    function testFuzz_claim_cumulativePaysDifference(uint256 split0, uint256 split1, bool aliceClaimsEarly) public {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.numRounds = 2;
        p.rewardPerRound = 1e24;
        p.aggregatorBond = 1e23;
        p.disputeBond = 1e22;
        p.commitDeposit = 1e21;
        p.stake = 1e21;
        token.mint(owner, 2e24);
        uint256 pid = _create(p);
        split0 = bound(split0, 0, 1e24);
        split1 = bound(split1, 0, 1e24);
        (uint256 a0, uint256 b0) = (split0, 1e24 - split0);
        (uint256 a1, uint256 b1) = (a0 + split1, b0 + 1e24 - split1);

        MerkleBuilder.Tree memory t0 = _tree2(alice, a0, bob, b0);
        MerkleBuilder.Tree memory t1 = _tree2(alice, a1, bob, b1);
        _finalizeNext(pid, t0.root());
        _finalizeNext(pid, t1.root());
        _rollPastChallenge(pid, 1);

        uint256 aliceStart = token.balanceOf(alice);
        if (aliceClaimsEarly) _claimOrNothing(pid, 0, alice, a0, t0.proof(0), 0);
        _claimOrNothing(pid, 1, alice, a1, t1.proof(0), aliceClaimsEarly ? a0 : 0);
        assertEq(token.balanceOf(alice) - aliceStart, a1, "alice got her cumulative, in total");
        assertEq(market.claimedBy(pid, alice), a1, "claimedBy alice");

        uint256 bobStart = token.balanceOf(bob);
        _claimOrNothing(pid, 1, bob, b1, t1.proof(1), 0);
        assertEq(token.balanceOf(bob) - bobStart, b1, "bob");
        if (b1 > 0) {
            bytes32[] memory proof = t0.proof(1);
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.NothingToClaim.selector, pid, bob, b0, b1));
            market.claim(pid, 0, bob, b0, proof);
        }
        assertEq(market.getProject(pid).claimed, 2e24, "everything allocated was claimed");
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
                abi.encodeWithSelector(ILearningMarket.NothingToClaim.selector, pid, who, cumulative, already)
            );
            market.claim(pid, round, who, cumulative, proof);
            return;
        }
        vm.expectEmit(address(market));
        emit ILearningMarket.RewardClaimed(pid, round, who, cumulative, cumulative - already, who);
        market.claim(pid, round, who, cumulative, proof);
        assertEq(token.balanceOf(who) - before, cumulative - already, "paid exactly the difference");
    }

    /// Whatever a dishonest root promises, the project never pays more than it allocated, and
    /// never touches another project's escrow.
    function testFuzz_claim_neverExceedsAllocation(uint256 promisedA, uint256 promisedB) public {
        uint256 pid = _createEth();
        uint256 other = _createEth();
        promisedA = bound(promisedA, 1, 1e30);
        promisedB = bound(promisedB, 1, 1e30);
        MerkleBuilder.Tree memory t = _tree2(alice, promisedA, bob, promisedB);
        _finalizeNext(pid, t.root());
        _rollPastChallenge(pid, 0);
        bytes32[] memory proofA = t.proof(0);
        bytes32[] memory proofB = t.proof(1);
        if (promisedA > REWARD) {
            vm.expectRevert(
                abi.encodeWithSelector(ILearningMarket.ClaimExceedsAllocation.selector, pid, promisedA, REWARD)
            );
        }
        market.claim(pid, 0, alice, promisedA, proofA);
        uint256 left = REWARD - market.getProject(pid).claimed;
        if (promisedB > left) {
            vm.expectRevert(
                abi.encodeWithSelector(ILearningMarket.ClaimExceedsAllocation.selector, pid, promisedB, left)
            );
        }
        market.claim(pid, 0, bob, promisedB, proofB);
        assertLe(market.getProject(pid).claimed, REWARD, "claimed <= allocated");
        assertEq(market.getProject(other).unallocated, BUDGET, "other project untouched");
        assertGe(address(market).balance, 2 * BUDGET + AGG_BOND - market.getProject(pid).claimed, "both escrows");
    }

    function testFuzz_claim_windowBoundary(uint32 challenge, uint256 offset) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = uint32(bound(challenge, 2, COMMIT + REVEAL + FINALIZE - RULE - 1));
        uint256 pid = _create(p);
        MerkleBuilder.Tree memory t = _tree2(alice, 0.5 ether, bob, 0.5 ether);
        _finalizeNext(pid, t.root());
        uint256 finalizedAt = block.number;
        offset = bound(offset, 0, 3 * uint256(p.challengeWindow));
        vm.roll(finalizedAt + offset);
        bytes32[] memory proof = t.proof(0);
        if (offset <= p.challengeWindow) {
            vm.expectRevert(
                abi.encodeWithSelector(
                    ILearningMarket.RoundNotClaimable.selector, pid, 0, finalizedAt + p.challengeWindow + 1
                )
            );
        }
        market.claim(pid, 0, alice, 0.5 ether, proof);
    }

    // ---------------------------------------------------------------- disputes

    function testFuzz_dispute_windowBoundary(uint32 challenge, uint256 offset) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.challengeWindow = uint32(bound(challenge, 2, COMMIT + REVEAL + FINALIZE - RULE - 1));
        uint256 pid = _create(p);
        _register(pid, alice);
        _finalizeNext(pid, bytes32(uint256(1)));
        uint256 closesAt = block.number + p.challengeWindow;
        offset = bound(offset, 0, 3 * uint256(p.challengeWindow));
        vm.roll(block.number + offset);
        vm.prank(alice);
        if (block.number > closesAt) {
            vm.expectRevert(abi.encodeWithSelector(ILearningMarket.ChallengeWindowClosed.selector, pid, 0, closesAt));
        }
        market.dispute{value: BOND}(pid, 0, "bafyevidence");
    }

    /// Whatever the ruling, money only moves between known buckets: the allocation stays, the bond
    /// goes back (upheld) or to the aggregator (dismissed), the aggregator's bond to the pool.
    function testFuzz_resolve_conservesValue(bool upheld, uint128 bond, bool revealed) public {
        ILearningMarket.ProjectParams memory p = _params(address(token));
        p.disputeBond = uint128(bound(bond, REWARD / 100, 1e30));
        uint256 pid = _create(p);
        token.mint(alice, p.disputeBond);
        _register(pid, alice);
        if (revealed) {
            _commit(pid, 0, alice);
            _rollToReveal(pid);
            _reveal(pid, 0, alice);
        }
        _finalizeNext(pid, bytes32(uint256(1)));
        _dispute(pid, 0, alice);
        _resolve(pid, 0, 0, upheld, bytes32(uint256(2)));
        ILearningMarket.Project memory s = market.getProject(pid);
        uint256 credits = market.creditOf(pid, alice) + market.creditOf(pid, aggregator);
        assertEq(s.allocated, REWARD, "allocation stays");
        assertEq(market.creditOf(pid, alice), upheld ? p.disputeBond : 0, "disputer's credit");
        assertEq(market.creditOf(pid, aggregator), upheld ? 0 : p.disputeBond, "aggregator's credit");
        assertEq(s.bondHeld, upheld ? 0 : AGG_BOND, "aggregator bond");
        assertEq(s.pools, upheld && revealed ? AGG_BOND : 0, "pool");
        assertEq(
            uint256(s.unallocated) + s.allocated + credits + s.pools + s.bondHeld + s.stakesHeld,
            BUDGET + p.disputeBond + AGG_BOND + STAKE,
            "every bucket adds up to what came in"
        );
        assertEq(token.balanceOf(address(market)), BUDGET + STAKE + p.disputeBond + AGG_BOND, "escrow");
    }

    /// Pool shares: each of k revealers takes floor(pool / k); the remainder (< k) stays.
    function testFuzz_poolShare_splitsWithinPool(uint8 k, uint8 forfeits) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        uint256 pid = _create(p);
        k = uint8(bound(k, 1, 3));
        forfeits = uint8(bound(forfeits, 0, 4 - k));
        address[4] memory who = [alice, bob, carol, dave];
        for (uint256 i = 0; i < 4; i++) _register(pid, who[i]);
        _bond(pid);
        for (uint256 i = 0; i < k + forfeits; i++) _commit(pid, 0, who[i]);
        _rollToReveal(pid);
        for (uint256 i = 0; i < k; i++) _reveal(pid, 0, who[i]);
        _rollToFinalize(pid);
        for (uint256 i = k; i < k + forfeits; i++) market.forfeitDeposit(pid, 0, who[i]);
        vm.roll(block.number + FINALIZE);
        market.expireRound(pid, 0);
        uint256 pool = AGG_BOND + uint256(forfeits) * DEPOSIT;
        uint256 paid;
        for (uint256 i = 0; i < k; i++) {
            uint256 before = who[i].balance;
            vm.prank(who[i]);
            market.claimPoolShare(pid, 0, who[i]);
            paid += who[i].balance - before;
            assertEq(who[i].balance - before, pool / k, "equal share");
        }
        assertLe(paid, pool, "never more than the pool");
        assertLt(pool - paid, k, "remainder below k");
        assertEq(market.getProject(pid).pools, pool - paid, "pools");
    }

    // ---------------------------------------------------------------- liveness

    /// Ported from v1's "finalize never waits for the challenge window": a round's whole settlement
    /// (challenge window, then a dispute the arbiter sits on until the ruling deadline) always ends
    /// before the next round's finalize deadline, so the aggregator is never blamed for the
    /// arbiter's delay: it can finalize at that deadline.
    function testFuzz_finalize_previousRoundSettledByFinalizeDeadline(
        uint32 c,
        uint32 r,
        uint32 f,
        uint32 ch,
        uint32 rule
    ) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 2, 1e6));
        p.revealWindow = uint32(bound(r, 1, 1e6));
        p.finalizeWindow = uint32(bound(f, 1, 1e6));
        uint256 room = uint256(p.commitWindow) + p.revealWindow + p.finalizeWindow;
        p.challengeWindow = uint32(bound(ch, 2, room - 2));
        p.ruleWindow = uint32(bound(rule, 1, room - 1 - p.challengeWindow));
        p.numRounds = 2;
        uint256 pid = _create(p);
        _register(pid, alice);
        _finalizeNext(pid, bytes32(uint256(1)));
        _dispute(pid, 0, alice); // the arbiter never rules
        (, uint256 revealDl) = _deadlines(pid);
        uint256 finalizeDl = revealDl + p.finalizeWindow;
        assertLt(market.settlesAfter(pid, 0), finalizeDl, "settled before the finalize deadline");
        vm.roll(finalizeDl);
        _finalize(pid, 1, bytes32(uint256(2)));
    }

    /// Aggregator and arbiter both silent from the start, trainers revealing every round: anyone
    /// expires every round, the project ends within numRounds x (commit + reveal + finalize + 1)
    /// blocks, every stake comes back and the revealers share the slashed bond.
    function testFuzz_liveness_silentRoles_endWithinBound(uint32 c, uint32 r, uint32 f, uint8 rounds) public {
        ILearningMarket.ProjectParams memory p = _params(address(0));
        p.commitWindow = uint32(bound(c, 2, 1e6)); // challenge 2 + rule 1 must fit
        p.revealWindow = uint32(bound(r, 1, 1e6));
        p.finalizeWindow = uint32(bound(f, 1, 1e6));
        p.challengeWindow = 2;
        p.ruleWindow = 1;
        p.numRounds = uint32(bound(rounds, 1, 5));
        vm.deal(owner, owner.balance + _budget(p));
        uint256 pid = _create(p);
        _register(pid, alice);
        _bond(pid); // then silent
        uint256 startBlock = block.number;
        for (uint256 i = 0; i < p.numRounds; i++) {
            _commit(pid, i, alice);
            _rollToReveal(pid);
            _reveal(pid, i, alice);
            (, uint256 revealDl) = _deadlines(pid);
            vm.roll(revealDl + p.finalizeWindow + 1);
            vm.prank(outsider);
            market.expireRound(pid, i);
        }
        vm.prank(outsider);
        market.endProject(pid);
        uint256 bound_ = uint256(p.numRounds) * (uint256(p.commitWindow) + p.revealWindow + p.finalizeWindow + 1);
        assertLe(block.number - startBlock, bound_, "ended within the bound");
        uint256 before = alice.balance;
        vm.prank(alice);
        market.withdrawStake(pid);
        vm.prank(alice);
        market.claimPoolShare(pid, 0, alice);
        assertEq(alice.balance - before, STAKE + AGG_BOND, "stake and the slashed bond");
        assertEq(market.creditOf(pid, owner), _budget(p), "the whole budget to the owner, as a credit");
    }
}
