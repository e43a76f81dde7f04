// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./utils/Test.sol";
import {MarketHandler} from "./invariant/MarketHandler.sol";
import {LearningMarket} from "../src/LearningMarket.sol";
import {MockERC20} from "./mocks/MockERC20.sol";

/// @notice Invariants of the market under random sequences of every action, over several ETH and
/// ERC-20 projects sharing one contract (runs and depth from [invariant] in foundry.toml). The
/// handler (invariant/MarketHandler.sol) keeps the model; these checks compare it with the contract.
contract LearningMarketInvariantTest is Test {
    MarketHandler internal handler;
    LearningMarket internal market;
    MockERC20 internal token;
    address[] internal trainers;

    function setUp() public {
        handler = new MarketHandler();
        market = handler.market();
        token = handler.token();
        trainers = handler.trainers();
        bytes4[] memory selectors = new bytes4[](17);
        selectors[0] = MarketHandler.createProject.selector;
        selectors[1] = MarketHandler.roll.selector;
        selectors[2] = MarketHandler.register.selector;
        selectors[3] = MarketHandler.commit.selector;
        selectors[4] = MarketHandler.reveal.selector;
        selectors[5] = MarketHandler.finalize.selector;
        selectors[6] = MarketHandler.dispute.selector;
        selectors[7] = MarketHandler.resolve.selector;
        selectors[8] = MarketHandler.claim.selector;
        selectors[9] = MarketHandler.end.selector;
        selectors[10] = MarketHandler.withdrawStake.selector;
        selectors[11] = MarketHandler.withdrawCredit.selector;
        selectors[12] = MarketHandler.slash.selector;
        selectors[13] = MarketHandler.trainingPhase.selector;
        // listed twice: the steps that move a project forward get a larger share of the calls
        selectors[14] = MarketHandler.trainingPhase.selector;
        selectors[15] = MarketHandler.finalize.selector;
        selectors[16] = MarketHandler.claim.selector;
        targetContract(address(handler));
        targetSelector(FuzzSelector({addr: address(handler), selectors: selectors}));
    }

    function _balance(address tok) internal view returns (uint256) {
        return tok == address(0) ? address(market).balance : token.balanceOf(address(market));
    }

    /// Solvency, per token: the escrow covers every allocation not yet claimed, every stake held
    /// and every outstanding credit; exactly, it is that plus the pools and the pending bonds.
    function invariant_solvency() public view {
        uint256[] memory pids = handler.projects();
        uint256[2] memory owed; // [ETH, token]
        uint256[2] memory exact;
        for (uint256 i = 0; i < pids.length; i++) {
            LearningMarket.Project memory p = market.getProject(pids[i]);
            uint256 j = p.token == address(0) ? 0 : 1;
            uint256 credits = handler.accounts(pids[i]).credits;
            owed[j] += uint256(p.allocated) - p.claimed + p.stakesHeld + credits;
            exact[j] += uint256(p.unallocated) + p.allocated - p.claimed + p.stakesHeld + credits;
        }
        address[2] memory tokens = [address(0), address(token)];
        for (uint256 j = 0; j < 2; j++) {
            uint256 bal = _balance(tokens[j]);
            assertGe(bal, owed[j], "escrow below what it owes");
            assertEq(bal, exact[j] + handler.ghostPendingBonds(tokens[j]), "escrow != pools + owed + pending bonds");
        }
    }

    /// Conservation, per token: everything deposited is paid out, returned, or still held.
    function invariant_conservation() public view {
        address[2] memory tokens = [address(0), address(token)];
        for (uint256 j = 0; j < 2; j++) {
            address t = tokens[j];
            assertEq(
                handler.ghostPaid(t) + handler.ghostReturned(t) + _balance(t),
                handler.ghostDeposited(t),
                "paid + returned + balance != deposited"
            );
        }
    }

    /// No trainer is ever paid more than its cumulative entitlement (in the rounds still standing),
    /// and the contract's record of what it paid equals what the trainer received.
    function invariant_noTrainerOverpaid() public view {
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            (uint256[] memory received, uint256[] memory cap) = handler.payouts(pids[i]);
            for (uint256 ti = 0; ti < trainers.length; ti++) {
                uint256 paid = market.claimedBy(pids[i], trainers[ti]);
                assertLe(paid, cap[ti], "trainer paid beyond its entitlement");
                assertEq(paid, received[ti], "claimedBy != what the trainer received");
            }
        }
    }

    /// A round's status only moves forward (None -> Finalized -> Disputed -> Voided | Dismissed):
    /// the handler checks every transition of the project it touched; here every round of every
    /// project must equal the model and be no lower than the last status seen.
    function invariant_roundStatusMonotone() public view {
        assertFalse(handler.statusRegressed(), "a round status moved backwards or skipped a state");
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            (uint8[] memory modelled, uint8[] memory seen) = handler.statuses(pids[i]);
            for (uint256 k = 0; k < modelled.length; k++) {
                uint8 status = uint8(market.getRound(pids[i], k).status);
                assertEq(status, modelled[k], "round status differs from the model");
                assertGe(status, seen[k], "round status below the last one seen");
            }
        }
    }

    /// Per project: pools, allocations, claims, stakes and the round clock match the model, claims
    /// never exceed allocations, and an open project keeps a full share for each round to come.
    function invariant_projectAccounting() public view {
        uint256[] memory pids = handler.projects();
        for (uint256 i = 0; i < pids.length; i++) {
            LearningMarket.Project memory p = market.getProject(pids[i]);
            MarketHandler.Accounts memory m = handler.accounts(pids[i]);
            assertEq(p.unallocated, m.unallocated, "unallocated");
            assertEq(p.allocated, m.allocated, "allocated");
            assertEq(p.claimed, m.claimed, "claimed");
            assertEq(p.stakesHeld, m.stakes, "stakesHeld");
            assertEq(p.ended, m.ended, "ended");
            assertEq(p.currentRound, m.currentRound, "currentRound");
            assertEq(p.openedAt, m.openedAt, "openedAt");
            assertLe(p.claimed, p.allocated, "claimed > allocated");
            if (!p.ended) {
                assertGe(
                    p.unallocated,
                    uint256(p.rewardPerRound) * (p.numRounds - p.currentRound),
                    "later rounds underfunded"
                );
            }
        }
    }

    /// After each run: settle every project and pay everyone; the market must end up empty.
    function afterInvariant() public {
        handler.logCoverage(); // what this run did (visible with -vv)
        handler.settleAll();
        assertEq(address(market).balance, 0, "ETH left in the market after everyone was paid");
        assertEq(token.balanceOf(address(market)), 0, "tokens left in the market after everyone was paid");
        invariant_conservation();
        invariant_noTrainerOverpaid();
        invariant_roundStatusMonotone();
        invariant_projectAccounting();
    }
}
