// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

/// @title LearningMarket
/// @notice Escrow and round ledger for collaborative-learning projects. A project owner escrows the
/// whole reward budget up front; registered trainers commit to and then reveal model updates each
/// round; the project's aggregator finalizes each round with the new model, a round record and a
/// cumulative-rewards Merkle root; anyone with a stake in the project may dispute a round inside its
/// challenge window, and the project's arbiter settles disputes; trainers pull their cumulative
/// rewards with a Merkle proof. No function loops over trainers.
/// @dev Per-project roles (owner, aggregator, arbiter) are addresses in the project record rather
/// than OpenZeppelin AccessControl roles: AccessControl roles are contract-wide, and one contract
/// serves many projects whose roles must not leak into each other. Ownership of a project is
/// handed over in two steps, as Ownable2Step does.
///
/// Slither notes: `scripts/slither.sh` (slither 0.11.6, all 102 detectors, OpenZeppelin filtered)
/// reports no finding of any impact for this file; the only results are informational ones inside
/// OpenZeppelin (assembly, pragma ranges, solc-version). By design, should a detector change: every
/// deadline is a block number (no `timestamp`); strict equalities compare enum states, roles and
/// commitments, never balances; `_pullExact` compares balances around `transferFrom` on purpose
/// (fee-on-transfer tokens are refused); payments go out last, after the state update, from
/// nonReentrant functions, to the account the state names (pull payments only).
contract LearningMarket is ReentrancyGuard {
    using SafeERC20 for IERC20;

    // ------------------------------------------------------------------ types

    /// @notice Life cycle of a finalized round. States only move forward:
    /// None -> Finalized -> (Disputed -> Voided | Dismissed).
    enum RoundStatus {
        None,
        Finalized,
        Disputed,
        Voided,
        Dismissed
    }

    /// @notice Everything a project needs to be created; passed as one struct to keep the ABI stable.
    struct ProjectParams {
        address token; // address(0) for ETH
        address aggregator;
        address arbiter;
        uint32 numRounds;
        uint32 commitWindow; // blocks during which commits are accepted
        uint32 revealWindow; // blocks after the commit window during which reveals are accepted
        uint32 challengeWindow; // blocks after a finalize during which the round may be disputed
        uint128 rewardPerRound;
        uint128 stake; // per trainer, 0 for none
        uint128 disputeBond; // paid by a disputer, refunded if upheld, forfeited to the pool if not
        string specCID; // IPFS CID of the model spec (architecture, initial weights, validation policy)
    }

    /// @dev Packed so that finalizeRound writes two project slots (round pointer, allocation).
    struct Project {
        // slot 0
        address owner;
        uint32 currentRound; // the round open for commits; == numRounds once every round is finalized
        uint64 openedAt; // block at which currentRound opened
        // slot 1
        address token;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 challengeWindow;
        // slot 2
        address aggregator;
        uint32 numRounds;
        bool ended;
        // slot 3
        address arbiter;
        // slot 4
        address pendingOwner;
        // slot 5
        uint128 rewardPerRound;
        uint128 stake;
        // slot 6
        uint128 unallocated; // budget + forfeits - allocated - returned
        uint128 allocated; // rewards of finalized, non-voided rounds
        // slot 7
        uint128 budget; // deposited by the owner
        uint128 claimed; // rewards paid out
        // slot 8
        uint128 disputeBond;
        uint128 stakesHeld;
    }

    struct Round {
        // slot 0
        uint40 finalizedAt;
        RoundStatus status;
        uint104 allocation; // reward allocated by this round
        uint104 cumulativeAllocated; // project.allocated right after this round was finalized
        // slot 1
        bytes32 rewardsRoot;
    }

    struct Dispute {
        address disputer;
        uint128 bond;
    }

    // ------------------------------------------------------------------ storage

    uint256 public projectCount;
    mapping(uint256 projectId => Project) internal _projects;
    mapping(uint256 projectId => mapping(uint256 round => Round)) internal _rounds;
    mapping(uint256 projectId => mapping(uint256 round => Dispute)) internal _disputes;
    /// @dev Per trainer: staked amount plus one, so that 0 means "not registered" even without a stake.
    mapping(uint256 projectId => mapping(address trainer => uint256)) internal _registration;
    /// @dev Commitment per (project, round, trainer); overwritten with REVEALED once revealed.
    mapping(uint256 projectId => mapping(uint256 round => mapping(address trainer => bytes32))) internal
        _commitments;
    mapping(uint256 projectId => mapping(address trainer => uint256)) internal _claimed;
    /// @dev Pull payments owed outside the reward tree (refunded dispute bonds).
    mapping(uint256 projectId => mapping(address account => uint256)) internal _credits;

    bytes32 internal constant REVEALED = bytes32(uint256(1));

    // ------------------------------------------------------------------ events

    /// @notice A project was created and its budget escrowed.
    event ProjectCreated(
        uint256 indexed projectId, address indexed owner, address indexed token, uint256 budget, ProjectParams params
    );
    /// @notice A round opened for commits at `openedAt`.
    event RoundOpened(uint256 indexed projectId, uint256 indexed round, uint256 openedAt);
    event TrainerRegistered(uint256 indexed projectId, address indexed trainer, uint256 stake);
    event UpdateCommitted(uint256 indexed projectId, uint256 indexed round, address indexed trainer, bytes32 commitment);
    event UpdateRevealed(
        uint256 indexed projectId, uint256 indexed round, address indexed trainer, string cid, bytes32 digest
    );
    event RoundFinalized(
        uint256 indexed projectId,
        uint256 indexed round,
        string modelCID,
        string recordCID,
        bytes32 rewardsRoot,
        uint256 allocation
    );
    event RoundDisputed(uint256 indexed projectId, uint256 indexed round, address indexed disputer, string evidenceCID, uint256 bond);
    event DisputeResolved(uint256 indexed projectId, uint256 indexed round, bool upheld, string reasonCID);
    event RewardClaimed(
        uint256 indexed projectId, uint256 indexed round, address indexed trainer, uint256 cumulative, uint256 paid
    );
    event StakeWithdrawn(uint256 indexed projectId, address indexed trainer, uint256 amount);
    event StakeSlashed(uint256 indexed projectId, address indexed trainer, uint256 amount, string reasonCID);
    event CreditWithdrawn(uint256 indexed projectId, address indexed account, uint256 amount);
    event ProjectEnded(uint256 indexed projectId, uint256 returned);
    event ProjectOwnershipTransferStarted(uint256 indexed projectId, address indexed previousOwner, address indexed newOwner);
    event ProjectOwnershipTransferred(uint256 indexed projectId, address indexed previousOwner, address indexed newOwner);

    // ------------------------------------------------------------------ errors

    error UnknownProject(uint256 projectId);
    error InvalidParams(string what);
    error WrongPayment(uint256 expected, uint256 received);
    error NotOwner(uint256 projectId, address caller);
    error NotPendingOwner(uint256 projectId, address caller);
    error NotAggregator(uint256 projectId, address caller);
    error NotArbiter(uint256 projectId, address caller);
    error NotStakeholder(uint256 projectId, address caller);
    error AlreadyRegistered(uint256 projectId, address trainer);
    error NotRegistered(uint256 projectId, address trainer);
    error ProjectEndedAlready(uint256 projectId);
    error ProjectNotEnded(uint256 projectId);
    error RoundNotOpen(uint256 projectId, uint256 round, uint256 currentRound);
    error CommitClosed(uint256 projectId, uint256 round, uint256 deadline);
    error AlreadyCommitted(uint256 projectId, uint256 round, address trainer);
    error RevealNotOpen(uint256 projectId, uint256 round, uint256 opensAfter);
    error RevealClosed(uint256 projectId, uint256 round, uint256 deadline);
    error NotCommitted(uint256 projectId, uint256 round, address trainer);
    error AlreadyRevealed(uint256 projectId, uint256 round, address trainer);
    error RevealMismatch(uint256 projectId, uint256 round, address trainer);
    error RevealStillOpen(uint256 projectId, uint256 round, uint256 deadline);
    error PreviousRoundUnsettled(uint256 projectId, uint256 round);
    error AllocationTooLarge(uint256 allocation, uint256 available);
    error EmptyRoot();
    error RoundNotFinalized(uint256 projectId, uint256 round);
    error ChallengeWindowOpen(uint256 projectId, uint256 round, uint256 closesAt);
    error ChallengeWindowClosed(uint256 projectId, uint256 round, uint256 closedAt);
    error RoundNotClaimable(uint256 projectId, uint256 round, RoundStatus status);
    error NotDisputed(uint256 projectId, uint256 round);
    error InvalidProof(uint256 projectId, uint256 round, address trainer);
    error NothingToClaim(uint256 projectId, address trainer, uint256 cumulative, uint256 alreadyClaimed);
    error ClaimExceedsAllocation(uint256 projectId, uint256 requested, uint256 available);
    error RoundsRemaining(uint256 projectId, uint256 finalized, uint256 numRounds);
    error NothingToWithdraw(uint256 projectId, address account);
    error UnexpectedEther();

    // ------------------------------------------------------------------ modifiers-as-functions

    function _project(uint256 projectId) internal view returns (Project storage p) {
        p = _projects[projectId];
        if (p.owner == address(0)) revert UnknownProject(projectId);
    }

    // ------------------------------------------------------------------ owner

    /// @notice Create a project and escrow its whole budget (`numRounds * rewardPerRound`).
    /// @dev For ETH send exactly the budget as value; for an ERC-20 approve the budget first and send
    /// no value. Fee-on-transfer tokens are refused: the escrow must hold exactly what it accounts.
    /// @param params The project's configuration; see ProjectParams.
    /// @return projectId The new project's id (ids start at 1).
    function createProject(ProjectParams calldata params) external payable nonReentrant returns (uint256 projectId) {
        if (params.numRounds == 0) revert InvalidParams("numRounds must be > 0");
        if (params.rewardPerRound == 0) revert InvalidParams("rewardPerRound must be > 0");
        if (params.commitWindow == 0 || params.revealWindow == 0 || params.challengeWindow == 0) {
            revert InvalidParams("windows must be > 0 blocks");
        }
        // A round can only be finalized after the previous one's challenge window, and the next round
        // opens at finalize: so the challenge window must fit inside commit + reveal windows or every
        // round stalls waiting for it.
        if (params.challengeWindow > uint256(params.commitWindow) + params.revealWindow) {
            revert InvalidParams("challengeWindow must be <= commitWindow + revealWindow");
        }
        if (params.aggregator == address(0) || params.arbiter == address(0)) {
            revert InvalidParams("aggregator and arbiter must be set");
        }
        if (bytes(params.specCID).length == 0) revert InvalidParams("specCID must be set");
        uint256 budget = uint256(params.rewardPerRound) * params.numRounds;
        if (budget > type(uint104).max) revert InvalidParams("budget too large");

        projectId = ++projectCount;
        Project storage p = _projects[projectId];
        p.owner = msg.sender;
        p.numRounds = params.numRounds;
        p.token = params.token;
        p.commitWindow = params.commitWindow;
        p.revealWindow = params.revealWindow;
        p.challengeWindow = params.challengeWindow;
        p.aggregator = params.aggregator;
        p.openedAt = uint64(block.number);
        p.arbiter = params.arbiter;
        p.rewardPerRound = params.rewardPerRound;
        p.stake = params.stake;
        p.budget = uint128(budget);
        p.unallocated = uint128(budget);
        p.disputeBond = params.disputeBond;

        emit ProjectCreated(projectId, msg.sender, params.token, budget, params);
        emit RoundOpened(projectId, 0, block.number);

        _pullExact(params.token, budget);
    }

    /// @notice Start handing the project over to `newOwner`; it must call acceptOwnership.
    /// @param projectId The project.
    /// @param newOwner The proposed owner (address(0) cancels a pending hand-over).
    function transferProjectOwnership(uint256 projectId, address newOwner) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner) revert NotOwner(projectId, msg.sender);
        p.pendingOwner = newOwner;
        emit ProjectOwnershipTransferStarted(projectId, msg.sender, newOwner);
    }

    /// @notice Accept a pending hand-over of the project.
    /// @param projectId The project.
    function acceptProjectOwnership(uint256 projectId) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.pendingOwner) revert NotPendingOwner(projectId, msg.sender);
        address previous = p.owner;
        p.owner = msg.sender;
        p.pendingOwner = address(0);
        emit ProjectOwnershipTransferred(projectId, previous, msg.sender);
    }

    /// @notice End the project once every round is finalized and settled; returns to the owner only
    /// the budget no round allocated (plus forfeited bonds and slashed stakes).
    /// @param projectId The project.
    function endProject(uint256 projectId) external nonReentrant {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner) revert NotOwner(projectId, msg.sender);
        if (p.ended) revert ProjectEndedAlready(projectId);
        if (p.currentRound < p.numRounds) revert RoundsRemaining(projectId, p.currentRound, p.numRounds);
        _requireSettled(projectId, p, p.numRounds - 1);

        uint256 returned = p.unallocated;
        p.unallocated = 0;
        p.ended = true;
        emit ProjectEnded(projectId, returned);
        _pay(p.token, msg.sender, returned);
    }

    // ------------------------------------------------------------------ trainers

    /// @notice Register as a trainer of the project, staking `stake` (ETH value, or approved token).
    /// @param projectId The project.
    function register(uint256 projectId) external payable nonReentrant {
        Project storage p = _project(projectId);
        if (p.ended) revert ProjectEndedAlready(projectId);
        if (_registration[projectId][msg.sender] != 0) revert AlreadyRegistered(projectId, msg.sender);
        uint128 stake = p.stake;
        _registration[projectId][msg.sender] = uint256(stake) + 1;
        p.stakesHeld += stake;
        emit TrainerRegistered(projectId, msg.sender, stake);
        _pullExact(p.token, stake);
    }

    /// @notice Commit to an update for the open round before its commit deadline.
    /// @param projectId The project.
    /// @param round The round (must be the open one).
    /// @param commitment `commitmentOf(projectId, round, trainer, cid, digest, salt)`.
    function commit(uint256 projectId, uint256 round, bytes32 commitment) external {
        Project storage p = _project(projectId);
        if (_registration[projectId][msg.sender] == 0) revert NotRegistered(projectId, msg.sender);
        // currentRound == numRounds once every round is finalized (and always after end): that
        // round does not exist, so it is never open.
        if (round != p.currentRound || round >= p.numRounds) revert RoundNotOpen(projectId, round, p.currentRound);
        uint256 deadline = uint256(p.openedAt) + p.commitWindow;
        if (block.number > deadline) revert CommitClosed(projectId, round, deadline);
        if (commitment == bytes32(0) || commitment == REVEALED) revert InvalidParams("commitment");
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
        if (committed == bytes32(0)) revert NotCommitted(projectId, round, msg.sender);
        if (committed == REVEALED) revert AlreadyRevealed(projectId, round, msg.sender);
        if (committed != commitmentOf(projectId, round, msg.sender, cid, digest, salt)) {
            revert RevealMismatch(projectId, round, msg.sender);
        }
        slot[msg.sender] = REVEALED;
        emit UpdateRevealed(projectId, round, msg.sender, cid, digest);
    }

    /// @notice Pull the cumulative reward proven against a settled round's root; pays the difference
    /// from what `trainer` already claimed. Anyone may trigger the payment; it always goes to `trainer`.
    /// @param projectId The project.
    /// @param round A finalized round whose challenge window has passed undisputed (or dismissed).
    /// @param trainer The beneficiary.
    /// @param cumulative The trainer's cumulative entitlement in that round's tree.
    /// @param proof Merkle proof of the leaf `keccak256(bytes.concat(keccak256(abi.encode(trainer, cumulative))))`.
    function claim(uint256 projectId, uint256 round, address trainer, uint256 cumulative, bytes32[] calldata proof)
        external
        nonReentrant
    {
        Project storage p = _project(projectId);
        Round storage r = _rounds[projectId][round];
        _requireClaimable(projectId, p, r, round);
        bytes32 leaf = keccak256(bytes.concat(keccak256(abi.encode(trainer, cumulative))));
        if (!MerkleProof.verifyCalldata(proof, r.rewardsRoot, leaf)) revert InvalidProof(projectId, round, trainer);
        uint256 already = _claimed[projectId][trainer];
        if (cumulative <= already) revert NothingToClaim(projectId, trainer, cumulative, already);
        uint256 payout = cumulative - already;
        // A root cannot pay out more than the project allocated up to its round, whatever the
        // aggregator put in it: the escrow of other projects is never at risk.
        // Claims through newer roots may already exceed an older round's cumulative allocation.
        uint256 cap = r.cumulativeAllocated;
        uint256 available = cap > p.claimed ? cap - p.claimed : 0;
        if (payout > available) revert ClaimExceedsAllocation(projectId, payout, available);

        _claimed[projectId][trainer] = cumulative;
        p.claimed += uint128(payout);
        emit RewardClaimed(projectId, round, trainer, cumulative, payout);
        _pay(p.token, trainer, payout);
    }

    /// @notice Withdraw the registration stake once the project has ended.
    /// @param projectId The project.
    function withdrawStake(uint256 projectId) external nonReentrant {
        Project storage p = _project(projectId);
        if (!p.ended) revert ProjectNotEnded(projectId);
        uint256 reg = _registration[projectId][msg.sender];
        if (reg <= 1) revert NothingToWithdraw(projectId, msg.sender);
        uint256 amount = reg - 1;
        _registration[projectId][msg.sender] = 1; // still registered, nothing staked
        p.stakesHeld -= uint128(amount);
        emit StakeWithdrawn(projectId, msg.sender, amount);
        _pay(p.token, msg.sender, amount);
    }

    /// @notice Withdraw pull-payment credits (refunded dispute bonds).
    /// @param projectId The project.
    function withdrawCredit(uint256 projectId) external nonReentrant {
        Project storage p = _project(projectId);
        uint256 amount = _credits[projectId][msg.sender];
        if (amount == 0) revert NothingToWithdraw(projectId, msg.sender);
        _credits[projectId][msg.sender] = 0;
        emit CreditWithdrawn(projectId, msg.sender, amount);
        _pay(p.token, msg.sender, amount);
    }

    // ------------------------------------------------------------------ aggregator

    /// @notice Finalize the open round: publish the new model, the round record and the cumulative
    /// rewards root, allocate this round's reward, and open the next round.
    /// @dev Allowed after the reveal deadline, once the previous round is settled (challenge window
    /// over and no dispute pending). `allocation` may be below the round's share (what is not paid
    /// rolls over) and at most what is left after reserving `rewardPerRound` for each later round
    /// (and never more than keeps the project's total allocation within uint104).
    /// @param projectId The project.
    /// @param round The open round.
    /// @param modelCID CID of the new global model.
    /// @param recordCID CID of the round record (inputs, verdicts, scores, seeds, proofs).
    /// @param rewardsRoot Root of the cumulative-rewards tree after this round.
    /// @param allocation Reward allocated by this round (sum of increments in the tree).
    function finalizeRound(
        uint256 projectId,
        uint256 round,
        string calldata modelCID,
        string calldata recordCID,
        bytes32 rewardsRoot,
        uint256 allocation
    ) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.aggregator) revert NotAggregator(projectId, msg.sender);
        uint256 current = p.currentRound;
        if (round != current || current >= p.numRounds) revert RoundNotOpen(projectId, round, current);
        uint256 revealDeadline = uint256(p.openedAt) + p.commitWindow + p.revealWindow;
        if (block.number <= revealDeadline) revert RevealStillOpen(projectId, round, revealDeadline);
        if (round > 0) _requireSettled(projectId, p, round - 1);
        if (rewardsRoot == bytes32(0)) revert EmptyRoot();
        if (bytes(modelCID).length == 0 || bytes(recordCID).length == 0) revert InvalidParams("CIDs must be set");
        _requireAllocatable(p, round, allocation);

        uint128 allocated = p.allocated + uint128(allocation);
        p.allocated = allocated;
        p.unallocated -= uint128(allocation);
        _rounds[projectId][round] = Round({
            finalizedAt: uint40(block.number),
            status: RoundStatus.Finalized,
            allocation: uint104(allocation),
            cumulativeAllocated: uint104(allocated),
            rewardsRoot: rewardsRoot
        });
        p.currentRound = uint32(current + 1);
        p.openedAt = uint64(block.number);
        emit RoundFinalized(projectId, round, modelCID, recordCID, rewardsRoot, allocation);
        if (current + 1 < p.numRounds) emit RoundOpened(projectId, current + 1, block.number);
    }

    // ------------------------------------------------------------------ disputes

    /// @notice Dispute a finalized round inside its challenge window, freezing it until the arbiter
    /// settles. Only stakeholders (the owner or a registered trainer) may dispute: they are the ones
    /// a wrong round harms, and restricting it stops outsiders from freezing rounds for free. The
    /// disputer posts the project's bond, refunded if upheld and forfeited to the reward pool if not,
    /// so that stalling a project costs the staller. A round can be disputed once.
    /// @param projectId The project.
    /// @param round The finalized round.
    /// @param evidenceCID IPFS CID of the evidence (for example a failing audit report).
    function dispute(uint256 projectId, uint256 round, string calldata evidenceCID) external payable nonReentrant {
        Project storage p = _project(projectId);
        if (msg.sender != p.owner && _registration[projectId][msg.sender] == 0) {
            revert NotStakeholder(projectId, msg.sender);
        }
        Round storage r = _rounds[projectId][round];
        if (r.status != RoundStatus.Finalized) revert RoundNotFinalized(projectId, round);
        uint256 closesAt = uint256(r.finalizedAt) + p.challengeWindow;
        if (block.number > closesAt) revert ChallengeWindowClosed(projectId, round, closesAt);
        uint128 bond = p.disputeBond;
        r.status = RoundStatus.Disputed;
        _disputes[projectId][round] = Dispute({disputer: msg.sender, bond: bond});
        emit RoundDisputed(projectId, round, msg.sender, evidenceCID, bond);
        _pullExact(p.token, bond);
    }

    /// @notice Settle a dispute. Upheld: the round is voided, its allocation returns to the pool and
    /// the bond is credited back to the disputer. Dismissed: the round stands and the bond goes to
    /// the pool.
    /// @param projectId The project.
    /// @param round The disputed round.
    /// @param upheld Whether the dispute is upheld.
    /// @param reasonCID IPFS CID of the arbiter's reasoning.
    function resolveDispute(uint256 projectId, uint256 round, bool upheld, string calldata reasonCID) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.arbiter) revert NotArbiter(projectId, msg.sender);
        Round storage r = _rounds[projectId][round];
        if (r.status != RoundStatus.Disputed) revert NotDisputed(projectId, round);
        Dispute memory d = _disputes[projectId][round];
        if (upheld) {
            r.status = RoundStatus.Voided;
            p.allocated -= uint128(r.allocation);
            p.unallocated += uint128(r.allocation);
            _credits[projectId][d.disputer] += d.bond;
        } else {
            r.status = RoundStatus.Dismissed;
            p.unallocated += d.bond;
        }
        emit DisputeResolved(projectId, round, upheld, reasonCID);
    }

    /// @notice Slash a trainer's stake into the reward pool (for example after proven copying or
    /// poisoning); the arbiter decides, the evidence is on IPFS.
    /// @param projectId The project.
    /// @param trainer The trainer.
    /// @param reasonCID IPFS CID of the evidence.
    function slashStake(uint256 projectId, address trainer, string calldata reasonCID) external {
        Project storage p = _project(projectId);
        if (msg.sender != p.arbiter) revert NotArbiter(projectId, msg.sender);
        if (p.ended) revert ProjectEndedAlready(projectId);
        uint256 reg = _registration[projectId][trainer];
        if (reg <= 1) revert NothingToWithdraw(projectId, trainer);
        uint256 amount = reg - 1;
        _registration[projectId][trainer] = 1;
        p.stakesHeld -= uint128(amount);
        p.unallocated += uint128(amount);
        emit StakeSlashed(projectId, trainer, amount, reasonCID);
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

    /// @notice A finalized round's record (status None if not finalized).
    function getRound(uint256 projectId, uint256 round) external view returns (Round memory) {
        return _rounds[projectId][round];
    }

    /// @notice Deadlines of the open round: commits while block <= commitDeadline, reveals while
    /// commitDeadline < block <= revealDeadline, finalize after revealDeadline.
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

    /// @notice 0 = none, 1 = committed, 2 = revealed.
    function commitmentState(uint256 projectId, uint256 round, address trainer) external view returns (uint8) {
        bytes32 c = _commitments[projectId][round][trainer];
        if (c == bytes32(0)) return 0;
        return c == REVEALED ? 2 : 1;
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

    /// @notice Pull-payment credit of `account` (refunded dispute bonds).
    function creditOf(uint256 projectId, address account) external view returns (uint256) {
        return _credits[projectId][account];
    }

    /// @notice The dispute on a round, if any.
    function getDispute(uint256 projectId, uint256 round) external view returns (Dispute memory) {
        return _disputes[projectId][round];
    }

    // ------------------------------------------------------------------ internals

    function _requireSettled(uint256 projectId, Project storage p, uint256 round) internal view {
        Round storage prev = _rounds[projectId][round];
        RoundStatus s = prev.status;
        if (s == RoundStatus.Disputed) revert PreviousRoundUnsettled(projectId, round);
        if (s == RoundStatus.Finalized) {
            uint256 closesAt = uint256(prev.finalizedAt) + p.challengeWindow;
            if (block.number <= closesAt) revert ChallengeWindowOpen(projectId, round, closesAt);
        }
    }

    /// @dev At most what is left after reserving `rewardPerRound` for each later round. Rounds store
    /// allocations as uint104: the budget fits, but slashed stakes and forfeited bonds can lift
    /// `unallocated` above that, so the running total is also kept storable (never truncated).
    function _requireAllocatable(Project storage p, uint256 round, uint256 allocation) internal view {
        uint256 available = uint256(p.unallocated) - uint256(p.rewardPerRound) * (p.numRounds - round - 1);
        uint256 room = type(uint104).max - uint256(p.allocated);
        if (available > room) available = room;
        if (allocation > available) revert AllocationTooLarge(allocation, available);
    }

    function _requireClaimable(uint256 projectId, Project storage p, Round storage r, uint256 round) internal view {
        RoundStatus s = r.status;
        if (s == RoundStatus.Finalized) {
            uint256 closesAt = uint256(r.finalizedAt) + p.challengeWindow;
            if (block.number <= closesAt) revert ChallengeWindowOpen(projectId, round, closesAt);
        } else if (s != RoundStatus.Dismissed) {
            revert RoundNotClaimable(projectId, round, s);
        }
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
