// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "../utils/Test.sol";
import {MerkleBuilder} from "../utils/MerkleBuilder.sol";
import {LearningMarket} from "../../src/LearningMarket.sol";
import {ILearningMarket} from "../../src/ILearningMarket.sol";
import {MockERC20} from "../mocks/MockERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {FeeOnTransferToken} from "../mocks/FeeOnTransferToken.sol";
import {BlocklistToken, ReentrantToken, Puppet} from "../mocks/HostileTokens.sol";
import {console} from "../utils/Console.sol";

/// @notice Adversarial driver for the invariant campaign: one market, projects in ETH, a plain
/// ERC-20, a blocklisting ERC-20 and a re-entrant ERC-20 (a fee-on-transfer token is refused at
/// creation). Actors: owners (ownership moves between two), the aggregator and the arbiter (either
/// may go silent in any project at any time; a missed one is replaced), trainers (one of them a
/// contract that rejects ETH or re-enters the market when paid, any of them blocklisted by the
/// token) and an outsider. The aggregator may publish dishonest roots that pay more than the
/// round's allocation; claims come with bad proofs as well as good ones; time jumps past every
/// deadline.
/// @dev Every action checks its preconditions from the contract's views and then expects the
/// call to succeed (the campaign runs with fail_on_revert), or it is an adversarial call that must
/// fail with a given error. Money is measured independently: every call's effect on the market's
/// balance is booked to the project it acted on (projIn / projOut) and to its token.
contract MarketHandler is TestBase {
    using MerkleBuilder for MerkleBuilder.Tree;

    uint256 internal constant NT = 4; // trainers: three EOAs and a Puppet contract
    uint256 internal constant MAX_PROJECTS = 8;
    uint256 internal constant KIND_ETH = 0;
    uint256 internal constant KIND_PLAIN = 1;
    uint256 internal constant KIND_BLOCK = 2;
    uint256 internal constant KIND_REENTER = 3;

    uint128 internal constant REWARD = 1e18;
    uint128 internal constant STAKE = 2e15;
    uint72 internal constant DEPOSIT = 1e15;
    uint128 internal constant BOND = 1e16;
    uint128 internal constant AGG_BOND = 1e17;

    LearningMarket public market;
    MockERC20 public plain;
    BlocklistToken public blk;
    ReentrantToken public rnt;
    Puppet public puppet;

    address[2] internal _owners;
    address[3] internal _aggregators; // the first, then replacements
    address[3] internal _arbiters;
    address[NT] internal _trainers;
    address[NT] internal _rescue; // where a blocked trainer has its rewards paid (claimTo)
    address public outsider;
    address[] internal _accounts; // everyone that may hold a credit

    uint256[] internal _projects;
    mapping(uint256 => uint256) public kindOf;
    mapping(uint256 => address) public tokenOf;
    uint256 public currentBlock;

    // ------------------------------------------------------------ silence (per project)
    mapping(uint256 => bool) public aggregatorSilent;
    mapping(uint256 => bool) public arbiterSilent;
    mapping(uint256 => bool) public ownerSilent;

    // ------------------------------------------------------------ ghosts: money
    mapping(address => uint256) public ghostIn; // per token, into the market
    mapping(address => uint256) public ghostOut; // per token, out of the market
    mapping(uint256 => uint256) public projIn; // per project
    mapping(uint256 => uint256) public projOut;
    mapping(uint256 => uint256) public ghostClaimPaid; // rewards paid through roots, per project
    mapping(uint256 => uint256) public ghostPoolPaid;

    // ------------------------------------------------------------ ghosts: rounds and trees
    /// @dev The amounts (cumulative, per trainer) of the root the round holds now.
    mapping(uint256 => mapping(uint256 => uint256[NT])) internal _rootAmounts;
    /// @dev The honest cumulative amounts after the round (what a correction restores).
    mapping(uint256 => mapping(uint256 => uint256[NT])) internal _honest;
    mapping(uint256 => mapping(uint256 => bool)) public dishonest;
    mapping(uint256 => uint256[NT]) internal _lastHonest;
    mapping(uint256 => mapping(uint256 => uint256)) internal _allocationSeen;

    // ------------------------------------------------------------ statistics (successes)
    mapping(bytes32 => uint256) public ok;
    bool public livenessFailed;

    uint256 internal _pid;
    address internal _tok;
    uint256 internal _bal0;

    constructor() {
        currentBlock = 1000;
        vm.roll(currentBlock);
        vm.deal(address(this), 1e30); // pays the value of the Puppet's calls
        market = new LearningMarket();
        plain = new MockERC20("Plain", "PLN");
        blk = new BlocklistToken();
        rnt = new ReentrantToken();
        puppet = new Puppet();
        _owners = [makeAddr("inv-owner-a"), makeAddr("inv-owner-b")];
        _aggregators = [makeAddr("inv-aggregator"), makeAddr("inv-aggregator-2"), makeAddr("inv-aggregator-3")];
        _arbiters = [makeAddr("inv-arbiter"), makeAddr("inv-arbiter-2"), makeAddr("inv-arbiter-3")];
        outsider = makeAddr("inv-outsider");
        for (uint256 i = 0; i < NT - 1; i++) {
            _trainers[i] = makeAddr(string(abi.encodePacked("inv-trainer-", bytes1(uint8(48 + i)))));
        }
        _trainers[NT - 1] = address(puppet);
        for (uint256 i = 0; i < NT; i++) {
            _rescue[i] = makeAddr(string(abi.encodePacked("inv-rescue-", bytes1(uint8(48 + i)))));
        }
        for (uint256 i = 0; i < 2; i++) _fund(_owners[i]);
        for (uint256 i = 0; i < 3; i++) {
            _fund(_aggregators[i]);
            _fund(_arbiters[i]);
        }
        for (uint256 i = 0; i < NT; i++) _fund(_trainers[i]);
        _fund(outsider);
        _accounts.push(_owners[0]);
        _accounts.push(_owners[1]);
        for (uint256 i = 0; i < 3; i++) _accounts.push(_aggregators[i]);
        for (uint256 i = 0; i < NT; i++) _accounts.push(_trainers[i]);
        // one project of each kind from the start, three trainers registered in each
        for (uint256 k = 0; k < 4; k++) {
            uint256 pid = _create(k, 3);
            for (uint256 i = 0; i < 3; i++) _register(pid, i);
        }
    }

    function _fund(address who) internal {
        vm.deal(who, 1e30);
        address[3] memory toks = [address(plain), address(blk), address(rnt)];
        for (uint256 j = 0; j < 3; j++) {
            MockERC20(toks[j]).mint(who, 1e30);
            if (who == address(puppet)) {
                puppet.exec(toks[j], abi.encodeCall(IERC20.approve, (address(market), type(uint256).max)));
            } else {
                vm.prank(who);
                MockERC20(toks[j]).approve(address(market), type(uint256).max);
            }
        }
    }

    // ------------------------------------------------------------ plumbing

    modifier step() {
        vm.roll(currentBlock);
        _;
    }

    function _bal(address tok) internal view returns (uint256) {
        return tok == address(0) ? address(market).balance : MockERC20(tok).balanceOf(address(market));
    }

    function _begin(uint256 pid) internal {
        _pid = pid;
        _tok = tokenOf[pid];
        _bal0 = _bal(_tok);
    }

    function _end() internal returns (uint256 inflow, uint256 outflow) {
        uint256 b = _bal(_tok);
        if (b > _bal0) {
            inflow = b - _bal0;
            projIn[_pid] += inflow;
            ghostIn[_tok] += inflow;
        } else {
            outflow = _bal0 - b;
            projOut[_pid] += outflow;
            ghostOut[_tok] += outflow;
        }
    }

    /// @dev Call the market as `who` (through the Puppet when it is the puppet), with `value`.
    function _as(address who, uint256 value, bytes memory data) internal returns (bool success, bytes memory ret) {
        if (who == address(puppet)) {
            (success, ret) = address(puppet).call{value: value}(abi.encodeCall(Puppet.exec, (address(market), data)));
        } else {
            vm.prank(who);
            (success, ret) = address(market).call{value: value}(data);
        }
    }

    /// @dev A call that must succeed; its money effect is booked to `pid`.
    function _must(uint256 pid, address who, uint256 value, bytes memory data, bytes32 label) internal {
        _begin(pid);
        bool success;
        bytes memory ret;
        if (who == address(puppet)) {
            (success, ret) = address(puppet).call{value: value}(abi.encodeCall(Puppet.exec, (address(market), data)));
        } else {
            vm.prank(who);
            (success, ret) = address(market).call{value: value}(data);
        }
        if (!success) {
            assembly {
                revert(add(ret, 32), mload(ret))
            }
        }
        _end();
        ok[label]++;
    }

    /// @dev An adversarial call that must fail with exactly `err` and move nothing.
    function _mustFail(uint256 pid, address who, uint256 value, bytes memory data, bytes memory err) internal {
        _begin(pid);
        (bool success, bytes memory ret) = _as(who, value, data);
        assertFalse(success, "an adversarial call succeeded");
        if (err.length != 0) assertEq(ret, err, "an adversarial call failed with another error");
        (uint256 i, uint256 o) = _end();
        assertEq(i + o, 0, "a failed call moved money");
        ok["refused"]++;
    }

    /// @dev A project from the seed, preferring one that has not ended (ended ones still get the
    /// calls that only make sense after the end, one time in four).
    function _pick(uint256 seed) internal view returns (uint256 pid) {
        uint256 n = _projects.length;
        pid = _projects[seed % n];
        if ((seed >> 128) % 4 == 0) return pid;
        for (uint256 k = 0; k < n; k++) {
            uint256 q = _projects[(seed % n + k) % n];
            if (market.getProject(q).endedAt == 0) return q;
        }
    }

    function _value(uint256 pid, uint256 amount) internal view returns (uint256) {
        return tokenOf[pid] == address(0) ? amount : 0;
    }

    function _p(uint256 pid) internal view returns (ILearningMarket.Project memory) {
        return market.getProject(pid);
    }

    function _blocked(uint256 pid, address who) internal view returns (bool) {
        return kindOf[pid] == KIND_BLOCK && blk.blocked(who);
    }

    /// @dev Whether paying `who` directly would fail for a reason that is the receiver's (a
    /// blocklisted address, or the Puppet rejecting ETH).
    function _unpayable(uint256 pid, address who) internal view returns (bool) {
        if (_blocked(pid, who)) return true;
        return who == address(puppet) && tokenOf[pid] == address(0) && puppet.mode() == Puppet.Mode.Reject;
    }

    function _create(uint256 kind, uint32 rounds) internal returns (uint256 pid) {
        address tok = kind == KIND_ETH
            ? address(0)
            : kind == KIND_PLAIN ? address(plain) : kind == KIND_BLOCK ? address(blk) : address(rnt);
        ILearningMarket.ProjectParams memory p = ILearningMarket.ProjectParams({
            token: tok,
            aggregator: _aggregators[0],
            arbiter: _arbiters[0],
            numRounds: rounds,
            commitWindow: 8,
            revealWindow: 8,
            challengeWindow: 6,
            finalizeWindow: 12,
            ruleWindow: 8,
            claimWindow: 20,
            rewardPerRound: REWARD,
            stake: STAKE,
            disputeBond: BOND,
            aggregatorBond: AGG_BOND,
            commitDeposit: DEPOSIT,
            specCID: "bafyspec"
        });
        uint256 budget = uint256(REWARD) * rounds;
        pid = market.projectCount() + 1;
        _projects.push(pid);
        kindOf[pid] = kind;
        tokenOf[pid] = tok;
        _must(pid, _owners[0], tok == address(0) ? budget : 0, abi.encodeCall(LearningMarket.createProject, (p)), "create");
    }

    function _register(uint256 pid, uint256 ti) internal {
        _must(pid, _trainers[ti], _value(pid, STAKE), abi.encodeCall(LearningMarket.register, (pid)), "register");
    }

    // ------------------------------------------------------------ secrets

    function _cid(uint256 pid, uint256 round, uint256 ti) internal pure returns (string memory) {
        return string(abi.encodePacked("bafyupd-", bytes1(uint8(48 + pid % 10)), bytes1(uint8(48 + round % 10)), bytes1(uint8(48 + ti))));
    }

    function _commitment(uint256 pid, uint256 round, uint256 ti) internal view returns (bytes32) {
        return market.commitmentOf(
            pid, round, _trainers[ti], _cid(pid, round, ti), keccak256(abi.encode(pid, round, ti)), bytes32(ti + 7)
        );
    }

    // ------------------------------------------------------------ actions: projects and trainers

    /// Create another project (fee-on-transfer tokens are refused before any is recorded).
    function createProject(uint256 kindSeed, uint8 roundsSeed, bool feeToken) external step {
        if (feeToken) {
            FeeOnTransferToken fee = new FeeOnTransferToken(100);
            fee.mint(outsider, 10e18);
            vm.prank(outsider);
            fee.approve(address(market), type(uint256).max);
            ILearningMarket.ProjectParams memory p = ILearningMarket.ProjectParams({
                token: address(fee),
                aggregator: _aggregators[0],
                arbiter: _arbiters[0],
                numRounds: 1,
                commitWindow: 3,
                revealWindow: 3,
                challengeWindow: 3,
                finalizeWindow: 6,
                ruleWindow: 4,
                claimWindow: 10,
                rewardPerRound: REWARD,
                stake: STAKE,
                disputeBond: BOND,
                aggregatorBond: AGG_BOND,
                commitDeposit: DEPOSIT,
                specCID: "bafyspec"
            });
            uint256 count = market.projectCount();
            vm.prank(outsider);
            try market.createProject(p) {
                fail("a fee-on-transfer token was accepted");
            } catch (bytes memory err) {
                assertEq(
                    err,
                    abi.encodeWithSelector(ILearningMarket.WrongPayment.selector, REWARD, REWARD - REWARD / 100),
                    "fee token refused with WrongPayment"
                );
            }
            assertEq(market.projectCount(), count, "no project recorded");
            ok["feeRefused"]++;
            return;
        }
        if (_projects.length >= MAX_PROJECTS) return;
        _create(kindSeed % 4, uint32(bound(roundsSeed, 1, 3)));
    }

    function register(uint256 pidSeed, uint256 tSeed) external step {
        uint256 pid = _pick(pidSeed);
        uint256 ti = tSeed % NT;
        (bool registered,) = market.registration(pid, _trainers[ti]);
        if (registered || _p(pid).endedAt != 0 || _blocked(pid, _trainers[ti])) return;
        _register(pid, ti);
    }

    function commit(uint256 pidSeed, uint256 tSeed) external step {
        uint256 pid = _pick(pidSeed);
        uint256 ti = tSeed % NT;
        ILearningMarket.Project memory p = _p(pid);
        (bool registered, uint256 stake) = market.registration(pid, _trainers[ti]);
        uint256 round = p.currentRound;
        if (!registered || round >= p.numRounds || block.number > uint256(p.openedAt) + p.commitWindow) return;
        if (stake < p.commitDeposit || market.commitmentState(pid, round, _trainers[ti]) != 0) return;
        _must(pid, _trainers[ti], 0, abi.encodeCall(LearningMarket.commit, (pid, round, _commitment(pid, round, ti))), "commit");
    }

    function reveal(uint256 pidSeed, uint256 tSeed, bool wrongSalt) external step {
        uint256 pid = _pick(pidSeed);
        uint256 ti = tSeed % NT;
        ILearningMarket.Project memory p = _p(pid);
        uint256 round = p.currentRound;
        if (round >= p.numRounds || market.commitmentState(pid, round, _trainers[ti]) != 1) return;
        uint256 commitDl = uint256(p.openedAt) + p.commitWindow;
        if (block.number <= commitDl || block.number > commitDl + p.revealWindow) return;
        bytes32 digest = keccak256(abi.encode(pid, round, ti));
        if (wrongSalt) {
            _mustFail(
                pid,
                _trainers[ti],
                0,
                abi.encodeCall(LearningMarket.reveal, (pid, round, _cid(pid, round, ti), digest, bytes32(ti + 8))),
                abi.encodeWithSelector(ILearningMarket.RevealMismatch.selector, pid, round, _trainers[ti])
            );
            return;
        }
        _must(
            pid,
            _trainers[ti],
            0,
            abi.encodeCall(LearningMarket.reveal, (pid, round, _cid(pid, round, ti), digest, bytes32(ti + 7))),
            "reveal"
        );
    }

    /// A whole commit-reveal phase of the open round: the trainers in `commitMask` commit, the
    /// clock moves into the reveal window, those also in `revealMask` reveal (the others leave
    /// their deposit to be forfeited).
    function trainingPhase(uint256 pidSeed, uint8 commitMask, uint8 revealMask) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        // a round whose commit window is gone is closed first, if it may be (by anyone)
        if (p.currentRound < p.numRounds && block.number > uint256(p.openedAt) + p.commitWindow && _expirable(pid)) {
            _must(pid, outsider, 0, abi.encodeCall(LearningMarket.expireRound, (pid, p.currentRound)), "expire");
            p = _p(pid);
        }
        uint256 round = p.currentRound;
        uint256 commitDl = uint256(p.openedAt) + p.commitWindow;
        if (round >= p.numRounds || block.number > commitDl) return;
        for (uint256 ti = 0; ti < NT; ti++) {
            (bool registered, uint256 stake) = market.registration(pid, _trainers[ti]);
            if ((commitMask >> ti) & 1 == 0 || !registered || stake < p.commitDeposit) continue;
            if (market.commitmentState(pid, round, _trainers[ti]) != 0) continue;
            _must(pid, _trainers[ti], 0, abi.encodeCall(LearningMarket.commit, (pid, round, _commitment(pid, round, ti))), "commit");
        }
        currentBlock = commitDl + 1;
        vm.roll(currentBlock);
        for (uint256 ti = 0; ti < NT; ti++) {
            if ((revealMask >> ti) & 1 == 0 || market.commitmentState(pid, round, _trainers[ti]) != 1) continue;
            bytes32 digest = keccak256(abi.encode(pid, round, ti));
            _must(
                pid,
                _trainers[ti],
                0,
                abi.encodeCall(LearningMarket.reveal, (pid, round, _cid(pid, round, ti), digest, bytes32(ti + 7))),
                "reveal"
            );
        }
        // move on to the finalize window
        currentBlock = commitDl + p.revealWindow + 1;
        vm.roll(currentBlock);
        ok["trainingPhase"]++;
    }

    /// Anyone takes the deposit of a commitment not revealed by its deadline.
    function forfeit(uint256 pidSeed, uint256 tSeed, uint256 roundSeed) external step {
        uint256 pid = _pick(pidSeed);
        address t = _trainers[tSeed % NT];
        ILearningMarket.Project memory p = _p(pid);
        if (p.endedAt != 0) return;
        uint256 round = roundSeed % (uint256(p.currentRound) + 1);
        if (round >= p.numRounds || market.commitmentState(pid, round, t) != 1) return;
        if (round == p.currentRound && block.number <= uint256(p.openedAt) + p.commitWindow + p.revealWindow) return;
        _must(pid, outsider, 0, abi.encodeCall(LearningMarket.forfeitDeposit, (pid, round, t)), "forfeit");
    }

    // ------------------------------------------------------------ actions: aggregator

    function postBond(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (aggregatorSilent[pid] || p.endedAt != 0 || p.bondHeld != 0) return;
        _must(pid, p.aggregator, _value(pid, p.aggregatorBond), abi.encodeCall(LearningMarket.postBond, (pid)), "bond");
    }

    function _tree(uint256[NT] memory amounts) internal view returns (MerkleBuilder.Tree memory) {
        address[] memory leaves = new address[](NT);
        uint256[] memory values = new uint256[](NT);
        for (uint256 i = 0; i < NT; i++) (leaves[i], values[i]) = (_trainers[i], amounts[i]);
        return MerkleBuilder.build(leaves, values);
    }

    /// Finalize the open round with its fixed allocation: an honest root splits it among the
    /// round's revealers; a dishonest one pays trainer 0 twice the allocation. A wrong allocation
    /// is always tried first and must be refused.
    function finalize(uint256 pidSeed, bool honest, uint256 wrongSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        uint256 round = p.currentRound;
        if (aggregatorSilent[pid] || round >= p.numRounds) return;
        uint256 revealDl = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        if (block.number <= revealDl || block.number > revealDl + p.finalizeWindow) return;
        if (round > 0 && block.number <= market.settlesAfter(pid, round - 1)) return;
        if (p.bondHeld == 0) {
            _mustFail(
                pid,
                p.aggregator,
                0,
                abi.encodeCall(LearningMarket.finalizeRound, (pid, round, "m", "r", bytes32(uint256(1)), 1)),
                abi.encodeWithSelector(ILearningMarket.BondNotPosted.selector, pid, p.aggregatorBond)
            );
            _must(pid, p.aggregator, _value(pid, p.aggregatorBond), abi.encodeCall(LearningMarket.postBond, (pid)), "bond");
            // the re-entrant token may have run a call (an expiry) inside the transfer: start over
            return;
        }
        uint256 allocation = market.roundAllocation(pid);
        assertEq(
            allocation,
            uint256(p.unallocated) - uint256(p.rewardPerRound) * (p.numRounds - round - 1),
            "allocation is fixed by the parameters"
        );
        uint256 wrong = wrongSeed % 2 == 0 ? allocation + 1 + wrongSeed % 1e18 : allocation - 1 - wrongSeed % allocation;
        _mustFail(
            pid,
            p.aggregator,
            0,
            abi.encodeCall(LearningMarket.finalizeRound, (pid, round, "m", "r", bytes32(uint256(1)), wrong)),
            abi.encodeWithSelector(ILearningMarket.AllocationMismatch.selector, allocation, wrong)
        );
        // honest cumulative amounts: the last honest ones plus an equal split among revealers
        uint256[NT] memory h = _lastHonest[pid];
        uint256 n;
        for (uint256 i = 0; i < NT; i++) {
            if (market.commitmentState(pid, round, _trainers[i]) == 2) n++;
        }
        for (uint256 i = 0; i < NT && n != 0; i++) {
            if (market.commitmentState(pid, round, _trainers[i]) == 2) h[i] += allocation / n;
        }
        _honest[pid][round] = h;
        _lastHonest[pid] = h;
        uint256[NT] memory used = h;
        if (!honest) used[0] = h[0] + 2 * allocation; // pays more than the round allocates
        dishonest[pid][round] = !honest;
        _rootAmounts[pid][round] = used;
        _allocationSeen[pid][round] = allocation;
        _must(
            pid,
            p.aggregator,
            0,
            abi.encodeCall(LearningMarket.finalizeRound, (pid, round, "m", "r", _tree(used).root(), allocation)),
            honest ? bytes32("finalize") : bytes32("finalizeDishonest")
        );
    }

    /// Anyone closes a round whose finalize deadline passed (or with no reveal, its reveal deadline).
    function expire(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        if (_expirable(pid)) {
            uint256 round = _p(pid).currentRound;
            _must(pid, outsider, 0, abi.encodeCall(LearningMarket.expireRound, (pid, round)), "expire");
        }
    }

    function _expiresAfter(uint256 pid) internal view returns (uint256 when) {
        ILearningMarket.Project memory p = _p(pid);
        uint256 revealDl = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        when = p.reveals == 0 ? revealDl : revealDl + p.finalizeWindow;
        if (p.currentRound > 0) {
            uint256 s = market.settlesAfter(pid, p.currentRound - 1);
            if (s > when) when = s;
        }
    }

    function _expirable(uint256 pid) internal view returns (bool) {
        ILearningMarket.Project memory p = _p(pid);
        return p.currentRound < p.numRounds && block.number > _expiresAfter(pid);
    }

    // ------------------------------------------------------------ actions: disputes

    /// A trainer (or the owner) disputes a finalized round inside its window.
    function dispute(uint256 pidSeed, uint256 whoSeed, uint256 roundSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (p.currentRound == 0) return;
        uint256 round = roundSeed % p.currentRound;
        ILearningMarket.Round memory r = market.getRound(pid, round);
        if (r.status == ILearningMarket.RoundStatus.Expired) return;
        if (block.number > uint256(r.finalizedAt) + p.challengeWindow) return;
        address who;
        if (whoSeed % (NT + 1) == NT) {
            if (ownerSilent[pid]) return;
            who = p.owner;
        } else {
            who = _trainers[whoSeed % (NT + 1)];
            (bool registered,) = market.registration(pid, who);
            if (!registered || _blocked(pid, who)) return;
        }
        _must(pid, who, _value(pid, p.disputeBond), abi.encodeCall(LearningMarket.dispute, (pid, round, "bafyev")), "dispute");
    }

    /// The arbiter rules on the first pending dispute of a round in time: upheld (with the honest
    /// root) if the round's root is dishonest, dismissed otherwise.
    function resolve(uint256 pidSeed, uint256 roundSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (arbiterSilent[pid] || p.currentRound == 0) return;
        uint256 round = roundSeed % p.currentRound;
        ILearningMarket.Round memory r = market.getRound(pid, round);
        if (r.pendingDisputes == 0) return;
        if (block.number > uint256(r.finalizedAt) + p.challengeWindow + p.ruleWindow) return;
        uint256 index = _firstPending(pid, round, r.disputeCount);
        bool upheld = dishonest[pid][round];
        bytes32 root = bytes32(0);
        if (upheld) {
            _rootAmounts[pid][round] = _honest[pid][round];
            dishonest[pid][round] = false;
            root = _tree(_honest[pid][round]).root();
        }
        _must(
            pid,
            p.arbiter,
            0,
            abi.encodeCall(LearningMarket.resolveDispute, (pid, round, index, upheld, "bafyreason", root)),
            upheld ? bytes32("upheld") : bytes32("dismissed")
        );
    }

    function _firstPending(uint256 pid, uint256 round, uint256 count) internal view returns (uint256 i) {
        for (i = 0; i < count; i++) {
            if (market.getDispute(pid, round, i).status == ILearningMarket.DisputeStatus.Pending) return i;
        }
        revert("no pending dispute");
    }

    /// Anyone closes a dispute the arbiter did not rule on in time.
    function lapse(uint256 pidSeed, uint256 roundSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (p.currentRound == 0) return;
        uint256 round = roundSeed % p.currentRound;
        ILearningMarket.Round memory r = market.getRound(pid, round);
        if (r.pendingDisputes == 0) return;
        if (block.number <= uint256(r.finalizedAt) + p.challengeWindow + p.ruleWindow) return;
        uint256 index = _firstPending(pid, round, r.disputeCount);
        _must(pid, outsider, 0, abi.encodeCall(LearningMarket.lapseDispute, (pid, round, index)), "lapse");
    }

    // ------------------------------------------------------------ actions: money out

    /// Claim a trainer's cumulative reward through a round's current root (to a rescue address
    /// when the trainer cannot be paid); with `bad`, a forged proof or an inflated amount first.
    function claim(uint256 pidSeed, uint256 tSeed, uint256 roundSeed, uint8 bad) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (p.currentRound == 0) return;
        uint256 round = roundSeed % p.currentRound;
        uint256 ti = tSeed % NT;
        if (bad % 3 == 1) {
            _badClaim(pid, round, ti);
            return;
        }
        if (_claimable(pid, round, ti)) _doClaim(pid, round, ti);
    }

    function _claimable(uint256 pid, uint256 round, uint256 ti) internal view returns (bool) {
        ILearningMarket.Project memory p = _p(pid);
        if (p.endedAt != 0 && block.number > uint256(p.endedAt) + p.claimWindow) return false;
        ILearningMarket.Round memory r = market.getRound(pid, round);
        if (r.status == ILearningMarket.RoundStatus.None || r.status == ILearningMarket.RoundStatus.Expired) {
            return false;
        }
        if (block.number <= market.settlesAfter(pid, round)) return false;
        uint256 cumulative = _rootAmounts[pid][round][ti];
        uint256 already = market.claimedBy(pid, _trainers[ti]);
        if (cumulative <= already) return false;
        return cumulative - already <= (r.cumulativeAllocated > p.claimed ? r.cumulativeAllocated - p.claimed : 0);
    }

    function _doClaim(uint256 pid, uint256 round, uint256 ti) internal {
        address t = _trainers[ti];
        uint256 cumulative = _rootAmounts[pid][round][ti];
        uint256 payout = cumulative - market.claimedBy(pid, t);
        bytes32[] memory proof = _tree(_rootAmounts[pid][round]).proof(ti);
        bytes memory data = _unpayable(pid, t)
            ? abi.encodeCall(LearningMarket.claimTo, (pid, round, cumulative, proof, _rescue[ti]))
            : abi.encodeCall(LearningMarket.claim, (pid, round, t, cumulative, proof));
        uint256 out0 = projOut[pid];
        _must(pid, t, 0, data, _unpayable(pid, t) ? bytes32("claimTo") : bytes32("claim"));
        assertEq(projOut[pid] - out0, payout, "a claim pays exactly the difference");
        ghostClaimPaid[pid] += payout;
    }

    function _badClaim(uint256 pid, uint256 round, uint256 ti) internal {
        ILearningMarket.Round memory r = market.getRound(pid, round);
        if (r.status == ILearningMarket.RoundStatus.None || r.status == ILearningMarket.RoundStatus.Expired) return;
        if (block.number <= market.settlesAfter(pid, round)) return;
        ILearningMarket.Project memory p = _p(pid);
        if (p.endedAt != 0 && block.number > uint256(p.endedAt) + p.claimWindow) return;
        uint256 cumulative = _rootAmounts[pid][round][ti] + 1; // inflated: no leaf proves it
        bytes32[] memory proof = _tree(_rootAmounts[pid][round]).proof(ti);
        _mustFail(
            pid,
            outsider,
            0,
            abi.encodeCall(LearningMarket.claim, (pid, round, _trainers[ti], cumulative, proof)),
            abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, round, _trainers[ti])
        );
        // someone else's proof for the outsider's own (absent) leaf
        _mustFail(
            pid,
            outsider,
            0,
            abi.encodeCall(LearningMarket.claimTo, (pid, round, cumulative - 1, proof, outsider)),
            abi.encodeWithSelector(ILearningMarket.InvalidProof.selector, pid, round, outsider)
        );
    }

    function claimPoolShare(uint256 pidSeed, uint256 tSeed, uint256 roundSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (p.currentRound == 0) return;
        uint256 round = roundSeed % p.currentRound;
        uint256 ti = tSeed % NT;
        _poolShare(pid, round, ti);
    }

    function _poolShare(uint256 pid, uint256 round, uint256 ti) internal {
        address t = _trainers[ti];
        uint256 share = market.poolShareOf(pid, round, t);
        if (share == 0) return;
        address to = _unpayable(pid, t) ? _rescue[ti] : t;
        uint256 out0 = projOut[pid];
        _must(pid, t, 0, abi.encodeCall(LearningMarket.claimPoolShare, (pid, round, to)), "poolShare");
        assertEq(projOut[pid] - out0, share, "pool share paid exactly");
        ghostPoolPaid[pid] += share;
    }

    function withdrawStake(uint256 pidSeed, uint256 tSeed) external step {
        _withdrawStake(_pick(pidSeed), tSeed % NT);
    }

    function _withdrawStake(uint256 pid, uint256 ti) internal {
        address t = _trainers[ti];
        (, uint256 stake) = market.registration(pid, t);
        if (_p(pid).endedAt == 0 || stake == 0) return;
        uint256 out0 = projOut[pid];
        if (_unpayable(pid, t)) {
            _must(pid, t, 0, abi.encodeCall(LearningMarket.withdrawStakeTo, (pid, _rescue[ti])), "withdrawStakeTo");
        } else {
            _must(pid, t, 0, abi.encodeCall(LearningMarket.withdrawStake, (pid)), "withdrawStake");
        }
        assertEq(projOut[pid] - out0, stake, "a withdrawal pays exactly the stake left");
    }

    function withdrawCredit(uint256 pidSeed, uint256 whoSeed) external step {
        _withdrawCredit(_pick(pidSeed), _accounts[whoSeed % _accounts.length]);
    }

    function _withdrawCredit(uint256 pid, address who) internal {
        uint256 credit = market.creditOf(pid, who);
        if (credit == 0) return;
        uint256 out0 = projOut[pid];
        if (_unpayable(pid, who)) {
            bytes memory data = abi.encodeCall(LearningMarket.withdrawCreditTo, (pid, _rescueOf(who)));
            _must(pid, who, 0, data, "withdrawCreditTo");
        } else {
            _must(pid, who, 0, abi.encodeCall(LearningMarket.withdrawCredit, (pid)), "withdrawCredit");
        }
        assertEq(projOut[pid] - out0, credit, "a withdrawal pays exactly the credit");
    }

    /// @dev Where an unpayable account has its money sent (only trainers are ever unpayable).
    function _rescueOf(address who) internal view returns (address) {
        for (uint256 i = 0; i < NT; i++) if (_trainers[i] == who) return _rescue[i];
        revert("no rescue address");
    }

    function end(uint256 pidSeed, bool byOwner) external step {
        uint256 pid = _pick(pidSeed);
        if (!_endable(pid)) return;
        address who = byOwner && !ownerSilent[pid] && !_unpayable(pid, _p(pid).owner) ? _p(pid).owner : outsider;
        _must(pid, who, 0, abi.encodeCall(LearningMarket.endProject, (pid)), "end");
    }

    function _endable(uint256 pid) internal view returns (bool) {
        ILearningMarket.Project memory p = _p(pid);
        return p.endedAt == 0 && p.currentRound >= p.numRounds && block.number > market.settlesAfter(pid, p.numRounds - 1);
    }

    function sweep(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (p.endedAt == 0 || p.swept || block.number <= uint256(p.endedAt) + p.claimWindow) return;
        _must(pid, outsider, 0, abi.encodeCall(LearningMarket.sweep, (pid)), "sweep");
    }

    // ------------------------------------------------------------ actions: roles, tokens, time

    /// The owner hands the project to the other owner address (two steps).
    function moveOwnership(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        if (ownerSilent[pid]) return;
        address current = _p(pid).owner;
        address next = current == _owners[0] ? _owners[1] : _owners[0];
        _must(pid, current, 0, abi.encodeCall(LearningMarket.transferProjectOwnership, (pid, next)), "transferOwner");
        _must(pid, next, 0, abi.encodeCall(LearningMarket.acceptProjectOwnership, (pid)), "acceptOwner");
    }

    /// The owner replaces a role that missed a deadline (the replacement is active).
    function replace(uint256 pidSeed, bool arbiterRole) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        if (ownerSilent[pid] || p.endedAt != 0) return;
        if (arbiterRole ? !p.arbiterMissed : !p.aggregatorMissed) {
            _mustFail(
                pid,
                p.owner,
                0,
                abi.encodeCall(
                    LearningMarket.replaceRole,
                    (pid, arbiterRole ? ILearningMarket.Role.Arbiter : ILearningMarket.Role.Aggregator, outsider)
                ),
                abi.encodeWithSelector(
                    ILearningMarket.RoleNotMissed.selector,
                    pid,
                    arbiterRole ? ILearningMarket.Role.Arbiter : ILearningMarket.Role.Aggregator
                )
            );
            return;
        }
        address[3] memory pool = arbiterRole ? _arbiters : _aggregators;
        address current = arbiterRole ? p.arbiter : p.aggregator;
        address next = pool[0] == current ? pool[1] : pool[0];
        _must(
            pid,
            p.owner,
            0,
            abi.encodeCall(
                LearningMarket.replaceRole,
                (pid, arbiterRole ? ILearningMarket.Role.Arbiter : ILearningMarket.Role.Aggregator, next)
            ),
            arbiterRole ? bytes32("replaceArbiter") : bytes32("replaceAggregator")
        );
        if (arbiterRole) arbiterSilent[pid] = false;
        else aggregatorSilent[pid] = false;
    }

    /// A role goes silent in one project (0 aggregator, 1 arbiter, 2 owner).
    function silence(uint256 pidSeed, uint256 roleSeed) external step {
        uint256 pid = _pick(pidSeed);
        uint256 role = roleSeed % 3;
        if (role == 0) aggregatorSilent[pid] = true;
        else if (role == 1) arbiterSilent[pid] = true;
        else ownerSilent[pid] = true;
        ok["silence"]++;
    }

    function roll(uint256 blocks) external step {
        currentBlock += bound(blocks, 1, 12);
        vm.roll(currentBlock);
    }

    /// Jump past every deadline of a project's open round.
    function rollPastDeadlines(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        uint256 target = uint256(p.openedAt) + p.commitWindow + p.revealWindow + p.finalizeWindow
            + p.challengeWindow + p.ruleWindow + 1;
        if (target > currentBlock) currentBlock = target;
        vm.roll(currentBlock);
    }

    function blocklist(uint256 tSeed, bool value) external step {
        blk.setBlocked(_trainers[tSeed % NT], value);
        ok["blocklist"]++;
    }

    /// The Puppet trainer accepts ETH, rejects it, or re-enters the market when paid.
    function puppetMode(uint256 modeSeed, uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        uint256 m = modeSeed % 3;
        bytes memory data = m == 2 && modeSeed % 2 == 0
            ? abi.encodeCall(LearningMarket.withdrawStake, (pid))
            : abi.encodeCall(LearningMarket.withdrawCredit, (pid));
        puppet.setMode(Puppet.Mode(m), address(market), data);
    }

    /// The re-entrant token calls back into the market on every transfer.
    function tokenHook(uint256 which, uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        ILearningMarket.Project memory p = _p(pid);
        uint256 w = which % 4;
        bytes memory data;
        if (w == 0) data = abi.encodeCall(LearningMarket.expireRound, (pid, p.currentRound));
        else if (w == 1) data = abi.encodeCall(LearningMarket.endProject, (pid));
        else if (w == 2) data = abi.encodeCall(LearningMarket.withdrawCredit, (pid));
        else data = abi.encodeCall(LearningMarket.sweep, (pid));
        rnt.setHook(address(market), data);
    }

    // ------------------------------------------------------------ liveness

    /// From the current state, with the aggregator, the arbiter and the owner all silent, an
    /// outsider can take the project to its end after its deadlines and every beneficiary can then
    /// take out what it is owed. Checked on a snapshot that is thrown away.
    function probeLiveness(uint256 pidSeed) external step {
        uint256 pid = _pick(pidSeed);
        uint256 snap = vm.snapshotState();
        uint256 blockBefore = currentBlock;
        _driveToEnd(pid);
        _checkDrained(pid);
        currentBlock = blockBefore;
        vm.revertToState(snap);
        ok["liveness"]++;
    }

    /// Only the outsider acts on the project's clock; beneficiaries act only for their own money.
    function _driveToEnd(uint256 pid) internal {
        // bounded: every iteration closes a round
        for (uint256 guard = 0; guard < 8; guard++) {
            ILearningMarket.Project memory p = _p(pid);
            if (p.currentRound >= p.numRounds) break;
            uint256 when = _expiresAfter(pid);
            if (when + 1 > currentBlock) currentBlock = when + 1;
            vm.roll(currentBlock);
            _must(pid, outsider, 0, abi.encodeCall(LearningMarket.expireRound, (pid, p.currentRound)), "liveExpire");
        }
        ILearningMarket.Project memory q = _p(pid);
        assertTrue(q.currentRound >= q.numRounds, "every round closed");
        // claims wait for settlement; end after the last round settles
        uint256 settles = market.settlesAfter(pid, q.numRounds - 1);
        for (uint256 r = 0; r < q.numRounds; r++) {
            uint256 s = market.settlesAfter(pid, r);
            if (s > settles) settles = s;
        }
        if (settles + 1 > currentBlock) currentBlock = settles + 1;
        vm.roll(currentBlock);
        if (q.endedAt == 0) {
            _must(pid, outsider, 0, abi.encodeCall(LearningMarket.endProject, (pid)), "liveEnd");
        }
        // lapse every dispute still pending (refunds their bonds)
        for (uint256 r = 0; r < q.numRounds; r++) {
            ILearningMarket.Round memory rd = market.getRound(pid, r);
            for (uint256 i = 0; i < rd.disputeCount; i++) {
                if (market.getDispute(pid, r, i).status == ILearningMarket.DisputeStatus.Pending) {
                    _must(pid, outsider, 0, abi.encodeCall(LearningMarket.lapseDispute, (pid, r, i)), "liveLapse");
                }
            }
        }
        // each trainer claims through the latest round that pays it, if the claim window is open
        for (uint256 ti = 0; ti < NT; ti++) {
            for (uint256 k = q.numRounds; k > 0; k--) {
                if (_claimable(pid, k - 1, ti)) {
                    _doClaim(pid, k - 1, ti);
                    break;
                }
            }
            for (uint256 r = 0; r < q.numRounds; r++) _poolShare(pid, r, ti);
            _withdrawStake(pid, ti);
        }
        ILearningMarket.Project memory e = _p(pid);
        uint256 claimDl = uint256(e.endedAt) + e.claimWindow;
        if (claimDl + 1 > currentBlock) currentBlock = claimDl + 1;
        vm.roll(currentBlock);
        if (!e.swept) _must(pid, outsider, 0, abi.encodeCall(LearningMarket.sweep, (pid)), "liveSweep");
        for (uint256 a = 0; a < _accounts.length; a++) _withdrawCredit(pid, _accounts[a]);
    }

    /// After the drive only pool dust may remain: blocked and rejecting receivers had everything
    /// paid to the address they named.
    function _checkDrained(uint256 pid) internal view {
        ILearningMarket.Project memory p = _p(pid);
        assertTrue(p.endedAt != 0, "ended");
        assertEq(p.unallocated, 0, "no budget left");
        assertEq(p.bondHeld, 0, "no bond held");
        assertTrue(p.swept, "swept");
        for (uint256 ti = 0; ti < NT; ti++) {
            (, uint256 stake) = market.registration(pid, _trainers[ti]);
            assertEq(stake, 0, "a trainer's stake left behind");
        }
        for (uint256 a = 0; a < _accounts.length; a++) {
            assertEq(market.creditOf(pid, _accounts[a]), 0, "a credit left behind");
        }
        // pool dust: at most reveals - 1 base units per round (unpayable revealers take their
        // shares to their rescue address)
        uint256 dust = p.pools;
        for (uint256 r = 0; r < p.numRounds; r++) {
            ILearningMarket.Round memory rd = market.getRound(pid, r);
            if (rd.reveals != 0) assertLt(market.poolShareOf(pid, r, _trainers[0]), 1, "pool share left");
        }
        assertEq(projIn[pid] - projOut[pid], dust, "the project holds only pool dust");
        assertLe(dust, uint256(p.numRounds) * NT, "pool dust bounded");
    }

    // ------------------------------------------------------------ views for the invariants

    function projects() external view returns (uint256[] memory) {
        return _projects;
    }

    function accounts() external view returns (address[] memory) {
        return _accounts;
    }

    /// Everything the market owes or holds for `pid`, from the contract's own records.
    function holdings(uint256 pid) public view returns (uint256 h) {
        ILearningMarket.Project memory p = _p(pid);
        h = uint256(p.unallocated) + p.stakesHeld + p.pools + p.bondHeld;
        if (!p.swept) h += uint256(p.allocated) - p.claimed;
        for (uint256 a = 0; a < _accounts.length; a++) h += market.creditOf(pid, _accounts[a]);
        for (uint256 r = 0; r < p.numRounds; r++) {
            ILearningMarket.Round memory rd = market.getRound(pid, r);
            for (uint256 i = 0; i < rd.disputeCount; i++) {
                ILearningMarket.Dispute memory d = market.getDispute(pid, r, i);
                if (d.status == ILearningMarket.DisputeStatus.Pending) h += d.bond;
            }
        }
    }

    function tokens() external view returns (address[4] memory) {
        return [address(0), address(plain), address(blk), address(rnt)];
    }

    function trainers() external view returns (address[NT] memory) {
        return _trainers;
    }

    function rootAmount(uint256 pid, uint256 round, uint256 ti) external view returns (uint256) {
        return _rootAmounts[pid][round][ti];
    }

    /// What the run did (successful calls per kind; shown with -vv).
    function logCoverage() external view {
        bytes32[30] memory labels = [
            bytes32("create"), "register", "commit", "reveal", "forfeit", "bond", "finalize", "finalizeDishonest",
            "expire", "dispute", "upheld", "dismissed", "lapse", "claim", "claimTo", "poolShare", "withdrawStake",
            "withdrawCredit", "end", "sweep", "acceptOwner", "replaceAggregator", "replaceArbiter", "liveness",
            "refused", "feeRefused", "trainingPhase", "blocklist", "withdrawStakeTo", "withdrawCreditTo"
        ];
        for (uint256 i = 0; i < labels.length; i++) console.log(string(abi.encodePacked(labels[i])), ok[labels[i]]);
        console.log("rnt hook calls", rnt.hookCalls());
        console.log("puppet reentries", puppet.reentries());
    }

    function settleAll() external {
        vm.roll(currentBlock);
        for (uint256 i = 0; i < _projects.length; i++) {
            _driveToEnd(_projects[i]);
            _checkDrained(_projects[i]);
        }
    }
}
