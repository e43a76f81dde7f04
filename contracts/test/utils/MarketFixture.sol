// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Test} from "./Test.sol";
import {MerkleBuilder} from "./MerkleBuilder.sol";
import {LearningMarket} from "../../src/LearningMarket.sol";
import {ILearningMarket} from "../../src/ILearningMarket.sol";
import {MockERC20} from "../mocks/MockERC20.sol";

/// @notice Shared set-up for the unit tests: one market, one ERC-20, named actors with funds and
/// allowances, and helpers that drive a project through its rounds.
/// @dev Every helper computes what it needs before vm.prank / vm.expectRevert, since both apply to
/// the very next call, view calls included.
abstract contract MarketFixture is Test {
    using MerkleBuilder for MerkleBuilder.Tree;

    LearningMarket internal market;
    MockERC20 internal token;

    address internal owner;
    address internal aggregator;
    address internal arbiter;
    address internal alice;
    address internal bob;
    address internal carol;
    address internal dave;
    address internal outsider;

    uint32 internal constant ROUNDS = 3;
    uint32 internal constant COMMIT = 10;
    uint32 internal constant REVEAL = 10;
    uint32 internal constant CHALLENGE = 15;
    uint32 internal constant FINALIZE = 30;
    uint32 internal constant RULE = 20;
    uint32 internal constant CLAIM = 50;
    uint128 internal constant REWARD = 1 ether;
    uint128 internal constant STAKE = 0.1 ether;
    uint128 internal constant BOND = 0.05 ether;
    uint128 internal constant AGG_BOND = 0.5 ether;
    uint72 internal constant DEPOSIT = 0.01 ether;
    uint256 internal constant BUDGET = uint256(REWARD) * ROUNDS;
    string internal constant SPEC = "bafyspec";
    string internal constant MODEL = "bafymodel";
    string internal constant RECORD = "bafyrecord";
    uint256 internal constant START_BLOCK = 1000;
    uint256 internal constant FUNDS = 1_000_000 ether;

    function setUp() public virtual {
        vm.roll(START_BLOCK);
        market = new LearningMarket();
        token = new MockERC20("Reward", "RWD");
        vm.label(address(market), "market");
        vm.label(address(token), "token");
        owner = makeAddr("owner");
        aggregator = makeAddr("aggregator");
        arbiter = makeAddr("arbiter");
        alice = makeAddr("alice");
        bob = makeAddr("bob");
        carol = makeAddr("carol");
        dave = makeAddr("dave");
        outsider = makeAddr("outsider");
        address[8] memory everyone = [owner, aggregator, arbiter, alice, bob, carol, dave, outsider];
        for (uint256 i = 0; i < everyone.length; i++) _fund(everyone[i]);
    }

    function _fund(address who) internal {
        vm.deal(who, FUNDS);
        token.mint(who, FUNDS);
        vm.prank(who);
        token.approve(address(market), type(uint256).max);
    }

    // ---------------------------------------------------------------- projects

    function _params(address tokenAddr) internal view returns (ILearningMarket.ProjectParams memory p) {
        p = ILearningMarket.ProjectParams({
            token: tokenAddr,
            aggregator: aggregator,
            arbiter: arbiter,
            numRounds: ROUNDS,
            commitWindow: COMMIT,
            revealWindow: REVEAL,
            challengeWindow: CHALLENGE,
            finalizeWindow: FINALIZE,
            ruleWindow: RULE,
            claimWindow: CLAIM,
            rewardPerRound: REWARD,
            stake: STAKE,
            disputeBond: BOND,
            aggregatorBond: AGG_BOND,
            commitDeposit: DEPOSIT,
            specCID: SPEC
        });
    }

    function _budget(ILearningMarket.ProjectParams memory p) internal pure returns (uint256) {
        return uint256(p.rewardPerRound) * p.numRounds;
    }

    function _create(ILearningMarket.ProjectParams memory p) internal returns (uint256 pid) {
        uint256 value = p.token == address(0) ? _budget(p) : 0;
        vm.prank(owner);
        pid = market.createProject{value: value}(p);
    }

    function _createEth() internal returns (uint256) {
        return _create(_params(address(0)));
    }

    function _createErc20() internal returns (uint256) {
        return _create(_params(address(token)));
    }

    function _tokenOf(uint256 pid) internal view returns (address) {
        return market.getProject(pid).token;
    }

    function _balance(address tokenAddr, address who) internal view returns (uint256) {
        return tokenAddr == address(0) ? who.balance : token.balanceOf(who);
    }

    // ---------------------------------------------------------------- trainers

    function _register(uint256 pid, address who) internal {
        ILearningMarket.Project memory p = market.getProject(pid);
        uint256 value = p.token == address(0) ? p.stake : 0;
        vm.prank(who);
        market.register{value: value}(pid);
    }

    function _cid(address who, uint256 round) internal pure returns (string memory) {
        return string(abi.encodePacked("bafyupdate-", _shortHex(who), "-", bytes1(uint8(48 + (round % 10)))));
    }

    function _digest(address who, uint256 round) internal pure returns (bytes32) {
        return sha256(abi.encode("update", who, round));
    }

    function _salt(address who, uint256 round) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", who, round));
    }

    function _commit(uint256 pid, uint256 round, address who) internal {
        bytes32 c = market.commitmentOf(pid, round, who, _cid(who, round), _digest(who, round), _salt(who, round));
        vm.prank(who);
        market.commit(pid, round, c);
    }

    function _reveal(uint256 pid, uint256 round, address who) internal {
        string memory cid = _cid(who, round);
        bytes32 digest = _digest(who, round);
        bytes32 salt = _salt(who, round);
        vm.prank(who);
        market.reveal(pid, round, cid, digest, salt);
    }

    // ---------------------------------------------------------------- blocks

    function _deadlines(uint256 pid) internal view returns (uint256 commitDl, uint256 revealDl) {
        (,, commitDl, revealDl) = market.roundDeadlines(pid);
    }

    function _rollToReveal(uint256 pid) internal {
        (uint256 commitDl,) = _deadlines(pid);
        vm.roll(commitDl + 1);
    }

    function _rollToFinalize(uint256 pid) internal {
        (, uint256 revealDl) = _deadlines(pid);
        vm.roll(revealDl + 1);
    }

    function _closesAt(uint256 pid, uint256 round) internal view returns (uint256) {
        return uint256(market.getRound(pid, round).finalizedAt) + market.getProject(pid).challengeWindow;
    }

    function _rollPastChallenge(uint256 pid, uint256 round) internal {
        vm.roll(_closesAt(pid, round) + 1);
    }

    // ---------------------------------------------------------------- rounds

    /// @notice Post the aggregator bond if none is held.
    function _bond(uint256 pid) internal {
        ILearningMarket.Project memory p = market.getProject(pid);
        if (p.bondHeld != 0) return;
        uint256 value = p.token == address(0) ? p.aggregatorBond : 0;
        vm.prank(p.aggregator);
        market.postBond{value: value}(pid);
    }

    /// @notice Finalize `round` with its fixed allocation (posting the bond first).
    function _finalize(uint256 pid, uint256 round, bytes32 root) internal returns (uint256 allocation) {
        _bond(pid);
        allocation = market.roundAllocation(pid);
        vm.prank(market.getProject(pid).aggregator);
        market.finalizeRound(pid, round, MODEL, RECORD, root, allocation);
    }

    /// @notice Roll past the reveal deadline of the open round and finalize it.
    function _finalizeNext(uint256 pid, bytes32 root) internal returns (uint256 round) {
        round = market.getProject(pid).currentRound;
        _rollToFinalize(pid);
        _finalize(pid, round, root);
    }

    /// @notice Expire every remaining round (nobody revealed) and let the last window pass.
    function _finishAllRounds(uint256 pid) internal {
        uint256 n = market.getProject(pid).numRounds;
        for (uint256 r = market.getProject(pid).currentRound; r < n; r++) {
            _rollToFinalize(pid);
            market.expireRound(pid, r);
        }
    }

    function _dispute(uint256 pid, uint256 round, address who) internal {
        ILearningMarket.Project memory p = market.getProject(pid);
        uint256 value = p.token == address(0) ? p.disputeBond : 0;
        vm.prank(who);
        market.dispute{value: value}(pid, round, "bafyevidence");
    }

    function _resolve(uint256 pid, uint256 round, uint256 index, bool upheld, bytes32 correctedRoot) internal {
        vm.prank(market.getProject(pid).arbiter);
        market.resolveDispute(pid, round, index, upheld, "bafyreason", correctedRoot);
    }

    function _end(uint256 pid) internal {
        vm.prank(owner);
        market.endProject(pid);
    }

    // ---------------------------------------------------------------- trees

    function _tree(address[] memory accounts, uint256[] memory amounts)
        internal
        pure
        returns (MerkleBuilder.Tree memory)
    {
        return MerkleBuilder.build(accounts, amounts);
    }

    function _tree2(address a, uint256 x, address b, uint256 y) internal pure returns (MerkleBuilder.Tree memory) {
        address[] memory accounts = new address[](2);
        uint256[] memory amounts = new uint256[](2);
        (accounts[0], accounts[1]) = (a, b);
        (amounts[0], amounts[1]) = (x, y);
        return MerkleBuilder.build(accounts, amounts);
    }

    function _tree3(address a, uint256 x, address b, uint256 y, address c, uint256 z)
        internal
        pure
        returns (MerkleBuilder.Tree memory)
    {
        address[] memory accounts = new address[](3);
        uint256[] memory amounts = new uint256[](3);
        (accounts[0], accounts[1], accounts[2]) = (a, b, c);
        (amounts[0], amounts[1], amounts[2]) = (x, y, z);
        return MerkleBuilder.build(accounts, amounts);
    }

    function _claim(uint256 pid, uint256 round, address trainer, uint256 cumulative, bytes32[] memory proof)
        internal
    {
        vm.prank(trainer);
        market.claim(pid, round, trainer, cumulative, proof);
    }

    // ---------------------------------------------------------------- errors

    function _err(bytes4 selector) internal pure returns (bytes memory) {
        return abi.encodeWithSelector(selector);
    }

    // ---------------------------------------------------------------- misc

    function _shortHex(address a) internal pure returns (bytes memory out) {
        bytes16 digits = "0123456789abcdef";
        out = new bytes(8);
        uint160 v = uint160(a) >> 128;
        for (uint256 i = 0; i < 8; i++) {
            out[7 - i] = digits[v & 0xf];
            v >>= 4;
        }
    }
}
