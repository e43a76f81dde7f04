// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MarketHandler} from "./invariant/MarketHandler.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {ILearningMarket} from "../src/ILearningMarket.sol";
import {MockERC20} from "./mocks/MockERC20.sol";

/// @notice Invariants of the market under random adversarial sequences (invariant/MarketHandler.sol):
/// silent roles, dishonest roots, bad proofs, re-entrant receivers and tokens, a blocklisting token,
/// ownership moves and time jumps past every deadline, over several projects sharing one contract
/// (runs and depth from [invariant] in foundry.toml). Money is checked against the handler's own
/// bookkeeping of every transfer; liveness is checked from random states by the handler
/// (probeLiveness, on a discarded snapshot) and from the final state of every run (afterInvariant).
contract LearningMarketInvariantTest is Test {
    MarketHandler internal handler;
    LearningMarket internal market;

    function setUp() public {
        handler = new MarketHandler();
        market = handler.market();
        bytes4[] memory s = new bytes4[](34);
        s[0] = MarketHandler.createProject.selector;
        s[1] = MarketHandler.register.selector;
        s[2] = MarketHandler.commit.selector;
        s[3] = MarketHandler.reveal.selector;
        s[4] = MarketHandler.forfeit.selector;
        s[5] = MarketHandler.postBond.selector;
        s[6] = MarketHandler.finalize.selector;
        s[7] = MarketHandler.expire.selector;
        s[8] = MarketHandler.dispute.selector;
        s[9] = MarketHandler.resolve.selector;
        s[10] = MarketHandler.lapse.selector;
        s[11] = MarketHandler.claim.selector;
        s[12] = MarketHandler.claimPoolShare.selector;
        s[13] = MarketHandler.withdrawStake.selector;
        s[14] = MarketHandler.withdrawCredit.selector;
        s[15] = MarketHandler.end.selector;
        s[16] = MarketHandler.sweep.selector;
        s[17] = MarketHandler.moveOwnership.selector;
        s[18] = MarketHandler.replace.selector;
        s[19] = MarketHandler.silence.selector;
        s[20] = MarketHandler.roll.selector;
        s[21] = MarketHandler.rollPastDeadlines.selector;
        s[22] = MarketHandler.blocklist.selector;
        s[23] = MarketHandler.puppetMode.selector;
        s[24] = MarketHandler.tokenHook.selector;
        s[25] = MarketHandler.probeLiveness.selector;
        // listed twice: the steps that move a round forward get a larger share of the calls
        s[26] = MarketHandler.trainingPhase.selector;
        s[27] = MarketHandler.trainingPhase.selector;
        s[28] = MarketHandler.finalize.selector;
        s[29] = MarketHandler.roll.selector;
        s[30] = MarketHandler.claim.selector;
        s[31] = MarketHandler.finalize.selector;
        s[32] = MarketHandler.dispute.selector;
        s[33] = MarketHandler.resolve.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: s}));
    }

    function _balance(address tok) internal view returns (uint256) {
        return tok == address(0) ? address(market).balance : MockERC20(tok).balanceOf(address(market));
    }

    /// Conservation: per token, everything that came in is paid out or still held; per project,
    /// what the project took in less what it paid out is exactly what its records say it holds
    /// (budget, allocations not yet claimed or swept, stakes, pools, bonds, credits).
    function invariant_conservation() public view {
        address[4] memory toks = handler.tokens();
        uint256[4] memory held;
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            uint256 pid = pids[i];
            uint256 h = handler.holdings(pid);
            assertEq(handler.projIn(pid) - handler.projOut(pid), h, "project: in - out != what it holds");
            for (uint256 j = 0; j < 4; j++) if (handler.tokenOf(pid) == toks[j]) held[j] += h;
        }
        for (uint256 j = 0; j < 4; j++) {
            assertEq(handler.ghostIn(toks[j]) - handler.ghostOut(toks[j]), _balance(toks[j]), "token: in - out != balance");
            assertEq(_balance(toks[j]), held[j], "token: balance != sum of the projects' holdings");
        }
    }

    /// Solvency: the balance covers everything owed (allocations not yet claimed, stakes, credits,
    /// pools, posted bonds), per token.
    function invariant_solvency() public view {
        address[4] memory toks = handler.tokens();
        uint256[4] memory owed;
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            ILearningMarket.Project memory p = market.getProject(pids[i]);
            uint256 o = uint256(p.stakesHeld) + p.pools + p.bondHeld + (p.swept ? 0 : uint256(p.allocated) - p.claimed);
            address[] memory accts = handler.accounts();
            for (uint256 a = 0; a < accts.length; a++) o += market.creditOf(pids[i], accts[a]);
            for (uint256 j = 0; j < 4; j++) if (p.token == toks[j]) owed[j] += o;
        }
        for (uint256 j = 0; j < 4; j++) assertGe(_balance(toks[j]), owed[j], "escrow below what it owes");
    }

    /// No project pays from another's escrow: a project never pays out more than it took in, its
    /// claims never exceed its allocations, and the rewards it paid equal its claimed total.
    function invariant_projectsIsolated() public view {
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            uint256 pid = pids[i];
            ILearningMarket.Project memory p = market.getProject(pid);
            assertLe(handler.projOut(pid), handler.projIn(pid), "paid out more than it took in");
            assertLe(p.claimed, p.allocated, "claimed > allocated");
            assertEq(handler.ghostClaimPaid(pid), p.claimed, "rewards paid != claimed");
            // no trainer is paid beyond the largest amount any root of its project gave it
            address[4] memory ts = handler.trainers();
            for (uint256 t = 0; t < 4; t++) {
                uint256 most;
                for (uint256 r = 0; r < p.currentRound; r++) {
                    uint256 a = handler.rootAmount(pid, r, t);
                    if (a > most) most = a;
                }
                assertLe(market.claimedBy(pid, ts[t]), most, "trainer paid beyond every root");
            }
        }
    }

    /// Allocations are fixed by the parameters: an open project keeps a full share for each round
    /// left, the open round's allocation is the documented formula, and the allocations of the
    /// finalized rounds add up to the project's allocated total.
    function invariant_allocationFixedAndWithinBudget() public view {
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            uint256 pid = pids[i];
            ILearningMarket.Project memory p = market.getProject(pid);
            uint256 sum;
            for (uint256 r = 0; r < p.currentRound; r++) sum += market.getRound(pid, r).allocation;
            assertEq(sum, p.allocated, "allocations != allocated");
            assertLe(p.allocated, handler.projIn(pid), "allocated more than came in");
            if (p.endedAt == 0 && p.currentRound < p.numRounds) {
                uint256 left = uint256(p.rewardPerRound) * (p.numRounds - p.currentRound);
                assertGe(p.unallocated, left, "later rounds underfunded");
                assertEq(market.roundAllocation(pid), uint256(p.unallocated) - left + p.rewardPerRound, "formula");
            }
        }
    }

    /// Re-entry never pays: the Puppet's nested calls all failed, and no call made from inside the
    /// re-entrant token's transfer moved the market's balance.
    function invariant_reentryNeverPays() public view {
        assertEq(handler.puppet().reentrySuccesses(), 0, "a re-entrant receiver got a nested call through");
        assertFalse(handler.rnt().nestedMovedBalance(), "a call from inside a token transfer moved money");
    }

    /// Liveness from the final state of the run: with every role silent, the outsider takes every
    /// project to its end and every beneficiary takes out what it is owed.
    function afterInvariant() public {
        handler.logCoverage();
        handler.settleAll();
    }
}
