// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ILearningMarket
/// @notice Types, events and custom errors of the LearningMarket escrow (trust model v2). Every
/// deadline is a block number; every default outcome is documented on the event or function that
/// applies it. See docs/trust-model.md.
/// @dev Errors follow OpenZeppelin's draft-IERC6093 style: one specific error per failed check,
/// named after what is wrong, carrying the values that show why.
interface ILearningMarket {
    // ------------------------------------------------------------------ types

    /// @dev Life cycle of a round. None -> Finalized -> (Disputed -> Dismissed | Corrected), or
    /// None -> Expired. Voided is never produced by this contract (kept so the numbering of v1
    /// readers stays valid).
    enum RoundStatus {
        None,
        Finalized,
        Disputed,
        Voided,
        Dismissed,
        Corrected,
        Expired
    }

    /// @dev Life cycle of one dispute: Pending -> Upheld | Dismissed | Lapsed (not ruled in time).
    enum DisputeStatus {
        None,
        Pending,
        Upheld,
        Dismissed,
        Lapsed
    }

    /// @dev Everything a project needs to be created. Windows are in blocks.
    /// @param token address(0) for ETH, else an ERC-20 without transfer fees.
    /// @param aggregator Finalizes rounds; must differ from the owner and the arbiter.
    /// @param arbiter Rules on disputes; must differ from the owner and the aggregator.
    /// @param numRounds Rounds of the project (> 0).
    /// @param commitWindow Blocks after a round opens during which commits are accepted.
    /// @param revealWindow Blocks after the commit deadline during which reveals are accepted.
    /// @param challengeWindow Blocks after a finalize during which the round may be disputed (>= 2).
    /// @param finalizeWindow Blocks after the reveal deadline by which the aggregator must finalize;
    /// later, anyone may expire the round.
    /// @param ruleWindow Blocks after the challenge window by which the arbiter must rule on every
    /// dispute of the round; later, a dispute lapses. challengeWindow + ruleWindow must be below
    /// commitWindow + revealWindow + finalizeWindow, so a round is always settled before the next
    /// one's finalize deadline.
    /// @param claimWindow Blocks after the project ends during which rewards may still be claimed.
    /// @param rewardPerRound Each round's share of the budget (budget = numRounds * rewardPerRound).
    /// @param stake Per trainer, locked until the project ends; at least commitDeposit.
    /// @param disputeBond Posted per dispute; at least rewardPerRound / MIN_BOND_DIVISOR (and 1).
    /// @param aggregatorBond Posted by the aggregator before it finalizes; slashed by a missed
    /// finalize deadline or an upheld dispute; at least rewardPerRound / MIN_AGGREGATOR_BOND_DIVISOR.
    /// @param commitDeposit Taken from the stake of a trainer that commits and does not reveal; at
    /// least rewardPerRound / MIN_DEPOSIT_DIVISOR (and 1).
    /// @param specCID IPFS CID of the project spec (model, validation and aggregation policy).
    struct ProjectParams {
        address token;
        address aggregator;
        address arbiter;
        uint32 numRounds;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 challengeWindow;
        uint32 finalizeWindow;
        uint32 ruleWindow;
        uint32 claimWindow;
        uint128 rewardPerRound;
        uint128 stake;
        uint128 disputeBond;
        uint128 aggregatorBond;
        uint72 commitDeposit;
        string specCID;
    }

    /// @dev A project's record; packed so commit, reveal, finalize and claim touch few slots.
    /// @param reveals Reveals in the open round (copied into its Round at finalize).
    /// @param endedAt Block at which the project ended (0 while it runs).
    /// @param aggregatorMissed The current aggregator let a round with commits expire: the owner may
    /// replace it.
    /// @param arbiterMissed The current arbiter let a dispute lapse: the owner may replace it.
    /// @param swept What no leaf claimed went back to the owner after the claim deadline.
    /// @param unallocated Budget + slashes with no other beneficiary - allocated - returned.
    /// @param allocated Fixed allocations of finalized rounds.
    /// @param pools Slashed bonds and forfeited deposits held for the revealers of their rounds.
    /// @param bondHeld The aggregator bond currently posted.
    struct Project {
        address owner;
        uint32 currentRound;
        uint40 openedAt;
        uint24 reveals;
        address token;
        uint32 commitWindow;
        uint32 revealWindow;
        uint32 finalizeWindow;
        address aggregator;
        uint32 numRounds;
        uint32 challengeWindow;
        uint32 endedAt;
        address arbiter;
        uint32 claimWindow;
        uint32 ruleWindow;
        address pendingOwner;
        uint72 commitDeposit;
        bool aggregatorMissed;
        bool arbiterMissed;
        bool swept;
        uint128 rewardPerRound;
        uint128 stake;
        uint128 unallocated;
        uint128 allocated;
        uint128 budget;
        uint128 claimed;
        uint128 disputeBond;
        uint128 stakesHeld;
        uint128 aggregatorBond;
        uint128 bondHeld;
        uint128 pools;
    }

    /// @dev A round's record.
    /// @param finalizedAt Block of the finalize (or of the expiry).
    /// @param allocation The round's fixed allocation (0 if expired).
    /// @param cumulativeAllocated project.allocated right after this round; caps claims through it.
    /// @param reveals Trainers that revealed in the round (they share its pool).
    /// @param rewardsRoot Cumulative-rewards root (the latest correction, if any).
    /// @param pool Slashed bond and forfeited deposits for the round's revealers.
    /// @param pendingDisputes Disputes not yet ruled or lapsed.
    /// @param disputeCount Disputes opened on the round (their indices are 0..disputeCount-1).
    /// @param corrected An upheld dispute replaced the root.
    struct Round {
        uint32 finalizedAt;
        RoundStatus status;
        uint96 allocation;
        uint96 cumulativeAllocated;
        uint24 reveals;
        bytes32 rewardsRoot;
        uint128 pool;
        uint32 pendingDisputes;
        uint32 disputeCount;
        bool corrected;
    }

    /// @dev One dispute of a round.
    struct Dispute {
        address disputer;
        DisputeStatus status;
        uint128 bond;
    }

    /// @dev Which role replaceRole hands over.
    enum Role {
        Aggregator,
        Arbiter
    }

    // ------------------------------------------------------------------ events

    /// @dev A project was created and its whole budget escrowed.
    /// @param projectId The new project. @param owner Its owner. @param token Its token (0 = ETH).
    /// @param budget What was escrowed. @param specCID Its spec; every other parameter is in getProject.
    event ProjectCreated(
        uint256 indexed projectId, address indexed owner, address indexed token, uint256 budget, string specCID
    );
    /// @dev Round `round` opened for commits at block `openedAt`.
    /// @param projectId The project. @param round The round. @param openedAt Its opening block.
    event RoundOpened(uint256 indexed projectId, uint256 indexed round, uint256 openedAt);
    /// @dev `trainer` registered, staking `stake`.
    /// @param projectId The project. @param trainer The trainer. @param stake The stake locked.
    event TrainerRegistered(uint256 indexed projectId, address indexed trainer, uint256 stake);
    /// @dev `trainer` committed to an update.
    /// @param projectId The project. @param round The round. @param trainer The trainer.
    /// @param commitment The commitment (see commitmentOf).
    event UpdateCommitted(uint256 indexed projectId, uint256 indexed round, address indexed trainer, bytes32 commitment);
    /// @dev `trainer` revealed its update.
    /// @param projectId The project. @param round The round. @param trainer The trainer.
    /// @param cid The update's CID. @param digest sha256 of the update's bytes.
    event UpdateRevealed(
        uint256 indexed projectId, uint256 indexed round, address indexed trainer, string cid, bytes32 digest
    );
    /// @dev A committed update was not revealed: `amount` of the trainer's stake went to the round's
    /// revealers (or, with none, to the unallocated budget).
    /// @param projectId The project. @param round The round. @param trainer The trainer.
    /// @param amount The deposit taken from its stake.
    event DepositForfeited(uint256 indexed projectId, uint256 indexed round, address indexed trainer, uint256 amount);
    /// @dev The aggregator posted its bond.
    /// @param projectId The project. @param aggregator The aggregator. @param amount The bond.
    event AggregatorBonded(uint256 indexed projectId, address indexed aggregator, uint256 amount);
    /// @dev The aggregator's bond was slashed for `round` (missed deadline or upheld dispute).
    /// @param projectId The project. @param round The round. @param aggregator The aggregator.
    /// @param amount The amount slashed; it goes to the round's revealers.
    event AggregatorSlashed(uint256 indexed projectId, uint256 indexed round, address indexed aggregator, uint256 amount);
    /// @dev The aggregator finalized a round with its fixed allocation.
    /// @param projectId The project. @param round The round. @param modelCID The new global model.
    /// @param recordCID The round record. @param rewardsRoot The cumulative-rewards root.
    /// @param allocation The round's fixed allocation.
    event RoundFinalized(
        uint256 indexed projectId,
        uint256 indexed round,
        string modelCID,
        string recordCID,
        bytes32 rewardsRoot,
        uint256 allocation
    );
    /// @dev Nobody finalized `round` by its deadline (or nobody committed to it): its share stays
    /// unallocated and rolls over; the next round opens.
    /// @param projectId The project. @param round The round. @param slashed Aggregator bond slashed.
    event RoundExpired(uint256 indexed projectId, uint256 indexed round, uint256 slashed);
    /// @dev A dispute was opened on a round.
    /// @param projectId The project. @param round The round. @param index The dispute's index.
    /// @param disputer Who opened it. @param evidenceCID Its evidence. @param bond The bond posted.
    event RoundDisputed(
        uint256 indexed projectId,
        uint256 indexed round,
        uint256 index,
        address indexed disputer,
        string evidenceCID,
        uint256 bond
    );
    /// @dev The arbiter ruled. Upheld: the bond is credited back and the round's root replaced by
    /// `correctedRoot`. Dismissed: the bond is credited to the aggregator.
    /// @param projectId The project. @param round The round. @param index The dispute.
    /// @param upheld The ruling. @param reasonCID The arbiter's reasoning.
    /// @param correctedRoot The corrected root (0 when dismissed).
    event DisputeResolved(
        uint256 indexed projectId,
        uint256 indexed round,
        uint256 index,
        bool upheld,
        string reasonCID,
        bytes32 correctedRoot
    );
    /// @dev The arbiter did not rule by the deadline. Default: the round stands as it is, the bond is
    /// credited back, and the owner may replace the arbiter.
    /// @param projectId The project. @param round The round. @param index The dispute.
    event DisputeLapsed(uint256 indexed projectId, uint256 indexed round, uint256 index);
    /// @dev A reward was paid through a round's root.
    /// @param projectId The project. @param round The round. @param trainer The leaf's account.
    /// @param cumulative The leaf's amount. @param paid What was paid now. @param recipient Paid to.
    event RewardClaimed(
        uint256 indexed projectId,
        uint256 indexed round,
        address indexed trainer,
        uint256 cumulative,
        uint256 paid,
        address recipient
    );
    /// @dev A revealer took its share of a round's pool.
    /// @param projectId The project. @param round The round. @param trainer The revealer.
    /// @param paid What was paid now. @param recipient Paid to.
    event PoolShareClaimed(
        uint256 indexed projectId, uint256 indexed round, address indexed trainer, uint256 paid, address recipient
    );
    /// @dev A stake was withdrawn after the end.
    /// @param projectId The project. @param trainer The trainer. @param amount The amount.
    /// @param recipient Paid to (the trainer, or the address it named).
    event StakeWithdrawn(uint256 indexed projectId, address indexed trainer, uint256 amount, address recipient);
    /// @dev `amount` was credited to `account` (refunded bonds, forfeited bonds, returned budget).
    /// @param projectId The project. @param account The beneficiary. @param amount The amount.
    event Credited(uint256 indexed projectId, address indexed account, uint256 amount);
    /// @dev A credit was withdrawn.
    /// @param projectId The project. @param account The account. @param amount The amount.
    /// @param recipient Paid to (the account, or the address it named).
    event CreditWithdrawn(uint256 indexed projectId, address indexed account, uint256 amount, address recipient);
    /// @dev The project ended; `returned` (never-allocated budget) went to the owner.
    /// @param projectId The project. @param returned The amount returned.
    event ProjectEnded(uint256 indexed projectId, uint256 returned);
    /// @dev After the claim deadline, what no leaf claimed went to the owner as a credit.
    /// @param projectId The project. @param amount The amount swept.
    event Swept(uint256 indexed projectId, uint256 amount);
    /// @dev The owner replaced a role whose holder missed a deadline.
    /// @param projectId The project. @param role The role. @param previous The old holder.
    /// @param replacement The new holder.
    event RoleReplaced(uint256 indexed projectId, Role role, address indexed previous, address indexed replacement);
    /// @dev A two-step ownership hand-over started.
    /// @param projectId The project. @param previousOwner The owner. @param newOwner The proposed owner.
    event ProjectOwnershipTransferStarted(uint256 indexed projectId, address indexed previousOwner, address indexed newOwner);
    /// @dev The hand-over completed.
    /// @param projectId The project. @param previousOwner The old owner. @param newOwner The new owner.
    event ProjectOwnershipTransferred(uint256 indexed projectId, address indexed previousOwner, address indexed newOwner);

    // ------------------------------------------------------------------ errors: parameters

    /// @dev No project has this id. @param projectId The id.
    error UnknownProject(uint256 projectId);
    /// @dev numRounds is 0.
    error ZeroRounds();
    /// @dev rewardPerRound is 0.
    error ZeroReward();
    /// @dev A window is 0 blocks (or the challenge window below its minimum).
    /// @param window The window's value. @param minimum Its minimum.
    error WindowTooShort(uint256 window, uint256 minimum);
    /// @dev challengeWindow + ruleWindow must be < commitWindow + revealWindow + finalizeWindow.
    /// @param settlement challengeWindow + ruleWindow. @param available commit + reveal + finalize windows.
    error SettlementDoesNotFit(uint256 settlement, uint256 available);
    /// @dev Owner, aggregator and arbiter must be three different non-zero addresses, none a trainer.
    /// @param account The offending address.
    error RolesNotDistinct(address account);
    /// @dev A CID argument is empty.
    error EmptyCID();
    /// @dev numRounds * rewardPerRound does not fit in uint96. @param budget The budget.
    error BudgetTooLarge(uint256 budget);
    /// @dev An amount parameter is below the protocol minimum.
    /// @param what 0 stake, 1 dispute bond, 2 aggregator bond, 3 commit deposit.
    /// @param given The value given. @param minimum The minimum.
    error BelowMinimum(uint8 what, uint256 given, uint256 minimum);
    /// @dev The wrong amount was sent. @param expected Expected. @param received Received.
    error WrongPayment(uint256 expected, uint256 received);
    /// @dev ETH was sent to a token project.
    error UnexpectedEther();

    // ------------------------------------------------------------------ errors: roles

    /// @dev The caller is not the owner. @param projectId The project. @param caller The caller.
    error NotOwner(uint256 projectId, address caller);
    /// @dev The caller is not the pending owner. @param projectId The project. @param caller The caller.
    error NotPendingOwner(uint256 projectId, address caller);
    /// @dev The caller is not the aggregator. @param projectId The project. @param caller The caller.
    error NotAggregator(uint256 projectId, address caller);
    /// @dev The caller is not the arbiter. @param projectId The project. @param caller The caller.
    error NotArbiter(uint256 projectId, address caller);
    /// @dev Only the owner or a registered trainer may dispute. @param projectId The project.
    /// @param caller The caller.
    error NotStakeholder(uint256 projectId, address caller);
    /// @dev The role's holder has not missed a deadline: it cannot be replaced.
    /// @param projectId The project. @param role The role.
    error RoleNotMissed(uint256 projectId, Role role);
    /// @dev Already registered. @param projectId The project. @param trainer The trainer.
    error AlreadyRegistered(uint256 projectId, address trainer);
    /// @dev Not registered. @param projectId The project. @param trainer The trainer.
    error NotRegistered(uint256 projectId, address trainer);
    /// @dev The aggregator has not posted its bond. @param projectId The project.
    /// @param required The bond to post.
    error BondNotPosted(uint256 projectId, uint256 required);
    /// @dev The aggregator's bond is already posted. @param projectId The project.
    error BondAlreadyPosted(uint256 projectId);

    // ------------------------------------------------------------------ errors: rounds

    /// @dev The project has ended. @param projectId The project.
    error ProjectEndedAlready(uint256 projectId);
    /// @dev The project has not ended. @param projectId The project.
    error ProjectNotEnded(uint256 projectId);
    /// @dev `round` is not the open round. @param projectId The project. @param round The round.
    /// @param currentRound The open round (numRounds when none is).
    error RoundNotOpen(uint256 projectId, uint256 round, uint256 currentRound);
    /// @dev Commits closed. @param projectId The project. @param round The round. @param deadline Its deadline.
    error CommitClosed(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev The commitment is 0 or a reserved value.
    error InvalidCommitment();
    /// @dev The stake left cannot cover a commit deposit. @param projectId The project.
    /// @param stake The stake left. @param deposit The deposit.
    error StakeBelowDeposit(uint256 projectId, uint256 stake, uint256 deposit);
    /// @dev Already committed. @param projectId The project. @param round The round. @param trainer The trainer.
    error AlreadyCommitted(uint256 projectId, uint256 round, address trainer);
    /// @dev Reveals not open yet. @param projectId The project. @param round The round.
    /// @param opensAfter The commit deadline.
    error RevealNotOpen(uint256 projectId, uint256 round, uint256 opensAfter);
    /// @dev Reveals closed. @param projectId The project. @param round The round. @param deadline Its deadline.
    error RevealClosed(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev No commitment to reveal or forfeit. @param projectId The project. @param round The round.
    /// @param trainer The trainer.
    error NotCommitted(uint256 projectId, uint256 round, address trainer);
    /// @dev Already revealed. @param projectId The project. @param round The round. @param trainer The trainer.
    error AlreadyRevealed(uint256 projectId, uint256 round, address trainer);
    /// @dev The reveal does not match the commitment. @param projectId The project.
    /// @param round The round. @param trainer The trainer.
    error RevealMismatch(uint256 projectId, uint256 round, address trainer);
    /// @dev The reveal window is still open. @param projectId The project. @param round The round.
    /// @param deadline The reveal deadline.
    error RevealStillOpen(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev The finalize deadline passed: the round can only be expired.
    /// @param projectId The project. @param round The round. @param deadline The finalize deadline.
    error FinalizeClosed(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev The round cannot be expired yet. @param projectId The project. @param round The round.
    /// @param expiresAfter The finalize deadline.
    error FinalizeStillOpen(uint256 projectId, uint256 round, uint256 expiresAfter);
    /// @dev The previous round is not settled (challenge window open or a dispute pending).
    /// @param projectId The project. @param round The unsettled round. @param settlesAfter Last block it may stay unsettled.
    error RoundUnsettled(uint256 projectId, uint256 round, uint256 settlesAfter);
    /// @dev The allocation differs from the round's fixed allocation.
    /// @param expected The fixed allocation. @param given The allocation given.
    error AllocationMismatch(uint256 expected, uint256 given);
    /// @dev A root is 0.
    error EmptyRoot();

    // ------------------------------------------------------------------ errors: disputes and claims

    /// @dev The round is not finalized (or expired). @param projectId The project. @param round The round.
    error RoundNotFinalized(uint256 projectId, uint256 round);
    /// @dev The challenge window closed. @param projectId The project. @param round The round.
    /// @param closedAt Its last block.
    error ChallengeWindowClosed(uint256 projectId, uint256 round, uint256 closedAt);
    /// @dev The dispute is not pending. @param projectId The project. @param round The round.
    /// @param index The dispute.
    error DisputeNotPending(uint256 projectId, uint256 round, uint256 index);
    /// @dev The ruling deadline passed. @param projectId The project. @param round The round.
    /// @param deadline The ruling deadline.
    error RulingClosed(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev The ruling deadline has not passed yet. @param projectId The project. @param round The round.
    /// @param deadline The ruling deadline.
    error RulingStillOpen(uint256 projectId, uint256 round, uint256 deadline);
    /// @dev Nothing can be claimed through this round yet (or ever).
    /// @param projectId The project. @param round The round. @param claimableAfter First block it
    /// may be claimable (0 if never: not finalized, or expired).
    error RoundNotClaimable(uint256 projectId, uint256 round, uint256 claimableAfter);
    /// @dev The proof does not prove the leaf. @param projectId The project. @param round The round.
    /// @param trainer The leaf's account.
    error InvalidProof(uint256 projectId, uint256 round, address trainer);
    /// @dev Nothing new to claim. @param projectId The project. @param trainer The trainer.
    /// @param cumulative The leaf's amount. @param alreadyClaimed Already paid.
    error NothingToClaim(uint256 projectId, address trainer, uint256 cumulative, uint256 alreadyClaimed);
    /// @dev The payout exceeds what the project allocated up to the round.
    /// @param projectId The project. @param requested The payout. @param available Allocated and not yet claimed.
    error ClaimExceedsAllocation(uint256 projectId, uint256 requested, uint256 available);
    /// @dev The claim deadline passed. @param projectId The project. @param deadline The claim deadline.
    error ClaimsClosed(uint256 projectId, uint256 deadline);
    /// @dev The claim deadline has not passed yet. @param projectId The project. @param deadline The claim deadline.
    error ClaimsStillOpen(uint256 projectId, uint256 deadline);
    /// @dev Not every round is finalized or expired and settled. @param projectId The project.
    /// @param round The first round left. @param numRounds The project's rounds.
    error RoundsRemaining(uint256 projectId, uint256 round, uint256 numRounds);
    /// @dev Nothing to withdraw. @param projectId The project. @param account The account.
    error NothingToWithdraw(uint256 projectId, address account);
    /// @dev The recipient named for a payment (claimTo, claimPoolShare, withdrawStakeTo,
    /// withdrawCreditTo) is the zero address.
    error ZeroRecipient();
}
