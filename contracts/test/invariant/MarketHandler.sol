// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TestBase} from "../utils/Test.sol";
import {MerkleBuilder} from "../utils/MerkleBuilder.sol";
import {LearningMarket} from "../../src/LearningMarket.sol";
import {MockERC20} from "../mocks/MockERC20.sol";
import {console} from "../utils/Console.sol";

/// @notice Drives one market through random sequences of every external action, on several ETH and
/// ERC-20 projects at once, and keeps an independent model (ghost variables) of what the contract
/// should hold, owe and have paid.
/// @dev The campaign runs with fail_on_revert: each action first decides from the model whether the
/// call must succeed or must fail, and with which exact error; a successful call must move exactly
/// the modelled amounts. A wrong model or a wrong contract therefore stops the campaign.
contract MarketHandler is TestBase {
    using MerkleBuilder for MerkleBuilder.Tree;

    uint256 internal constant NT = 5; // trainers
    uint256 internal constant MAX_PROJECTS = 4;
    uint256 internal constant MAX_ROUNDS = 3;

    LearningMarket public market;
    MockERC20 public token;
    address public owner;
    address public aggregator;
    address public arbiter;
    address public outsider;
    address[NT] internal _trainers;
    uint256[] internal _projects;
    uint256 public currentBlock;

    // ------------------------------------------------------------ ghosts: money, per token (0 = ETH)
    mapping(address => uint256) public ghostDeposited; // budgets + stakes + bonds
    mapping(address => uint256) public ghostPaid; // claims + stake and credit withdrawals
    mapping(address => uint256) public ghostReturned; // endProject
    mapping(address => uint256) public ghostPendingBonds; // bonds of unresolved disputes

    // ------------------------------------------------------------ ghosts: per project
    mapping(uint256 => uint256) public ghostUnallocated;
    mapping(uint256 => uint256) public ghostAllocated;
    mapping(uint256 => uint256) public ghostProjectClaimed;
    mapping(uint256 => bool) public ghostEnded;
    mapping(uint256 => mapping(address => bool)) public ghostRegistered;
    mapping(uint256 => mapping(address => uint256)) public ghostStake;
    mapping(uint256 => mapping(address => uint256)) public ghostCredit;
    mapping(uint256 => mapping(address => uint256)) public ghostClaimed;

    // ------------------------------------------------------------ ghosts: per round
    mapping(uint256 => mapping(uint256 => LearningMarket.RoundStatus)) public ghostStatus;
    mapping(uint256 => mapping(uint256 => uint256[NT])) internal _entitlement; // cumulative, per trainer
    mapping(uint256 => mapping(uint256 => uint256)) internal _allocation;
    mapping(uint256 => mapping(uint256 => uint256)) internal _cumulative;
    mapping(uint256 => mapping(uint256 => uint256)) internal _finalizedAt;
    mapping(uint256 => mapping(uint256 => address)) internal _disputer;
    mapping(uint256 => mapping(uint256 => uint256)) internal _bond;

    /// @dev The handler's own copy of each project's configuration and round clock, so the model
    /// never reads the contract's view of itself.
    struct Model {
        address token;
        address owner;
        uint32 numRounds;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 challengeWindow;
        uint128 rewardPerRound;
        uint128 stake;
        uint128 disputeBond;
        uint256 currentRound;
        uint256 openedAt;
    }

    mapping(uint256 => Model) internal _model;
    uint256 internal _touched; // project the current action works on (observed afterwards)

    struct Secret {
        string cid;
        bytes32 digest;
        bytes32 salt;
        uint8 state; // 0 none, 1 committed, 2 revealed
    }

    mapping(uint256 => mapping(uint256 => mapping(address => Secret))) internal _secrets;

    // ------------------------------------------------------------ status observation
    mapping(uint256 => mapping(uint256 => uint8)) public lastSeenStatus;
    bool public statusRegressed;

    // ------------------------------------------------------------ call statistics (successes)
    mapping(bytes32 => uint256) public ok;

    constructor() {
        currentBlock = 1000;
        vm.roll(currentBlock);
        market = new LearningMarket();
        token = new MockERC20("Reward", "RWD");
        owner = makeAddr("inv-owner");
        aggregator = makeAddr("inv-aggregator");
        arbiter = makeAddr("inv-arbiter");
        outsider = makeAddr("inv-outsider");
        for (uint256 i = 0; i < NT; i++) {
            _trainers[i] = makeAddr(string(abi.encodePacked("inv-trainer-", bytes1(uint8(48 + i)))));
            _approve(_trainers[i]);
        }
        _approve(owner);
        _approve(outsider);
        // one ETH and one ERC-20 project from the start, each with three trainers registered;
        // createProject adds more
        _create(address(0), 3, 5, 5, 6, 1 ether, 0.1 ether, 0.05 ether);
        _create(address(token), 2, 4, 4, 8, 5e18, 1e18, 0);
        for (uint256 i = 0; i < 3; i++) {
            _register(_projects[0], _trainers[i]);
            _register(_projects[1], _trainers[i]);
        }
    }

    function _approve(address who) internal {
        vm.prank(who);
        token.approve(address(market), type(uint256).max);
    }

    modifier tick() {
        vm.roll(currentBlock);
        _;
        _observe(_touched);
    }

    // ================================================================ actions

    function createProject(uint256 seed) external tick {
        seed = _h(seed, 1);
        if (_projects.length >= MAX_PROJECTS) {
            _rollTo(currentBlock + 1 + seed % 3); // nothing to create: let time pass instead
            return;
        }
        uint32 c = uint32(bound(seed >> 16, 1, 6));
        uint32 r = uint32(bound(seed >> 24, 1, 6));
        _create(
            seed & 1 == 1 ? address(token) : address(0),
            uint32(bound(seed >> 8, 1, MAX_ROUNDS)),
            c,
            r,
            uint32(bound(seed >> 32, 1, c + r)),
            uint128(bound(seed >> 40, 1, 1e21)),
            (seed >> 120) & 3 == 0 ? 0 : uint128(bound(seed >> 128, 1, 1e20)),
            (seed >> 200) & 3 == 0 ? 0 : uint128(bound(seed >> 208, 1, 1e20))
        );
    }

    function roll(uint256 blocks) external tick {
        currentBlock += bound(blocks, 1, 5);
        vm.roll(currentBlock);
    }

    function register(uint256 pSeed, uint256 tSeed) external tick {
        tSeed = _h(tSeed, 2);
        (uint256 pid, Model memory p) = _pick(pSeed);
        address t = _trainers[tSeed % NT];
        uint256 value = p.token == address(0) ? p.stake : 0;
        _fund(t, p.token, p.stake);
        bytes memory data = abi.encodeCall(LearningMarket.register, (pid));
        if (ghostEnded[pid]) {
            return _expectFail(t, value, data, abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, pid));
        }
        if (ghostRegistered[pid][t]) {
            return _expectFail(
                t, value, data, abi.encodeWithSelector(LearningMarket.AlreadyRegistered.selector, pid, t)
            );
        }
        _register(pid, t);
    }

    function commit(uint256 pSeed, uint256 tSeed, bytes32 digest, bytes32 salt) external tick {
        tSeed = _h(tSeed, 2);
        (uint256 pid, Model memory p) = _pick(pSeed);
        address t = _trainers[tSeed % NT];
        uint256 r = p.currentRound;
        string memory cid = string(abi.encodePacked("bafy", salt ^ digest));
        bytes32 c = market.commitmentOf(pid, r, t, cid, digest, salt);
        bytes memory data = abi.encodeCall(LearningMarket.commit, (pid, r, c));
        if (!ghostRegistered[pid][t] && !ghostEnded[pid] && _h(tSeed, 7) % 2 == 0) _register(pid, t);
        if (!ghostRegistered[pid][t]) {
            return _expectFail(t, 0, data, abi.encodeWithSelector(LearningMarket.NotRegistered.selector, pid, t));
        }
        if (r >= p.numRounds) {
            return _expectFail(t, 0, data, abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, pid, r, r));
        }
        uint256 deadline = uint256(p.openedAt) + p.commitWindow;
        if (currentBlock > deadline) {
            return _expectFail(
                t, 0, data, abi.encodeWithSelector(LearningMarket.CommitClosed.selector, pid, r, deadline)
            );
        }
        if (_secrets[pid][r][t].state != 0) {
            return _expectFail(
                t, 0, data, abi.encodeWithSelector(LearningMarket.AlreadyCommitted.selector, pid, r, t)
            );
        }
        _commit(pid, r, t, cid, digest, salt);
    }

    /// @notice A whole training phase of the open round in one action, as honest trainers run it:
    /// registered trainers picked by `mask` commit (if the commit phase is still open), the chain
    /// moves into the reveal phase, and the committed trainers picked by `mask >> 8` reveal.
    function trainingPhase(uint256 pSeed, uint256 mask, bytes32 seed) external tick {
        mask = _h(mask, 3);
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r >= p.numRounds) return;
        uint256 commitDl = uint256(p.openedAt) + p.commitWindow;
        uint256 revealDl = commitDl + p.revealWindow;
        if (currentBlock <= commitDl) {
            for (uint256 i = 0; i < NT; i++) {
                address t = _trainers[i];
                if ((mask >> i) & 1 == 0 || !ghostRegistered[pid][t] || _secrets[pid][r][t].state != 0) continue;
                bytes32 salt = keccak256(abi.encode(seed, i));
                bytes32 digest = sha256(abi.encode(seed, i));
                _commit(pid, r, t, string(abi.encodePacked("bafy", digest)), digest, salt);
            }
            _rollTo(commitDl + 1 + (mask >> 16) % p.revealWindow);
        }
        if (currentBlock <= commitDl || currentBlock > revealDl) return;
        for (uint256 i = 0; i < NT; i++) {
            address t = _trainers[i];
            if ((mask >> (8 + i)) & 1 == 0 || _secrets[pid][r][t].state != 1) continue;
            _reveal(pid, r, t);
        }
    }

    function _commit(uint256 pid, uint256 r, address t, string memory cid, bytes32 digest, bytes32 salt) internal {
        bytes32 c = market.commitmentOf(pid, r, t, cid, digest, salt);
        vm.expectEmit(address(market));
        emit LearningMarket.UpdateCommitted(pid, r, t, c);
        vm.prank(t);
        market.commit(pid, r, c);
        _secrets[pid][r][t] = Secret({cid: cid, digest: digest, salt: salt, state: 1});
        ok[bytes32(bytes("commit"))]++;
    }

    function _reveal(uint256 pid, uint256 r, address t) internal {
        Secret memory s = _secrets[pid][r][t];
        vm.prank(t);
        market.reveal(pid, r, s.cid, s.digest, s.salt);
        _secrets[pid][r][t].state = 2;
        ok[bytes32(bytes("reveal"))]++;
    }

    function reveal(uint256 pSeed, uint256 tSeed, bool tamper) external tick {
        tSeed = _h(tSeed, 2);
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r >= p.numRounds) return;
        // the first trainer, from a random start, holding an unrevealed commitment
        address t;
        for (uint256 i = 0; i < NT && t == address(0); i++) {
            address candidate = _trainers[(tSeed % NT + i) % NT];
            if (_secrets[pid][r][candidate].state == 1) t = candidate;
        }
        if (t == address(0)) return;
        Secret memory s = _secrets[pid][r][t];
        uint256 commitDl = uint256(p.openedAt) + p.commitWindow;
        uint256 revealDl = commitDl + p.revealWindow;
        bytes32 salt = tamper ? ~s.salt : s.salt;
        bytes memory data = abi.encodeCall(LearningMarket.reveal, (pid, r, s.cid, s.digest, salt));
        if (currentBlock <= commitDl) {
            if (_h(tSeed, 8) % 2 == 0) {
                return _expectFail(
                    t, 0, data, abi.encodeWithSelector(LearningMarket.RevealNotOpen.selector, pid, r, commitDl)
                );
            }
            _rollTo(commitDl + 1);
        }
        if (currentBlock > revealDl) {
            return _expectFail(
                t, 0, data, abi.encodeWithSelector(LearningMarket.RevealClosed.selector, pid, r, revealDl)
            );
        }
        if (tamper) {
            return _expectFail(t, 0, data, abi.encodeWithSelector(LearningMarket.RevealMismatch.selector, pid, r, t));
        }
        _reveal(pid, r, t);
    }

    function finalize(uint256 pSeed, uint256 allocSeed, uint256 weightSeed) external tick {
        allocSeed = _h(allocSeed, 4);
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r >= p.numRounds) {
            bytes memory late = abi.encodeCall(
                LearningMarket.finalizeRound, (pid, r, "bafymodel", "bafyrecord", bytes32(uint256(1)), 0)
            );
            return _expectFail(
                aggregator, 0, late, abi.encodeWithSelector(LearningMarket.RoundNotOpen.selector, pid, r, r)
            );
        }
        uint256 revealDl = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        if (currentBlock <= revealDl) {
            if (allocSeed % 4 == 0) {
                bytes memory early = abi.encodeCall(
                    LearningMarket.finalizeRound, (pid, r, "bafymodel", "bafyrecord", bytes32(uint256(1)), 0)
                );
                return _expectFail(
                    aggregator,
                    0,
                    early,
                    abi.encodeWithSelector(LearningMarket.RevealStillOpen.selector, pid, r, revealDl)
                );
            }
            _rollTo(revealDl + 1);
        }
        if (r > 0 && ghostStatus[pid][r - 1] == LearningMarket.RoundStatus.Disputed) {
            bytes memory blocked = abi.encodeCall(
                LearningMarket.finalizeRound, (pid, r, "bafymodel", "bafyrecord", bytes32(uint256(1)), 0)
            );
            return _expectFail(
                aggregator, 0, blocked, abi.encodeWithSelector(LearningMarket.PreviousRoundUnsettled.selector, pid, r - 1)
            );
        }
        _finalize(pid, p, r, allocSeed, weightSeed);
    }

    function dispute(uint256 pSeed, uint256 actorSeed, uint256 roundSeed) external tick {
        actorSeed = _h(actorSeed, 5);
        roundSeed = _h(roundSeed, 6);
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r == 0) return;
        // mostly the latest finalized round (the only one that can be inside its window)
        uint256 k = roundSeed % 4 == 0 ? roundSeed % r : r - 1;
        address who = _actor(actorSeed, pid);
        uint256 value = p.token == address(0) ? p.disputeBond : 0;
        _fund(who, p.token, p.disputeBond);
        bytes memory data = abi.encodeCall(LearningMarket.dispute, (pid, k, "bafyevidence"));
        uint256 closesAt = _finalizedAt[pid][k] + p.challengeWindow;
        if (who != p.owner && !ghostRegistered[pid][who]) {
            return _expectFail(who, value, data, abi.encodeWithSelector(LearningMarket.NotStakeholder.selector, pid, who));
        }
        if (ghostStatus[pid][k] != LearningMarket.RoundStatus.Finalized) {
            return _expectFail(who, value, data, abi.encodeWithSelector(LearningMarket.RoundNotFinalized.selector, pid, k));
        }
        if (currentBlock > closesAt) {
            return _expectFail(
                who, value, data, abi.encodeWithSelector(LearningMarket.ChallengeWindowClosed.selector, pid, k, closesAt)
            );
        }
        uint256 before = _bal(p.token, who);
        vm.prank(who);
        market.dispute{value: value}(pid, k, "bafyevidence");
        assertEq(before - _bal(p.token, who), p.disputeBond, "dispute took exactly the bond");
        ghostStatus[pid][k] = LearningMarket.RoundStatus.Disputed;
        _disputer[pid][k] = who;
        _bond[pid][k] = p.disputeBond;
        ghostDeposited[p.token] += p.disputeBond;
        ghostPendingBonds[p.token] += p.disputeBond;
        ok[bytes32(bytes("dispute"))]++;
    }

    function resolve(uint256 pSeed, bool upheld) external tick {
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r == 0) return;
        uint256 k = r - 1;
        if (ghostStatus[pid][k] != LearningMarket.RoundStatus.Disputed) {
            bytes memory data = abi.encodeCall(LearningMarket.resolveDispute, (pid, k, upheld, "bafyreason"));
            return _expectFail(arbiter, 0, data, abi.encodeWithSelector(LearningMarket.NotDisputed.selector, pid, k));
        }
        _resolve(pid, p.token, k, upheld);
    }

    function claim(uint256 pSeed, uint256 tSeed, uint256 roundSeed) external tick {
        tSeed = _h(tSeed, 2);
        roundSeed = _h(roundSeed, 6);
        (uint256 pid, Model memory p) = _pick(pSeed);
        uint256 r = p.currentRound;
        if (r == 0) return;
        uint256 k = roundSeed % r;
        if ((roundSeed >> 64) % 2 == 0) {
            uint256 last = _lastStanding(pid, r); // the round a trainer would normally use
            if (last != type(uint256).max) k = last;
        }
        uint256 ti = tSeed % NT;
        LearningMarket.RoundStatus s = ghostStatus[pid][k];
        uint256 closesAt = _finalizedAt[pid][k] + p.challengeWindow;
        if (s == LearningMarket.RoundStatus.Finalized && currentBlock <= closesAt && (roundSeed >> 128) % 4 == 0) {
            _rollTo(closesAt + 1);
        }
        _claim(pid, p.token, k, ti, closesAt);
    }

    function end(uint256 pSeed, bool wait) external tick {
        (uint256 pid, Model memory p) = _pick(pSeed);
        bytes memory data = abi.encodeCall(LearningMarket.endProject, (pid));
        if (ghostEnded[pid]) {
            return _expectFail(owner, 0, data, abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, pid));
        }
        uint256 n = p.numRounds;
        if (p.currentRound < n) {
            return _expectFail(
                owner, 0, data, abi.encodeWithSelector(LearningMarket.RoundsRemaining.selector, pid, p.currentRound, n)
            );
        }
        LearningMarket.RoundStatus s = ghostStatus[pid][n - 1];
        if (s == LearningMarket.RoundStatus.Disputed) {
            return _expectFail(
                owner, 0, data, abi.encodeWithSelector(LearningMarket.PreviousRoundUnsettled.selector, pid, n - 1)
            );
        }
        uint256 closesAt = _finalizedAt[pid][n - 1] + p.challengeWindow;
        if (s == LearningMarket.RoundStatus.Finalized && currentBlock <= closesAt) {
            if (!wait) {
                return _expectFail(
                    owner,
                    0,
                    data,
                    abi.encodeWithSelector(LearningMarket.ChallengeWindowOpen.selector, pid, n - 1, closesAt)
                );
            }
            _rollTo(closesAt + 1);
        }
        _end(pid, p.token);
    }

    function withdrawStake(uint256 pSeed, uint256 tSeed) external tick {
        tSeed = _h(tSeed, 2);
        (uint256 pid, Model memory p) = _pick(pSeed);
        address t = _trainers[tSeed % NT];
        bytes memory data = abi.encodeCall(LearningMarket.withdrawStake, (pid));
        if (!ghostEnded[pid]) {
            return _expectFail(t, 0, data, abi.encodeWithSelector(LearningMarket.ProjectNotEnded.selector, pid));
        }
        if (ghostStake[pid][t] == 0) {
            return _expectFail(t, 0, data, abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, t));
        }
        _withdrawStake(pid, p.token, t);
    }

    function withdrawCredit(uint256 pSeed, uint256 actorSeed) external tick {
        actorSeed = _h(actorSeed, 5);
        (uint256 pid, Model memory p) = _pick(pSeed);
        address who = _actor(actorSeed, pid);
        if (ghostCredit[pid][who] == 0) {
            bytes memory data = abi.encodeCall(LearningMarket.withdrawCredit, (pid));
            return _expectFail(who, 0, data, abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, who));
        }
        _withdrawCredit(pid, p.token, who);
    }

    function slash(uint256 pSeed, uint256 tSeed) external tick {
        tSeed = _h(tSeed, 2);
        (uint256 pid,) = _pick(pSeed);
        address t = _trainers[tSeed % NT];
        bytes memory data = abi.encodeCall(LearningMarket.slashStake, (pid, t, "bafyslash"));
        if (ghostEnded[pid]) {
            return _expectFail(arbiter, 0, data, abi.encodeWithSelector(LearningMarket.ProjectEndedAlready.selector, pid));
        }
        uint256 stake = ghostStake[pid][t];
        if (stake == 0) {
            return _expectFail(arbiter, 0, data, abi.encodeWithSelector(LearningMarket.NothingToWithdraw.selector, pid, t));
        }
        if (tSeed % 3 != 0) return; // slashing is rare: keep stakes around for withdrawStake
        vm.prank(arbiter);
        market.slashStake(pid, t, "bafyslash");
        ghostStake[pid][t] = 0;
        ghostUnallocated[pid] += stake;
        ok[bytes32(bytes("slash"))]++;
    }

    // ================================================================ settle everything

    /// @notice Bring every project to its end and have everyone take what they are owed: resolve
    /// open disputes, finalize the remaining rounds, end, claim every trainer's latest entitlement,
    /// withdraw stakes and credits. Afterwards the market must hold nothing at all.
    function settleAll() external {
        vm.roll(currentBlock);
        for (uint256 i = 0; i < _projects.length; i++) {
            uint256 pid = _projects[i];
            Model memory p = _model[pid];
            if (!ghostEnded[pid]) {
                for (uint256 r = p.currentRound; r <= p.numRounds; r++) {
                    if (r > 0 && ghostStatus[pid][r - 1] == LearningMarket.RoundStatus.Disputed) {
                        _resolve(pid, p.token, r - 1, r % 2 == 0);
                    }
                    if (r == p.numRounds) break;
                    p = _model[pid];
                    _rollTo(uint256(p.openedAt) + p.commitWindow + p.revealWindow + 1);
                    _finalize(pid, p, r, uint256(keccak256(abi.encode(pid, r))), r);
                }
                _rollTo(_finalizedAt[pid][p.numRounds - 1] + p.challengeWindow + 1);
                _end(pid, p.token);
            }
            uint256 last = _lastStanding(pid, p.numRounds);
            for (uint256 ti = 0; ti < NT; ti++) {
                address t = _trainers[ti];
                if (last != type(uint256).max && _entitlement[pid][last][ti] > ghostClaimed[pid][t]) {
                    _claim(pid, p.token, last, ti, 0);
                }
                if (ghostStake[pid][t] > 0) _withdrawStake(pid, p.token, t);
                if (ghostCredit[pid][t] > 0) _withdrawCredit(pid, p.token, t);
            }
            if (ghostCredit[pid][owner] > 0) _withdrawCredit(pid, p.token, owner);
        }
        for (uint256 i = 0; i < _projects.length; i++) {
            _observe(_projects[i]);
        }
    }

    /// @notice Successful actions so far, by kind (printed with -vv after each run).
    function logCoverage() external view {
        string[14] memory names = [
            "createProject",
            "register",
            "commit",
            "reveal",
            "finalize",
            "dispute",
            "resolve-upheld",
            "resolve-dismissed",
            "claim",
            "end",
            "withdrawStake",
            "withdrawCredit",
            "slash",
            "expected-revert"
        ];
        for (uint256 i = 0; i < names.length; i++) {
            console.log(names[i], ok[bytes32(bytes(names[i]))]);
        }
    }

    // ================================================================ effects

    function _create(
        address tok,
        uint32 rounds,
        uint32 c,
        uint32 r,
        uint32 ch,
        uint128 reward,
        uint128 stake,
        uint128 bond
    ) internal {
        LearningMarket.ProjectParams memory params = LearningMarket.ProjectParams({
            token: tok,
            aggregator: aggregator,
            arbiter: arbiter,
            numRounds: rounds,
            commitWindow: c,
            revealWindow: r,
            challengeWindow: ch,
            rewardPerRound: reward,
            stake: stake,
            disputeBond: bond,
            specCID: "bafyspec"
        });
        uint256 budget = uint256(reward) * rounds;
        _fund(owner, tok, budget);
        uint256 before = _bal(tok, owner);
        vm.prank(owner);
        uint256 pid = market.createProject{value: tok == address(0) ? budget : 0}(params);
        assertEq(before - _bal(tok, owner), budget, "createProject took exactly the budget");
        _projects.push(pid);
        _model[pid] = Model({
            token: tok,
            owner: owner,
            numRounds: rounds,
            commitWindow: c,
            revealWindow: r,
            challengeWindow: ch,
            rewardPerRound: reward,
            stake: stake,
            disputeBond: bond,
            currentRound: 0,
            openedAt: currentBlock
        });
        ghostDeposited[tok] += budget;
        ghostUnallocated[pid] = budget;
        ok[bytes32(bytes("createProject"))]++;
    }

    function _register(uint256 pid, address t) internal {
        Model memory p = _model[pid];
        _fund(t, p.token, p.stake);
        uint256 before = _bal(p.token, t);
        vm.prank(t);
        market.register{value: p.token == address(0) ? p.stake : 0}(pid);
        assertEq(before - _bal(p.token, t), p.stake, "register took exactly the stake");
        ghostRegistered[pid][t] = true;
        ghostStake[pid][t] = p.stake;
        ghostDeposited[p.token] += p.stake;
        ok[bytes32(bytes("register"))]++;
    }

    function _finalize(
        uint256 pid,
        Model memory p,
        uint256 r,
        uint256 allocSeed,
        uint256 weightSeed
    ) internal {
        uint256 available = ghostUnallocated[pid] - uint256(p.rewardPerRound) * (p.numRounds - r - 1);
        uint256 room = type(uint104).max - ghostAllocated[pid];
        if (available > room) available = room;
        if (allocSeed % 7 == 0) {
            bytes memory over = abi.encodeCall(
                LearningMarket.finalizeRound, (pid, r, "bafymodel", "bafyrecord", bytes32(uint256(1)), available + 1)
            );
            _expectFail(
                aggregator,
                0,
                over,
                abi.encodeWithSelector(LearningMarket.AllocationTooLarge.selector, available + 1, available)
            );
        }
        uint256 allocation = (allocSeed >> 8) % 4 == 0 ? available : bound(allocSeed >> 16, 0, available);
        uint256[NT] memory ent = _base(pid, r);
        _distribute(ent, allocation, weightSeed);
        bytes32 root = _treeOf(ent).root();
        vm.expectEmit(address(market));
        emit LearningMarket.RoundFinalized(pid, r, "bafymodel", "bafyrecord", root, allocation);
        vm.prank(aggregator);
        market.finalizeRound(pid, r, "bafymodel", "bafyrecord", root, allocation);
        _entitlement[pid][r] = ent;
        _allocation[pid][r] = allocation;
        ghostAllocated[pid] += allocation;
        ghostUnallocated[pid] -= allocation;
        _cumulative[pid][r] = ghostAllocated[pid];
        _finalizedAt[pid][r] = currentBlock;
        ghostStatus[pid][r] = LearningMarket.RoundStatus.Finalized;
        _model[pid].currentRound = r + 1;
        _model[pid].openedAt = currentBlock;
        ok[bytes32(bytes("finalize"))]++;
    }

    function _resolve(uint256 pid, address tok, uint256 k, bool upheld) internal {
        vm.prank(arbiter);
        market.resolveDispute(pid, k, upheld, "bafyreason");
        uint256 bond = _bond[pid][k];
        ghostPendingBonds[tok] -= bond;
        if (upheld) {
            ghostStatus[pid][k] = LearningMarket.RoundStatus.Voided;
            ghostAllocated[pid] -= _allocation[pid][k];
            ghostUnallocated[pid] += _allocation[pid][k];
            ghostCredit[pid][_disputer[pid][k]] += bond;
        } else {
            ghostStatus[pid][k] = LearningMarket.RoundStatus.Dismissed;
            ghostUnallocated[pid] += bond;
        }
        ok[upheld ? bytes32(bytes("resolve-upheld")) : bytes32(bytes("resolve-dismissed"))]++;
    }

    function _claim(uint256 pid, address tok, uint256 k, uint256 ti, uint256 closesAt) internal {
        address t = _trainers[ti];
        uint256 ent = _entitlement[pid][k][ti];
        bytes32[] memory proof = _treeOf(_entitlement[pid][k]).proof(ti);
        (bytes memory err, uint256 payout) = _claimOutcome(pid, k, t, ent, closesAt);
        if (err.length > 0) {
            return _expectFail(outsider, 0, abi.encodeCall(LearningMarket.claim, (pid, k, t, ent, proof)), err);
        }
        uint256 before = _bal(tok, t);
        vm.prank(outsider); // anyone may trigger a claim; the trainer is paid
        market.claim(pid, k, t, ent, proof);
        assertEq(_bal(tok, t) - before, payout, "claim paid exactly the difference");
        ghostClaimed[pid][t] = ent;
        ghostProjectClaimed[pid] += payout;
        ghostPaid[tok] += payout;
        ok[bytes32(bytes("claim"))]++;
    }

    /// @dev What the model says a claim must do: the exact revert data, or the payout.
    function _claimOutcome(uint256 pid, uint256 k, address t, uint256 ent, uint256 closesAt)
        internal
        view
        returns (bytes memory err, uint256 payout)
    {
        LearningMarket.RoundStatus s = ghostStatus[pid][k];
        if (s == LearningMarket.RoundStatus.Disputed || s == LearningMarket.RoundStatus.Voided) {
            return (abi.encodeWithSelector(LearningMarket.RoundNotClaimable.selector, pid, k, s), 0);
        }
        if (s == LearningMarket.RoundStatus.Finalized && currentBlock <= closesAt) {
            return (abi.encodeWithSelector(LearningMarket.ChallengeWindowOpen.selector, pid, k, closesAt), 0);
        }
        uint256 already = ghostClaimed[pid][t];
        if (ent <= already) {
            return (abi.encodeWithSelector(LearningMarket.NothingToClaim.selector, pid, t, ent, already), 0);
        }
        payout = ent - already;
        uint256 cumulative = _cumulative[pid][k];
        uint256 claimed = ghostProjectClaimed[pid];
        uint256 cap = cumulative > claimed ? cumulative - claimed : 0;
        if (payout > cap) {
            return (abi.encodeWithSelector(LearningMarket.ClaimExceedsAllocation.selector, pid, payout, cap), 0);
        }
    }

    function _end(uint256 pid, address tok) internal {
        uint256 before = _bal(tok, owner);
        vm.prank(owner);
        market.endProject(pid);
        uint256 returned = ghostUnallocated[pid];
        assertEq(_bal(tok, owner) - before, returned, "end returned exactly the unallocated amount");
        ghostReturned[tok] += returned;
        ghostUnallocated[pid] = 0;
        ghostEnded[pid] = true;
        ok[bytes32(bytes("end"))]++;
    }

    function _withdrawStake(uint256 pid, address tok, address t) internal {
        uint256 before = _bal(tok, t);
        vm.prank(t);
        market.withdrawStake(pid);
        uint256 stake = ghostStake[pid][t];
        assertEq(_bal(tok, t) - before, stake, "withdrawStake paid exactly the stake");
        ghostStake[pid][t] = 0;
        ghostPaid[tok] += stake;
        ok[bytes32(bytes("withdrawStake"))]++;
    }

    function _withdrawCredit(uint256 pid, address tok, address who) internal {
        uint256 before = _bal(tok, who);
        vm.prank(who);
        market.withdrawCredit(pid);
        uint256 credit = ghostCredit[pid][who];
        assertEq(_bal(tok, who) - before, credit, "withdrawCredit paid exactly the credit");
        ghostCredit[pid][who] = 0;
        ghostPaid[tok] += credit;
        ok[bytes32(bytes("withdrawCredit"))]++;
    }

    // ================================================================ model helpers

    /// @dev Entitlements carried into round r: those of the latest earlier round still standing.
    function _base(uint256 pid, uint256 r) internal view returns (uint256[NT] memory ent) {
        uint256 last = _lastStanding(pid, r);
        if (last != type(uint256).max) ent = _entitlement[pid][last];
    }

    /// @dev Latest round below `limit` that is finalized and not voided; max uint if none.
    function _lastStanding(uint256 pid, uint256 limit) internal view returns (uint256) {
        for (uint256 k = limit; k > 0; k--) {
            LearningMarket.RoundStatus s = ghostStatus[pid][k - 1];
            if (s != LearningMarket.RoundStatus.Voided && s != LearningMarket.RoundStatus.None) return k - 1;
        }
        return type(uint256).max;
    }

    /// @dev Split `allocation` over the trainers by random weights; the increments sum exactly.
    function _distribute(uint256[NT] memory ent, uint256 allocation, uint256 seed) internal pure {
        uint256[NT] memory w;
        uint256 total;
        for (uint256 i = 0; i < NT; i++) {
            w[i] = uint256(keccak256(abi.encode(seed, i))) % 4;
            total += w[i];
        }
        if (total == 0) {
            w[seed % NT] = 1;
            total = 1;
        }
        uint256 given;
        uint256 first = NT;
        for (uint256 i = 0; i < NT; i++) {
            uint256 inc = allocation * w[i] / total;
            ent[i] += inc;
            given += inc;
            if (first == NT && w[i] > 0) first = i;
        }
        ent[first] += allocation - given;
    }

    function _treeOf(uint256[NT] memory ent) internal view returns (MerkleBuilder.Tree memory) {
        address[] memory leaves = new address[](NT);
        uint256[] memory amounts = new uint256[](NT);
        for (uint256 i = 0; i < NT; i++) {
            leaves[i] = _trainers[i];
            amounts[i] = ent[i];
        }
        return MerkleBuilder.build(leaves, amounts);
    }

    function _expectFail(address who, uint256 value, bytes memory data, bytes memory expected) internal {
        vm.prank(who);
        (bool success, bytes memory ret) = address(market).call{value: value}(data);
        assertFalse(success, "call should have reverted");
        assertEq(ret, expected, "wrong revert reason");
        ok[bytes32(bytes("expected-revert"))]++;
    }

    /// @dev Check that no round of `pid` moved backwards (or skipped a state) since last seen.
    function _observe(uint256 pid) internal {
        uint256 n = _model[pid].numRounds;
        for (uint256 k = 0; k < n; k++) {
            uint8 seen = uint8(market.getRound(pid, k).status);
            uint8 last = lastSeenStatus[pid][k];
            if (seen != last) {
                bool forward =
                    (last == 0 && seen == 1) || (last == 1 && seen == 2) || (last == 2 && (seen == 3 || seen == 4));
                if (!forward) statusRegressed = true;
                lastSeenStatus[pid][k] = seen;
            }
        }
    }

    /// @dev Fuzzer inputs lean on dictionary values (0, 1000, 1e18, ...): hash them before using
    /// them for decisions, so every branch keeps a fair share of the calls.
    function _h(uint256 x, uint256 salt) internal pure returns (uint256) {
        return uint256(keccak256(abi.encode(x, salt)));
    }

    function _pick(uint256 seed) internal returns (uint256 pid, Model memory p) {
        pid = _projects[_h(seed, 0) % _projects.length];
        p = _model[pid];
        _touched = pid;
    }

    /// @dev A trainer, the owner or the outsider; one time in three, a registered trainer if any.
    function _actor(uint256 seed, uint256 pid) internal view returns (address) {
        uint256 a = seed % (NT + 2);
        if ((seed >> 64) % 3 == 0) {
            for (uint256 i = 0; i < NT; i++) {
                address t = _trainers[(a + i) % NT];
                if (ghostRegistered[pid][t]) return t;
            }
        }
        if (a == NT) return owner;
        if (a == NT + 1) return outsider;
        return _trainers[a];
    }

    function _rollTo(uint256 blockNumber) internal {
        if (blockNumber > currentBlock) {
            currentBlock = blockNumber;
            vm.roll(currentBlock);
        }
    }

    function _fund(address who, address tok, uint256 amount) internal {
        if (amount == 0) return;
        if (tok == address(0)) vm.deal(who, who.balance + amount);
        else token.mint(who, amount);
    }

    function _bal(address tok, address who) internal view returns (uint256) {
        return tok == address(0) ? who.balance : token.balanceOf(who);
    }

    // ================================================================ views for the invariants

    /// @notice What the model says about one project's money, in one call (the checks run after
    /// every action, so they read the model in bulk).
    struct Accounts {
        address token;
        bool ended;
        uint256 unallocated;
        uint256 allocated;
        uint256 claimed;
        uint256 stakes;
        uint256 credits;
        uint256 currentRound;
        uint256 openedAt;
    }

    function projects() external view returns (uint256[] memory) {
        return _projects;
    }

    function trainers() external view returns (address[] memory list) {
        list = new address[](NT);
        for (uint256 i = 0; i < NT; i++) list[i] = _trainers[i];
    }

    function accounts(uint256 pid) external view returns (Accounts memory a) {
        Model memory p = _model[pid];
        a.token = p.token;
        a.ended = ghostEnded[pid];
        a.unallocated = ghostUnallocated[pid];
        a.allocated = ghostAllocated[pid];
        a.claimed = ghostProjectClaimed[pid];
        a.currentRound = p.currentRound;
        a.openedAt = p.openedAt;
        for (uint256 i = 0; i < NT; i++) {
            a.stakes += ghostStake[pid][_trainers[i]];
            a.credits += ghostCredit[pid][_trainers[i]];
        }
        a.credits += ghostCredit[pid][owner] + ghostCredit[pid][outsider];
    }

    /// @notice Per trainer: what it received through claims, and the most it may ever be paid (its
    /// cumulative entitlement in the latest round still standing; entitlements only grow across
    /// standing rounds).
    function payouts(uint256 pid) external view returns (uint256[] memory received, uint256[] memory cap) {
        received = new uint256[](NT);
        cap = new uint256[](NT);
        uint256 last = _lastStanding(pid, _model[pid].currentRound);
        for (uint256 i = 0; i < NT; i++) {
            received[i] = ghostClaimed[pid][_trainers[i]];
            if (last != type(uint256).max) cap[i] = _entitlement[pid][last][i];
        }
    }

    /// @notice Per round: the modelled status and the last status observed on chain.
    function statuses(uint256 pid) external view returns (uint8[] memory modelled, uint8[] memory seen) {
        uint256 n = _model[pid].numRounds;
        modelled = new uint8[](n);
        seen = new uint8[](n);
        for (uint256 k = 0; k < n; k++) {
            modelled[k] = uint8(ghostStatus[pid][k]);
            seen[k] = lastSeenStatus[pid][k];
        }
    }
}
