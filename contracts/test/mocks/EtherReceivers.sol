// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {LearningMarket} from "../../src/LearningMarket.sol";

/// @notice A trainer contract that refuses ETH: paying it must fail, and only its own payment.
contract RejectingTrainer {
    error NoEtherPlease();

    LearningMarket public immutable market;

    constructor(LearningMarket market_) {
        market = market_;
    }

    function register(uint256 projectId) external payable {
        market.register{value: msg.value}(projectId);
    }

    function commit(uint256 projectId, uint256 round, bytes32 commitment) external {
        market.commit(projectId, round, commitment);
    }

    function reveal(uint256 projectId, uint256 round, string calldata cid, bytes32 digest, bytes32 salt) external {
        market.reveal(projectId, round, cid, digest, salt);
    }

    receive() external payable {
        revert NoEtherPlease();
    }
}

/// @notice A trainer contract that tries to re-enter the market when paid. It swallows the failure
/// of the nested call, so the outer payment completes and the test can check that the re-entry was
/// refused and paid nothing twice.
contract ReentrantTrainer {
    LearningMarket public immutable market;

    enum Attack {
        None,
        Claim,
        WithdrawStake,
        WithdrawCredit
    }

    Attack public attack;
    uint256 public projectId;
    uint256 public round;
    uint256 public cumulative;
    bytes32[] internal _proof;

    uint256 public receivedCount;
    bool public reentryAttempted;
    bool public reentrySucceeded;
    bytes public reentryError;

    constructor(LearningMarket market_) {
        market = market_;
    }

    function arm(Attack attack_, uint256 projectId_, uint256 round_, uint256 cumulative_, bytes32[] calldata proof_)
        external
    {
        attack = attack_;
        projectId = projectId_;
        round = round_;
        cumulative = cumulative_;
        _proof = proof_;
    }

    function register(uint256 projectId_) external payable {
        market.register{value: msg.value}(projectId_);
    }

    function commit(uint256 projectId_, uint256 round_, bytes32 commitment) external {
        market.commit(projectId_, round_, commitment);
    }

    function dispute(uint256 projectId_, uint256 round_, string calldata evidenceCID) external payable {
        market.dispute{value: msg.value}(projectId_, round_, evidenceCID);
    }

    function withdrawStake(uint256 projectId_) external {
        market.withdrawStake(projectId_);
    }

    function withdrawCredit(uint256 projectId_) external {
        market.withdrawCredit(projectId_);
    }

    receive() external payable {
        receivedCount++;
        if (attack == Attack.None || reentryAttempted) return;
        reentryAttempted = true;
        bytes memory data;
        if (attack == Attack.Claim) {
            data = abi.encodeCall(LearningMarket.claim, (projectId, round, address(this), cumulative, _proof));
        } else if (attack == Attack.WithdrawStake) {
            data = abi.encodeCall(LearningMarket.withdrawStake, (projectId));
        } else {
            data = abi.encodeCall(LearningMarket.withdrawCredit, (projectId));
        }
        (bool ok, bytes memory err) = address(market).call(data);
        reentrySucceeded = ok;
        reentryError = err;
    }
}
