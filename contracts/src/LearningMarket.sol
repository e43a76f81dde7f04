// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ILearningMarket} from "./ILearningMarket.sol";

/// @title LearningMarket (trust model v2)
/// @notice Escrow and round ledger for collaborative-learning projects. The owner escrows the whole
/// budget; registered trainers commit to and reveal model updates; the bonded aggregator finalizes
/// each round with its fixed allocation and a cumulative-rewards Merkle root; stakeholders dispute
/// inside the challenge window; the arbiter rules (an upheld dispute corrects the root and slashes
/// the aggregator's bond to the round's revealers); trainers pull rewards with a Merkle proof.
/// Every step has a deadline and a default outcome, so no single role can lock funds or withhold
/// pay: a round not finalized in time is expired by anyone (its share rolls over, the bond goes to
/// its revealers), a dispute not ruled in time lapses (the round stands, the bond is refunded), the
/// project can be ended by anyone once every round is settled, and a missed aggregator or arbiter
/// can be replaced by the owner. No function loops over trainers. See docs/trust-model.md.
/// @dev Per-project roles are addresses in the project record (AccessControl roles are
/// contract-wide; one contract serves many projects).
///
/// Slither notes: every deadline is a block number (no `timestamp`); strict equalities compare enum
/// states, roles and commitments, never balances; `_pullExact` compares balances around
/// `transferFrom` on purpose (fee-on-transfer tokens are refused); payments go out last, after the
/// state update, from nonReentrant functions, either to the caller or to the recipient the caller
/// names; third parties are only ever credited (pull payments).
contract LearningMarket is ILearningMarket, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice Minimum dispute bond: rewardPerRound / MIN_BOND_DIVISOR (and at least 1).
    uint256 public constant MIN_BOND_DIVISOR = 100;
    /// @notice Minimum aggregator bond: rewardPerRound / MIN_AGGREGATOR_BOND_DIVISOR (and at least 1).
    uint256 public constant MIN_AGGREGATOR_BOND_DIVISOR = 10;
    /// @notice Minimum commit deposit: rewardPerRound / MIN_DEPOSIT_DIVISOR (and at least 1); the
    /// stake must cover one deposit.
    uint256 public constant MIN_DEPOSIT_DIVISOR = 1000;
    /// @notice A challenge window of one block cannot be watched: at least this many blocks.
    uint256 public constant MIN_CHALLENGE_WINDOW = 2;

    uint256 public projectCount;
    mapping(uint256 projectId => Project) internal _projects;
    mapping(uint256 projectId => mapping(uint256 round => Round)) internal _rounds;
    mapping(uint256 projectId => mapping(uint256 round => mapping(uint256 index => Dispute))) internal _disputes;
    /// @dev Per trainer: stake left plus one, so that 0 means "not registered".
    mapping(uint256 projectId => mapping(address trainer => uint256)) internal _registration;
    /// @dev Commitment per (project, round, trainer); REVEALED once revealed, FORFEITED once its
    /// deposit was taken.
    mapping(uint256 projectId => mapping(uint256 round => mapping(address trainer => bytes32))) internal
        _commitments;
    mapping(uint256 projectId => mapping(address trainer => uint256)) internal _claimed;
    /// @dev What each revealer already took from its round's pool.
    mapping(uint256 projectId => mapping(uint256 round => mapping(address trainer => uint256))) internal _poolPaid;
    /// @dev Pull payments owed outside the reward tree.
    mapping(uint256 projectId => mapping(address account => uint256)) internal _credits;

    bytes32 internal constant REVEALED = bytes32(uint256(1));
    bytes32 internal constant FORFEITED = bytes32(uint256(2));

    uint8 internal constant MIN_STAKE = 0;
    uint8 internal constant MIN_DISPUTE_BOND = 1;
    uint8 internal constant MIN_AGGREGATOR_BOND = 2;
    uint8 internal constant MIN_COMMIT_DEPOSIT = 3;

    function _project(uint256 projectId) internal view returns (Project storage p) {
        p = _projects[projectId];
        // numRounds is never 0 once created (ZeroRounds) and shares its slot with the fields most
        // paths read anyway (aggregator, challengeWindow, endedAt): a claim skips a cold load.
        if (p.numRounds == 0) revert UnknownProject(projectId);
    }

    // ------------------------------------------------------------------ owner

    /// @notice Create a project and escrow its whole budget (`numRounds * rewardPerRound`).
    /// @dev For ETH send exactly the budget as value; for an ERC-20 approve it first and send no value.
    /// @param params The project's configuration; see ProjectParams.
    /// @return projectId The new project's id (ids start at 1).
    function createProject(ProjectParams calldata params) external payable nonReentrant returns (uint256 projectId) {
        _checkParams(params);
        uint256 budget = uint256(params.rewardPerRound) * params.numRounds;

        projectId = ++projectCount;
        Project storage p = _projects[projectId];
        p.owner = msg.sender;
        p.openedAt = uint40(block.number);
        p.token = params.token;
        p.commitWindow = params.commitWindow;
        p.revealWindow = params.revealWindow;
        p.finalizeWindow = params.finalizeWindow;
        p.aggregator = params.aggregator;
        p.numRounds = params.numRounds;
        p.challengeWindow = params.challengeWindow;
        p.arbiter = params.arbiter;
        p.claimWindow = params.claimWindow;
        p.ruleWindow = params.ruleWindow;
        p.commitDeposit = params.commitDeposit;
        p.rewardPerRound = params.rewardPerRound;
        p.stake = params.stake;
        p.unallocated = uint128(budget);
        p.budget = uint128(budget);
        p.disputeBond = params.disputeBond;
        p.aggregatorBond = params.aggregatorBond;

        emit ProjectCreated(projectId, msg.sender, params.token, budget, params.specCID);
        emit RoundOpened(projectId, 0, block.number);

        _pullExact(params.token, budget);
    }

    function _checkParams(ProjectParams calldata params) internal view {
        if (params.numRounds == 0) revert ZeroRounds();
        uint256 reward = params.rewardPerRound;
        if (reward == 0) revert ZeroReward();
        if (params.commitWindow == 0) revert WindowTooShort(0, 1);
        if (params.revealWindow == 0) revert WindowTooShort(0, 1);
        if (params.finalizeWindow == 0) revert WindowTooShort(0, 1);
        if (params.ruleWindow == 0) revert WindowTooShort(0, 1);
        if (params.claimWindow == 0) revert WindowTooShort(0, 1);
        if (params.challengeWindow < MIN_CHALLENGE_WINDOW) {
            revert WindowTooShort(params.challengeWindow, MIN_CHALLENGE_WINDOW);
        }
        // Round r + 1 opens when r is finalized and must be finalized by its own deadline, which
        // needs r settled first: r's whole settlement must fit before that deadline.
        uint256 settlement = uint256(params.challengeWindow) + params.ruleWindow;
        uint256 room = uint256(params.commitWindow) + params.revealWindow + params.finalizeWindow;
        if (settlement >= room) revert SettlementDoesNotFit(settlement, room);
        address agg = params.aggregator;
        address arb = params.arbiter;
        if (agg == address(0) || agg == msg.sender) revert RolesNotDistinct(agg);
        if (arb == address(0) || arb == msg.sender || arb == agg) revert RolesNotDistinct(arb);
        if (bytes(params.specCID).length == 0) revert EmptyCID();
        uint256 budget = reward * params.numRounds;
        if (budget > type(uint96).max) revert BudgetTooLarge(budget);
        _atLeast(MIN_DISPUTE_BOND, params.disputeBond, _floor(reward, MIN_BOND_DIVISOR));
        _atLeast(MIN_AGGREGATOR_BOND, params.aggregatorBond, _floor(reward, MIN_AGGREGATOR_BOND_DIVISOR));
        _atLeast(MIN_COMMIT_DEPOSIT, params.commitDeposit, _floor(reward, MIN_DEPOSIT_DIVISOR));
        _atLeast(MIN_STAKE, params.stake, params.commitDeposit);
    }

    function _floor(uint256 reward, uint256 divisor) internal pure returns (uint256) {
        uint256 m = reward / divisor;
        return m == 0 ? 1 : m;
    }

    function _atLeast(uint8 what, uint256 given, uint256 minimum) internal pure {
        if (given < minimum) revert BelowMinimum(what, given, minimum);
    }

    /// @notice Start handing the project over to `newOwner`; it must call acceptProjectOwnership.
    /// @param projectId The project.
    /// @param newOwner The proposed owner (address(0) cancels a pending hand-over).
    function transferProjectOwnership(uint256 projectId, address newOwner) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner) revert NotOwner(projectId, msg.sender);
        p.pendingOwner = newOwner;
        emit ProjectOwnershipTransferStarted(projectId, msg.sender, newOwner);
    }

    /// @notice Accept a pending hand-over. The new owner may not hold another role or be a trainer.
    /// @param projectId The project.
    function acceptProjectOwnership(uint256 projectId) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.pendingOwner) revert NotPendingOwner(projectId, msg.sender);
        if (msg.sender == p.aggregator || msg.sender == p.arbiter || _registration[projectId][msg.sender] != 0) {
            revert RolesNotDistinct(msg.sender);
        }
        address previous = p.owner;
        p.owner = msg.sender;
        p.pendingOwner = address(0);
        emit ProjectOwnershipTransferred(projectId, previous, msg.sender);
    }

    /// @notice Replace the aggregator after it let a round with reveals expire, or the arbiter after
    /// it let a dispute lapse. Only the owner, and only then: a working role cannot be swapped out.
    /// @dev A re-posted bond of the replaced aggregator is credited back to it: the round it missed
    /// is the latest one, so no round it finalized can still be disputed.
    /// @param projectId The project.
    /// @param role Which role.
    /// @param replacement The new holder (not the owner, the other role, or a trainer).
    function replaceRole(uint256 projectId, Role role, address replacement) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner) revert NotOwner(projectId, msg.sender);
        if (p.endedAt != 0) revert ProjectEndedAlready(projectId);
        if (
            replacement == address(0) || replacement == p.owner || replacement == p.aggregator
                || replacement == p.arbiter || _registration[projectId][replacement] != 0
        ) revert RolesNotDistinct(replacement);
        address previous = address(0);
        if (role == Role.Aggregator) {
            if (!p.aggregatorMissed) revert RoleNotMissed(projectId, role);
            previous = p.aggregator;
            uint256 bond = p.bondHeld;
            p.aggregator = replacement;
            p.aggregatorMissed = false;
            p.bondHeld = 0;
            emit RoleReplaced(projectId, role, previous, replacement);
            if (bond != 0) _credit(projectId, previous, bond);
        } else {
            if (!p.arbiterMissed) revert RoleNotMissed(projectId, role);
            previous = p.arbiter;
            p.arbiter = replacement;
            p.arbiterMissed = false;
            emit RoleReplaced(projectId, role, previous, replacement);
        }
    }

    /// @notice End the project once every round is finalized or expired and the last one is
    /// settled. Anyone may call it: nobody's stake depends on the owner. Returns the never-allocated
    /// budget to the owner (paid if the owner calls, credited otherwise) and credits the aggregator's
    /// bond back to it.
    /// @param projectId The project.
    function endProject(uint256 projectId) external nonReentrant {
        Project storage p = _project(projectId);
        if (p.endedAt != 0) revert ProjectEndedAlready(projectId);
        uint256 n = p.numRounds;
        if (p.currentRound < n) revert RoundsRemaining(projectId, p.currentRound, n);
        uint256 settles = _settlesAfter(projectId, p, n - 1);
        if (block.number <= settles) revert RoundUnsettled(projectId, n - 1, settles);

        uint256 returned = p.unallocated;
        uint256 bond = p.bondHeld;
        p.unallocated = 0;
        p.bondHeld = 0;
        p.endedAt = uint32(block.number);
        emit ProjectEnded(projectId, returned);
        if (bond != 0) _credit(projectId, p.aggregator, bond);
        address owner_ = p.owner;
        if (msg.sender == owner_) _pay(p.token, owner_, returned);
        else if (returned != 0) _credit(projectId, owner_, returned);
    }

    /// @notice After the claim deadline, credit the owner with what no leaf claimed. Anyone may call.
    /// @param projectId The project.
    function sweep(uint256 projectId) external {
        Project storage p = _project(projectId);
        uint256 ended = p.endedAt;
        if (ended == 0) revert ProjectNotEnded(projectId);
        uint256 deadline = ended + p.claimWindow;
        if (block.number <= deadline) revert ClaimsStillOpen(projectId, deadline);
        if (p.swept) revert ClaimsClosed(projectId, deadline);
        uint256 amount = uint256(p.allocated) - p.claimed;
        p.swept = true;
        emit Swept(projectId, amount);
        if (amount != 0) _credit(projectId, p.owner, amount);
    }

    // ------------------------------------------------------------------ trainers

    /// @notice Register as a trainer, staking `stake` (ETH value, or approved token). Role holders
    /// cannot be trainers.
    /// @param projectId The project.
    function register(uint256 projectId) external payable nonReentrant {
        Project storage p = _project(projectId);
        if (p.endedAt != 0) revert ProjectEndedAlready(projectId);
        if (msg.sender == p.owner || msg.sender == p.aggregator || msg.sender == p.arbiter) {
            revert RolesNotDistinct(msg.sender);
        }
        if (_registration[projectId][msg.sender] != 0) revert AlreadyRegistered(projectId, msg.sender);
        uint128 stake = p.stake;
        _registration[projectId][msg.sender] = uint256(stake) + 1;
        p.stakesHeld += stake;
        emit TrainerRegistered(projectId, msg.sender, stake);
        _pullExact(p.token, stake);
    }

    /// @notice Commit to an update for the open round before its commit deadline. The stake left must
    /// cover the commit deposit, which is lost if the commitment is not revealed.
    /// @param projectId The project.
    /// @param round The round (must be the open one).
    /// @param commitment `commitmentOf(projectId, round, trainer, cid, digest, salt)`.
    function commit(uint256 projectId, uint256 round, bytes32 commitment) external {
        Project storage p = _project(projectId);
        uint256 reg = _registration[projectId][msg.sender];
        if (reg == 0) revert NotRegistered(projectId, msg.sender);
        // currentRound == numRounds once every round is closed: that round does not exist.
        if (round != p.currentRound || round >= p.numRounds) revert RoundNotOpen(projectId, round, p.currentRound);
        uint256 deadline = uint256(p.openedAt) + p.commitWindow;
        if (block.number > deadline) revert CommitClosed(projectId, round, deadline);
        if (uint256(commitment) <= uint256(FORFEITED)) revert InvalidCommitment();
        if (reg - 1 < p.commitDeposit) revert StakeBelowDeposit(projectId, reg - 1, p.commitDeposit);
        mapping(address => bytes32) storage slot = _commitments[projectId][round];
        if (slot[msg.sender] != bytes32(0)) revert AlreadyCommitted(projectId, round, msg.sender);
        slot[msg.sender] = commitment;
        emit UpdateCommitted(projectId, round, msg.sender, commitment);
    }

    /// @notice Reveal a committed update after the commit deadline and before the reveal deadline.
    /// @param projectId The project.
    /// @param round The round.
    /// @param cid IPFS CID of the update.
    /// @param digest sha256 of the update's bytes.
    /// @param salt The secret salt used in the commitment.
    function reveal(uint256 projectId, uint256 round, string calldata cid, bytes32 digest, bytes32 salt) external {
        Project storage p = _project(projectId);
        if (round != p.currentRound || round >= p.numRounds) revert RoundNotOpen(projectId, round, p.currentRound);
        uint256 commitDeadline = uint256(p.openedAt) + p.commitWindow;
        if (block.number <= commitDeadline) revert RevealNotOpen(projectId, round, commitDeadline);
        uint256 revealDeadline = commitDeadline + p.revealWindow;
        if (block.number > revealDeadline) revert RevealClosed(projectId, round, revealDeadline);
        mapping(address => bytes32) storage slot = _commitments[projectId][round];
        bytes32 committed = slot[msg.sender];
        if (committed == bytes32(0) || committed == FORFEITED) revert NotCommitted(projectId, round, msg.sender);
        if (committed == REVEALED) revert AlreadyRevealed(projectId, round, msg.sender);
        if (committed != commitmentOf(projectId, round, msg.sender, cid, digest, salt)) {
            revert RevealMismatch(projectId, round, msg.sender);
        }
        slot[msg.sender] = REVEALED;
        p.reveals += 1;
        emit UpdateRevealed(projectId, round, msg.sender, cid, digest);
    }

    /// @notice Take the commit deposit of `trainer`, who committed to `round` and did not reveal by
    /// its reveal deadline, from its stake into the round's pool (shared by the round's revealers;
    /// with none, into the unallocated budget). Anyone may call it until the project ends.
    /// @param projectId The project.
    /// @param round The round.
    /// @param trainer The trainer that did not reveal.
    function forfeitDeposit(uint256 projectId, uint256 round, address trainer) external {
        Project storage p = _project(projectId);
        if (p.endedAt != 0) revert ProjectEndedAlready(projectId);
        if (round >= p.currentRound) {
            uint256 revealDeadline = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
            if (round > p.currentRound || block.number <= revealDeadline) {
                revert RevealStillOpen(projectId, round, revealDeadline);
            }
        }
        mapping(address => bytes32) storage slot = _commitments[projectId][round];
        bytes32 c = slot[trainer];
        if (c == bytes32(0) || c == FORFEITED) revert NotCommitted(projectId, round, trainer);
        if (c == REVEALED) revert AlreadyRevealed(projectId, round, trainer);
        uint256 left = _registration[projectId][trainer] - 1;
        uint256 amount = left < p.commitDeposit ? left : p.commitDeposit;
        slot[trainer] = FORFEITED;
        _registration[projectId][trainer] -= amount;
        p.stakesHeld -= uint128(amount);
        emit DepositForfeited(projectId, round, trainer, amount);
        uint256 reveals = round == p.currentRound ? p.reveals : _rounds[projectId][round].reveals;
        _toPool(projectId, p, round, reveals, amount);
    }

    /// @notice Pull the cumulative reward proven against a settled round's root to `trainer`;
    /// anyone may trigger it.
    /// @param projectId The project.
    /// @param round A settled finalized round.
    /// @param trainer The leaf's account, and the beneficiary.
    /// @param cumulative The trainer's cumulative entitlement in that round's tree.
    /// @param proof Merkle proof of `keccak256(bytes.concat(keccak256(abi.encode(trainer, cumulative))))`.
    function claim(uint256 projectId, uint256 round, address trainer, uint256 cumulative, bytes32[] calldata proof)
        external
        nonReentrant
    {
        _claim(projectId, round, trainer, cumulative, proof, trainer);
    }

    /// @notice Pull the caller's cumulative reward to `recipient` (for example when the token blocks
    /// the trainer's own address).
    /// @param projectId The project.
    /// @param round A settled finalized round.
    /// @param cumulative The caller's cumulative entitlement in that round's tree.
    /// @param proof Merkle proof of the caller's leaf.
    /// @param recipient Who receives the payment.
    function claimTo(
        uint256 projectId,
        uint256 round,
        uint256 cumulative,
        bytes32[] calldata proof,
        address recipient
    ) external nonReentrant {
        if (recipient == address(0)) revert ZeroRecipient();
        _claim(projectId, round, msg.sender, cumulative, proof, recipient);
    }

    function _claim(
        uint256 projectId,
        uint256 round,
        address trainer,
        uint256 cumulative,
        bytes32[] calldata proof,
        address recipient
    ) internal {
        (Project storage p, uint256 payout) = _payout(projectId, round, trainer, cumulative, proof);
        _claimed[projectId][trainer] = cumulative;
        p.claimed += uint128(payout);
        emit RewardClaimed(projectId, round, trainer, cumulative, payout, recipient);
        _pay(p.token, recipient, payout);
    }

    /// @dev What a valid claim of `trainer`'s leaf through `round` pays now (reverts otherwise).
    function _payout(uint256 projectId, uint256 round, address trainer, uint256 cumulative, bytes32[] calldata proof)
        internal
        view
        returns (Project storage p, uint256 payout)
    {
        p = _project(projectId);
        _requireClaimsOpen(projectId, p);
        Round storage r = _rounds[projectId][round];
        _requireClaimable(projectId, p, r, round);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(trainer, cumulative))));
        if (!MerkleProof.verifyCalldata(proof, r.rewardsRoot, leaf)) revert InvalidProof(projectId, round, trainer);
        uint256 already = _claimed[projectId][trainer];
        if (cumulative <= already) revert NothingToClaim(projectId, trainer, cumulative, already);
        payout = cumulative - already;
        // A root cannot pay out more than the project allocated up to its round, whatever it holds.
        uint256 cap = r.cumulativeAllocated;
        uint256 available = cap > p.claimed ? cap - p.claimed : 0;
        if (payout > available) revert ClaimExceedsAllocation(projectId, payout, available);
    }

    /// @notice Take the caller's share of a closed round's pool (slashed aggregator bond, forfeited
    /// deposits): pool / reveals, less what it already took. Only the round's revealers.
    /// @param projectId The project.
    /// @param round A finalized or expired round the caller revealed in.
    /// @param recipient Who receives the payment.
    function claimPoolShare(uint256 projectId, uint256 round, address recipient) external nonReentrant {
        if (recipient == address(0)) revert ZeroRecipient();
        Project storage p = _project(projectId);
        Round storage r = _rounds[projectId][round];
        if (r.status == RoundStatus.None || _commitments[projectId][round][msg.sender] != REVEALED) {
            revert NothingToWithdraw(projectId, msg.sender);
        }
        uint256 share = uint256(r.pool) / r.reveals;
        uint256 paid = _poolPaid[projectId][round][msg.sender];
        if (share <= paid) revert NothingToWithdraw(projectId, msg.sender);
        uint256 amount = share - paid;
        _poolPaid[projectId][round][msg.sender] = share;
        p.pools -= uint128(amount);
        emit PoolShareClaimed(projectId, round, msg.sender, amount, recipient);
        _pay(p.token, recipient, amount);
    }

    /// @notice Withdraw the stake left once the project has ended.
    /// @param projectId The project.
    function withdrawStake(uint256 projectId) external nonReentrant {
        _withdrawStake(projectId, msg.sender);
    }

    /// @notice Withdraw the caller's stake left once the project has ended to `recipient` (for
    /// example when the token blocks the trainer's own address).
    /// @param projectId The project.
    /// @param recipient Who receives the payment.
    function withdrawStakeTo(uint256 projectId, address recipient) external nonReentrant {
        if (recipient == address(0)) revert ZeroRecipient();
        _withdrawStake(projectId, recipient);
    }

    function _withdrawStake(uint256 projectId, address recipient) internal {
        Project storage p = _project(projectId);
        if (p.endedAt == 0) revert ProjectNotEnded(projectId);
        uint256 reg = _registration[projectId][msg.sender];
        if (reg <= 1) revert NothingToWithdraw(projectId, msg.sender);
        uint256 amount = reg - 1;
        _registration[projectId][msg.sender] = 1; // still registered, nothing staked
        p.stakesHeld -= uint128(amount);
        emit StakeWithdrawn(projectId, msg.sender, amount, recipient);
        _pay(p.token, recipient, amount);
    }

    /// @notice Withdraw the caller's credits (refunded and forfeited bonds, returned budget, sweep).
    /// @param projectId The project.
    function withdrawCredit(uint256 projectId) external nonReentrant {
        _withdrawCredit(projectId, msg.sender);
    }

    /// @notice Withdraw the caller's credits to `recipient` (for example when the token blocks the
    /// caller's own address: an owner that cannot be paid lets anyone else end the project, which
    /// credits the returned budget, then withdraws it here).
    /// @param projectId The project.
    /// @param recipient Who receives the payment.
    function withdrawCreditTo(uint256 projectId, address recipient) external nonReentrant {
        if (recipient == address(0)) revert ZeroRecipient();
        _withdrawCredit(projectId, recipient);
    }

    function _withdrawCredit(uint256 projectId, address recipient) internal {
        Project storage p = _project(projectId);
        uint256 amount = _credits[projectId][msg.sender];
        if (amount == 0) revert NothingToWithdraw(projectId, msg.sender);
        _credits[projectId][msg.sender] = 0;
        emit CreditWithdrawn(projectId, msg.sender, amount, recipient);
        _pay(p.token, recipient, amount);
    }

    // ------------------------------------------------------------------ aggregator

    /// @notice Post the aggregator bond (ETH value, or approved token); required before finalizing.
    /// @param projectId The project.
    function postBond(uint256 projectId) external payable nonReentrant {
        Project storage p = _project(projectId);
        if (msg.sender != p.aggregator) revert NotAggregator(projectId, msg.sender);
        if (p.endedAt != 0) revert ProjectEndedAlready(projectId);
        if (p.bondHeld != 0) revert BondAlreadyPosted(projectId);
        uint128 bond = p.aggregatorBond;
        p.bondHeld = bond;
        emit AggregatorBonded(projectId, msg.sender, bond);
        _pullExact(p.token, bond);
    }

    /// @notice Finalize the open round: publish the new model, the round record and the cumulative
    /// rewards root, allocate the round's fixed allocation (`roundAllocation`), open the next round.
    /// @dev Allowed after the reveal deadline and until the finalize deadline, once the previous
    /// round is settled, with the aggregator's bond posted.
    /// @param projectId The project.
    /// @param round The open round.
    /// @param modelCID CID of the new global model.
    /// @param recordCID CID of the round record.
    /// @param rewardsRoot Root of the cumulative-rewards tree after this round.
    /// @param allocation Must equal `roundAllocation(projectId)`: the tree is built for that amount.
    function finalizeRound(
        uint256 projectId,
        uint256 round,
        string calldata modelCID,
        string calldata recordCID,
        bytes32 rewardsRoot,
        uint256 allocation
    ) external {
        Project storage p = _project(projectId);
        _requireFinalizable(projectId, p, round);
        if (rewardsRoot == bytes32(0)) revert EmptyRoot();
        if (bytes(modelCID).length == 0 || bytes(recordCID).length == 0) revert EmptyCID();
        uint256 expected = _allocationOf(p, round);
        if (allocation != expected) revert AllocationMismatch(expected, allocation);

        uint128 allocated = p.allocated + uint128(allocation);
        p.allocated = allocated;
        p.unallocated -= uint128(allocation);
        Round storage r = _rounds[projectId][round];
        r.finalizedAt = uint32(block.number);
        r.status = RoundStatus.Finalized;
        r.allocation = uint96(allocation);
        r.cumulativeAllocated = uint96(allocated);
        r.reveals = p.reveals;
        r.rewardsRoot = rewardsRoot;
        if (p.aggregatorMissed) p.aggregatorMissed = false;
        p.currentRound = uint32(round + 1);
        p.openedAt = uint40(block.number);
        p.reveals = 0;
        emit RoundFinalized(projectId, round, modelCID, recordCID, rewardsRoot, allocation);
        if (round + 1 < p.numRounds) emit RoundOpened(projectId, round + 1, block.number);
    }

    function _requireFinalizable(uint256 projectId, Project storage p, uint256 round) internal view {
        if (msg.sender != p.aggregator) revert NotAggregator(projectId, msg.sender);
        uint256 current = p.currentRound;
        if (round != current || current >= p.numRounds) revert RoundNotOpen(projectId, round, current);
        uint256 revealDeadline = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        if (block.number <= revealDeadline) revert RevealStillOpen(projectId, round, revealDeadline);
        uint256 deadline = revealDeadline + p.finalizeWindow;
        if (block.number > deadline) revert FinalizeClosed(projectId, round, deadline);
        if (round > 0) {
            uint256 settles = _settlesAfter(projectId, p, round - 1);
            if (block.number <= settles) revert RoundUnsettled(projectId, round - 1, settles);
        }
        if (p.bondHeld == 0) revert BondNotPosted(projectId, p.aggregatorBond);
    }

    /// @notice Close the open round without a finalize: after its finalize deadline, or right after
    /// its reveal deadline when nobody revealed (once the previous round is settled). Anyone may call it. Default outcome: the round
    /// allocates nothing (its share rolls over to the next round, or back to the owner after the
    /// last); if someone revealed, the aggregator's bond is slashed to the revealers and the owner may
    /// replace the aggregator. The next round opens.
    /// @param projectId The project.
    /// @param round The open round.
    function expireRound(uint256 projectId, uint256 round) external {
        Project storage p = _project(projectId);
        uint256 current = p.currentRound;
        if (round != current || current >= p.numRounds) revert RoundNotOpen(projectId, round, current);
        uint256 revealDeadline = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        uint256 reveals = p.reveals;
        uint256 expiresAfter = reveals == 0 ? revealDeadline : revealDeadline + p.finalizeWindow;
        if (block.number <= expiresAfter) revert FinalizeStillOpen(projectId, round, expiresAfter);
        // An empty round may close before its finalize deadline: it must not close (and so let the
        // project end) while the previous round can still be disputed or ruled.
        if (current > 0) {
            uint256 settles = _settlesAfter(projectId, p, current - 1);
            if (block.number <= settles) revert RoundUnsettled(projectId, current - 1, settles);
        }

        Round storage r = _rounds[projectId][round];
        r.finalizedAt = uint32(block.number);
        r.status = RoundStatus.Expired;
        r.reveals = uint24(reveals);
        r.cumulativeAllocated = uint96(p.allocated);
        uint256 slashed = 0;
        if (reveals != 0) {
            slashed = p.bondHeld;
            p.bondHeld = 0;
            p.aggregatorMissed = true;
        }
        p.currentRound = uint32(current + 1);
        p.openedAt = uint40(block.number);
        p.reveals = 0;
        emit RoundExpired(projectId, round, slashed);
        if (slashed != 0) {
            emit AggregatorSlashed(projectId, round, p.aggregator, slashed);
            _toPool(projectId, p, round, reveals, slashed);
        }
        if (current + 1 < p.numRounds) emit RoundOpened(projectId, current + 1, block.number);
    }

    // ------------------------------------------------------------------ disputes

    /// @notice Dispute a finalized round inside its challenge window, with evidence and the project's
    /// bond. Only stakeholders (the owner or a registered trainer). Any number of disputes per round;
    /// each is ruled on its own; none blocks another.
    /// @param projectId The project.
    /// @param round The finalized round.
    /// @param evidenceCID IPFS CID of the evidence (for example a failing audit report).
    /// @return index The dispute's index in the round.
    function dispute(uint256 projectId, uint256 round, string calldata evidenceCID)
        external
        payable
        nonReentrant
        returns (uint256 index)
    {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner && _registration[projectId][msg.sender] == 0) {
            revert NotStakeholder(projectId, msg.sender);
        }
        if (bytes(evidenceCID).length == 0) revert EmptyCID();
        Round storage r = _rounds[projectId][round];
        RoundStatus s = r.status;
        if (s == RoundStatus.None || s == RoundStatus.Expired) revert RoundNotFinalized(projectId, round);
        uint256 closesAt = uint256(r.finalizedAt) + p.challengeWindow;
        if (block.number > closesAt) revert ChallengeWindowClosed(projectId, round, closesAt);
        uint128 bond = p.disputeBond;
        index = r.disputeCount;
        r.disputeCount = uint32(index + 1);
        r.pendingDisputes += 1;
        r.status = RoundStatus.Disputed;
        _disputes[projectId][round][index] = Dispute({disputer: msg.sender, status: DisputeStatus.Pending, bond: bond});
        emit RoundDisputed(projectId, round, index, msg.sender, evidenceCID, bond);
        _pullExact(p.token, bond);
    }

    /// @notice Rule on a dispute by the ruling deadline (`challenge window + ruleWindow`). Upheld: the
    /// round's root is replaced by `correctedRoot` (its allocation is unchanged), the bond is
    /// credited back and the aggregator's bond is slashed to the round's revealers. Dismissed: the
    /// round stands and the bond is credited to the aggregator.
    /// @param projectId The project.
    /// @param round The disputed round.
    /// @param index The dispute.
    /// @param upheld Whether the dispute is upheld.
    /// @param reasonCID IPFS CID of the arbiter's reasoning.
    /// @param correctedRoot The corrected cumulative-rewards root (upheld only; ignored otherwise).
    function resolveDispute(
        uint256 projectId,
        uint256 round,
        uint256 index,
        bool upheld,
        string calldata reasonCID,
        bytes32 correctedRoot
    ) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.arbiter) revert NotArbiter(projectId, msg.sender);
        Dispute storage d = _disputes[projectId][round][index];
        if (d.status != DisputeStatus.Pending) revert DisputeNotPending(projectId, round, index);
        Round storage r = _rounds[projectId][round];
        uint256 deadline = uint256(r.finalizedAt) + p.challengeWindow + p.ruleWindow;
        if (block.number > deadline) revert RulingClosed(projectId, round, deadline);
        if (upheld && correctedRoot == bytes32(0)) revert EmptyRoot();
        uint256 slashed = 0;
        if (upheld) {
            d.status = DisputeStatus.Upheld;
            r.rewardsRoot = correctedRoot;
            r.corrected = true;
            slashed = p.bondHeld;
            p.bondHeld = 0;
        } else {
            d.status = DisputeStatus.Dismissed;
            correctedRoot = bytes32(0);
        }
        _closeDispute(r);
        emit DisputeResolved(projectId, round, index, upheld, reasonCID, correctedRoot);
        if (upheld) {
            _credit(projectId, d.disputer, d.bond);
            if (slashed != 0) {
                emit AggregatorSlashed(projectId, round, p.aggregator, slashed);
                _toPool(projectId, p, round, r.reveals, slashed);
            }
        } else {
            _credit(projectId, p.aggregator, d.bond);
        }
    }

    /// @notice Close a dispute the arbiter did not rule on by the ruling deadline. Anyone may call
    /// it. Default outcome: the round stands as it is, the bond is credited back to the disputer
    /// (the silence is not its fault), and the owner may replace the arbiter.
    /// @param projectId The project.
    /// @param round The round.
    /// @param index The dispute.
    function lapseDispute(uint256 projectId, uint256 round, uint256 index) external {
        Project storage p = _project(projectId);
        Dispute storage d = _disputes[projectId][round][index];
        if (d.status != DisputeStatus.Pending) revert DisputeNotPending(projectId, round, index);
        Round storage r = _rounds[projectId][round];
        uint256 deadline = uint256(r.finalizedAt) + p.challengeWindow + p.ruleWindow;
        if (block.number <= deadline) revert RulingStillOpen(projectId, round, deadline);
        d.status = DisputeStatus.Lapsed;
        p.arbiterMissed = true;
        _closeDispute(r);
        emit DisputeLapsed(projectId, round, index);
        _credit(projectId, d.disputer, d.bond);
    }

    // ------------------------------------------------------------------ views

    /// @notice The commitment a trainer must post: binds the update's CID and digest to the trainer,
    /// the project and the round, so a copied commitment or reveal is worthless to anyone else.
    function commitmentOf(
        uint256 projectId,
        uint256 round,
        address trainer,
        string calldata cid,
        bytes32 digest,
        bytes32 salt
    ) public pure returns (bytes32) {
        return keccak256(abi.encode(projectId, round, trainer, keccak256(bytes(cid)), digest, salt));
    }

    /// @notice The project record.
    function getProject(uint256 projectId) external view returns (Project memory) {
        return _project(projectId);
    }

    /// @notice A round's record (status None if neither finalized nor expired).
    function getRound(uint256 projectId, uint256 round) external view returns (Round memory) {
        return _rounds[projectId][round];
    }

    /// @notice One dispute of a round.
    function getDispute(uint256 projectId, uint256 round, uint256 index) external view returns (Dispute memory) {
        return _disputes[projectId][round][index];
    }

    /// @notice Deadlines of the open round: commits while block <= commitDeadline, reveals while
    /// commitDeadline < block <= revealDeadline, finalize while revealDeadline < block <= finalizeDeadline.
    function roundDeadlines(uint256 projectId)
        external
        view
        returns (uint256 round, uint256 openedAt, uint256 commitDeadline, uint256 revealDeadline)
    {
        Project storage p = _project(projectId);
        round = p.currentRound;
        openedAt = p.openedAt;
        commitDeadline = openedAt + p.commitWindow;
        revealDeadline = commitDeadline + p.revealWindow;
    }

    /// @notice The fixed allocation of the open round: its share plus everything rolled over, less
    /// the shares reserved for later rounds (0 once no round is open).
    function roundAllocation(uint256 projectId) external view returns (uint256) {
        Project storage p = _project(projectId);
        if (p.currentRound >= p.numRounds) return 0;
        return _allocationOf(p, p.currentRound);
    }

    /// @notice Last block at which `round` may still be unsettled: claims through it, and the next
    /// finalize, wait until after it. 0 for an expired round.
    function settlesAfter(uint256 projectId, uint256 round) external view returns (uint256) {
        return _settlesAfter(projectId, _project(projectId), round);
    }

    /// @notice 0 = none, 1 = committed, 2 = revealed, 3 = deposit forfeited.
    function commitmentState(uint256 projectId, uint256 round, address trainer) external view returns (uint8) {
        bytes32 c = _commitments[projectId][round][trainer];
        if (c == bytes32(0)) return 0;
        if (c == REVEALED) return 2;
        return c == FORFEITED ? 3 : 1;
    }

    /// @notice Whether `trainer` is registered, and its stake still held.
    function registration(uint256 projectId, address trainer) external view returns (bool registered, uint256 stake) {
        uint256 reg = _registration[projectId][trainer];
        registered = reg != 0;
        stake = reg == 0 ? 0 : reg - 1;
    }

    /// @notice Cumulative amount already paid to `trainer`.
    function claimedBy(uint256 projectId, address trainer) external view returns (uint256) {
        return _claimed[projectId][trainer];
    }

    /// @notice Pull-payment credit of `account`.
    function creditOf(uint256 projectId, address account) external view returns (uint256) {
        return _credits[projectId][account];
    }

    /// @notice What `trainer` may take now from `round`'s pool.
    function poolShareOf(uint256 projectId, uint256 round, address trainer) external view returns (uint256) {
        Round storage r = _rounds[projectId][round];
        if (r.status == RoundStatus.None || _commitments[projectId][round][trainer] != REVEALED) return 0;
        uint256 share = uint256(r.pool) / r.reveals;
        uint256 paid = _poolPaid[projectId][round][trainer];
        return share > paid ? share - paid : 0;
    }

    // ------------------------------------------------------------------ internals

    function _settlesAfter(uint256 projectId, Project storage p, uint256 round) internal view returns (uint256) {
        Round storage r = _rounds[projectId][round];
        RoundStatus s = r.status;
        if (s == RoundStatus.Expired) return 0;
        uint256 closesAt = uint256(r.finalizedAt) + p.challengeWindow;
        if (s == RoundStatus.Disputed) return closesAt + p.ruleWindow;
        return closesAt;
    }

    /// @dev Everything unallocated less the shares of later rounds, so a round's allocation follows
    /// from the parameters and the history alone. Rounds store allocations as uint96: the budget
    /// fits, and the running total is kept storable.
    function _allocationOf(Project storage p, uint256 round) internal view returns (uint256 available) {
        available = uint256(p.unallocated) - uint256(p.rewardPerRound) * (p.numRounds - round - 1);
        uint256 room = type(uint96).max - uint256(p.allocated);
        if (available > room) available = room;
    }

    function _requireClaimsOpen(uint256 projectId, Project storage p) internal view {
        uint256 ended = p.endedAt;
        if (ended != 0) {
            uint256 deadline = ended + p.claimWindow;
            if (block.number > deadline) revert ClaimsClosed(projectId, deadline);
        }
    }

    function _requireClaimable(uint256 projectId, Project storage p, Round storage r, uint256 round) internal view {
        RoundStatus s = r.status;
        if (s == RoundStatus.None || s == RoundStatus.Expired) revert RoundNotClaimable(projectId, round, 0);
        uint256 settles = uint256(r.finalizedAt) + p.challengeWindow;
        if (s == RoundStatus.Disputed) settles += p.ruleWindow;
        if (block.number <= settles) revert RoundNotClaimable(projectId, round, settles + 1);
    }

    function _closeDispute(Round storage r) internal {
        uint32 pending = r.pendingDisputes - 1;
        r.pendingDisputes = pending;
        if (pending == 0) r.status = r.corrected ? RoundStatus.Corrected : RoundStatus.Dismissed;
    }

    /// @dev Add `amount` to `round`'s pool for its revealers; with none, to the unallocated budget
    /// (never back to the party that lost it).
    function _toPool(uint256 projectId, Project storage p, uint256 round, uint256 reveals, uint256 amount) internal {
        if (reveals == 0) {
            p.unallocated += uint128(amount);
        } else {
            _rounds[projectId][round].pool += uint128(amount);
            p.pools += uint128(amount);
        }
    }

    function _credit(uint256 projectId, address account, uint256 amount) internal {
        _credits[projectId][account] += amount;
        emit Credited(projectId, account, amount);
    }

    /// @dev Take exactly `amount` from msg.sender: as value for ETH, by transferFrom for a token
    /// (checking the balance delta so fee-on-transfer tokens cannot under-fund the escrow).
    function _pullExact(address token, uint256 amount) internal {
        if (token == address(0)) {
            if (msg.value != amount) revert WrongPayment(amount, msg.value);
            return;
        }
        if (msg.value != 0) revert UnexpectedEther();
        if (amount == 0) return;
        IERC20 t = IERC20(token);
        uint256 before = t.balanceOf(address(this));
        t.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = t.balanceOf(address(this)) - before;
        if (received != amount) revert WrongPayment(amount, received);
    }

    function _pay(address token, address to, uint256 amount) internal {
        if (amount == 0) return;
        if (token == address(0)) Address.sendValue(payable(to), amount);
        else IERC20(token).safeTransfer(to, amount);
    }
}
