"""The Python face of the LearningMarket contract: every call, view and event, typed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import is_address, keccak, to_checksum_address
from web3 import HTTPProvider, Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from market.chain import _rpc
from market.chain.events import DEFAULT_PAGE, LogReader, topic_filter
from market.chain.profiles import ChainProfile
from market.chain.records import (
    Commit,
    CommitState,
    DisputeInfo,
    DisputeOpened,
    DisputeRuling,
    DisputeStatus,
    Expired,
    Finalized,
    ProjectCreated,
    ProjectInfo,
    ProjectParams,
    Reveal,
    Role,
    RoundInfo,
    RoundStatus,
)
from market.chain.reverts import RevertDecoder
from market.chain.sender import Receipt, TxSender, revert_data
from market.errors import ChainError, ConfigError, InsufficientFunds, NodeUnreachable, is_transient

#: The part of ERC-20 the market needs: escrowing budgets, stakes and bonds in a token.
ERC20_ABI: list[dict[str, Any]] = [
    {"type": "function", "name": "approve", "stateMutability": "nonpayable",
     "inputs": [{"name": "spender", "type": "address"}, {"name": "value", "type": "uint256"}],
     "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "allowance", "stateMutability": "view",
     "inputs": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"}],
     "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "balanceOf", "stateMutability": "view",
     "inputs": [{"name": "account", "type": "address"}], "outputs": [{"name": "", "type": "uint256"}]},
    {"type": "function", "name": "decimals", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint8"}]},
]


def checksum(address: str, what: str = "address") -> ChecksumAddress:
    """`address` checksummed, or a ConfigError naming what was malformed."""
    if not isinstance(address, str) or not is_address(address):
        raise ConfigError(f"malformed {what} {address!r}: expected a 0x-prefixed 20-byte hex address")
    return to_checksum_address(address)


def commitment_of(project_id: int, round_: int, trainer: str, cid: str, digest: bytes, salt: bytes) -> bytes:
    """The commitment the contract expects (`LearningMarket.commitmentOf`)."""
    if len(digest) != 32 or len(salt) != 32:
        raise ValueError("digest and salt are 32 bytes")
    return keccak(
        encode(
            ["uint256", "uint256", "address", "bytes32", "bytes32", "bytes32"],
            [project_id, round_, to_checksum_address(trainer), keccak(text=cid), digest, salt],
        )
    )


@dataclass(frozen=True)
class TrainerView:
    """A trainer's view of a project at one block (`MarketClient.trainer_view`)."""

    info: ProjectInfo
    block_number: int
    commit_state: CommitState
    registered: bool


class MarketClient:
    """Typed access to one deployed LearningMarket.

    Reads need no account; writes need one (`account=`), signed locally with eth-account and sent
    as EIP-1559 transactions.
    """

    def __init__(
        self,
        w3: Web3,
        address: str,
        abi: list[dict[str, Any]],
        account: LocalAccount | None = None,
        *,
        receipt_timeout: float = 120.0,
        profile: ChainProfile | None = None,
        page_size: int | None = None,
        confirmations: int = 0,
        deployed_at: int = 0,
    ):
        """`page_size`: blocks per `eth_getLogs` call when reading events (None: the whole range
        in one call, as a local node answers); `confirmations`: events count once buried this
        deep (0: the head counts, as on a local chain); `deployed_at`: the contract's deployment
        block, where event reads start at the earliest (a public chain has millions before it)."""
        if (page_size is not None and page_size < 1) or confirmations < 0:
            raise ConfigError(f"page_size must be >= 1 (got {page_size}) and confirmations >= 0 (got {confirmations})")
        self.w3 = w3
        self.profile = profile
        self.page_size = page_size
        self.confirmations = confirmations
        self.deployed_at = deployed_at
        self.address = checksum(address, "contract address")
        self.abi = abi
        self.contract = w3.eth.contract(address=self.address, abi=abi)
        self.decoder = RevertDecoder(abi)
        self._abi_calls = _rpc.AbiCalls(abi)
        self.sender = TxSender(w3, account, self.decoder, receipt_timeout=receipt_timeout, profile=profile) if account else None

    # ------------------------------------------------------------------ plumbing

    def with_account(self, account: LocalAccount) -> MarketClient:
        """The same contract, sending from `account`."""
        return MarketClient(self.w3, self.address, self.abi, account, profile=self.profile, page_size=self.page_size,
                            confirmations=self.confirmations, deployed_at=self.deployed_at)

    @property
    def account_address(self) -> str:
        if self.sender is None:
            raise ConfigError("this command sends a transaction: give an account (--account or --dev-account)")
        return self.sender.address

    def _send(self, fn: Any, action: str, value: int = 0) -> Receipt:
        if self.sender is None:
            raise ConfigError(f"{action} sends a transaction: give an account (--account or --dev-account)")
        return self.sender.send(fn, value=value, action=action)

    def _call(self, fn: Any, action: str) -> Any:
        try:
            return fn.call()
        except ContractLogicError as exc:
            raise self.decoder.decode(exc.data, action) from None
        except ChainError:
            raise
        except Exception as exc:  # connection drops mid-call
            data = revert_data(exc)
            if data is not None:
                raise self.decoder.decode(data, action) from None
            if is_transient(exc):  # typed as such, so waiting commands retry instead of dying
                raise NodeUnreachable(f"{action}: the node did not answer ({type(exc).__name__}: {exc})") from exc
            raise ChainError(f"{action}: the node did not answer ({type(exc).__name__}: {exc})") from exc

    @property
    def block_number(self) -> int:
        """The head as the contract's `block.number` counts it (the L1 block on Arbitrum): what
        every deadline is compared with."""
        return self.profile.contract_block(self.w3) if self.profile else int(self.w3.eth.block_number)

    def _read_many(
        self, reads: Sequence[tuple[str, tuple[Any, ...]]], *, block_number: bool = False
    ) -> tuple[list[Any], int]:
        """The results of several views (`(function name, args)`), and the head block when
        `block_number` (else -1), read at one block in one JSON-RPC batch: one round trip, encoded
        and decoded from the ABI without web3's per-call machinery (`market.chain._rpc`). On a
        node that does not batch (the embedded chain) or when the batch fails (a revert, an
        outage), they are read again one by one through `_call`, so errors surface exactly as
        from a single read."""
        if isinstance(self.w3.provider, HTTPProvider):
            calls: list[tuple[str, list[Any]]] = [
                ("eth_call", [{"to": self.address, "data": self._abi_calls.data(name, *args)}, "latest"])
                for name, args in reads]
            try:
                answers = _rpc.batch(self.w3, calls + ([("eth_blockNumber", [])] if block_number else []))
                head = int(answers.pop(), 16) if block_number else -1
                return [self._abi_calls.result(name, a) for (name, _), a in zip(reads, answers, strict=True)], head
            except Exception:  # noqa: BLE001, S110 - read one by one below, where each error is typed
                pass
        results = [self._call(getattr(self.contract.functions, name)(*args), name) for name, args in reads]
        return results, (self.block_number if block_number else -1)

    def trainer_view(self, project_id: int, round_: int, trainer: str) -> TrainerView:
        """What a trainer checks before it commits or reveals, read at one block in one round trip:
        the project, the head, its commitment's state and its registration."""
        who = checksum(trainer, "trainer")
        (p, state, (registered, _)), head = self._read_many(
            [("getProject", (project_id,)), ("commitmentState", (project_id, round_, who)),
             ("registration", (project_id, who))],
            block_number=True,
        )
        return TrainerView(ProjectInfo(project_id, *p), head, CommitState(state), bool(registered))

    def _send_fast(self, name: str, args: tuple[Any, ...], action: str, value: int = 0) -> Receipt:
        """`_send` for the calls every round makes: over HTTP encoded from the ABI and sent raw
        (`TxSender.send_data`), skipping web3's contract machinery."""
        if self.sender is not None and isinstance(self.w3.provider, HTTPProvider):
            return self.sender.send_data(self.address, self._abi_calls.data(name, *args), value=value, action=action)
        return self._send(getattr(self.contract.functions, name)(*args), action, value=value)

    # ------------------------------------------------------------------ writes

    def _fund(self, token: str, amount: int, action: str) -> int:
        """ETH value to send for `amount`; for an ERC-20, approve the market first (only when the
        allowance falls short) and send no value."""
        if int(token, 16) == 0:
            return amount
        if amount == 0:
            return 0
        erc20 = self.w3.eth.contract(address=checksum(token, "token"), abi=ERC20_ABI)
        owner = self.account_address
        balance = int(self._call(erc20.functions.balanceOf(owner), "balanceOf"))
        if balance < amount:
            raise InsufficientFunds(f"{action}: {owner} holds {balance} of token {token} but needs {amount}: fund it")
        if int(self._call(erc20.functions.allowance(owner, self.address), "allowance")) < amount:
            self._send(erc20.functions.approve(self.address, amount), f"approve {action}")
        return 0

    def create_project(self, params: ProjectParams) -> tuple[int, Receipt]:
        """Create a project, escrowing its budget (ETH, or an ERC-20 approved here); returns
        (project id, receipt)."""
        fn = self.contract.functions.createProject(params.as_tuple())
        value = self._fund(params.token, params.budget, "createProject")
        rcpt = self._send(fn, "createProject", value=value)
        events = self.contract.events.ProjectCreated().process_receipt({"logs": rcpt.logs}, errors=DISCARD)
        return int(events[0]["args"]["projectId"]), rcpt

    def register(self, project_id: int, stake: int | None = None) -> Receipt:
        """Register, paying the project's stake (ETH, or an ERC-20 approved here)."""
        info = self.project(project_id)
        if stake is not None and stake != info.stake:
            raise ConfigError(f"project {project_id} asks a stake of {info.stake}, not {stake}")
        value = self._fund(info.token, info.stake, "register")
        return self._send(self.contract.functions.register(project_id), "register", value=value)

    def commit(self, project_id: int, round_: int, commitment: bytes) -> Receipt:
        return self._send_fast("commit", (project_id, round_, commitment), "commit")

    def reveal(self, project_id: int, round_: int, cid: str, digest: bytes, salt: bytes) -> Receipt:
        return self._send_fast("reveal", (project_id, round_, cid, digest, salt), "reveal")

    def post_bond(self, project_id: int) -> Receipt:
        """Post the aggregator bond (ETH, or an ERC-20 approved here); finalize_round does it when needed."""
        info = self.project(project_id)
        value = self._fund(info.token, info.aggregator_bond, "postBond")
        return self._send(self.contract.functions.postBond(project_id), "postBond", value=value)

    def finalize_round(
        self, project_id: int, round_: int, model_cid: str, record_cid: str, root: bytes, allocation: int | None = None
    ) -> Receipt:
        """Finalize with the round's fixed allocation (read from the chain), posting the aggregator
        bond first if none is held. `allocation`, if given (the record's), must be that fixed amount:
        a tree may pay less (nobody earned a share), the rest is swept after the claim deadline."""
        (p, fixed_), _ = self._read_many([("getProject", (project_id,)), ("roundAllocation", (project_id,))])
        info, fixed = ProjectInfo(project_id, *p), int(fixed_)
        if allocation is not None and allocation != fixed:
            raise ConfigError(
                f"round {round_} of project {project_id} allocates exactly {fixed} (fixed by the project's"
                f" parameters), not {allocation}: build the rewards tree for {fixed}"
            )
        if info.bond_held == 0 and info.aggregator.lower() == self.account_address.lower():
            self.post_bond(project_id)
        args = (project_id, round_, model_cid, record_cid, root, fixed)
        return self._send_fast("finalizeRound", args, "finalizeRound")

    def expire_round(self, project_id: int, round_: int | None = None) -> Receipt:
        """Close the open round (default) that was not finalized by its deadline; anyone may send it."""
        r = self.project(project_id).current_round if round_ is None else round_
        return self._send(self.contract.functions.expireRound(project_id, r), "expireRound")

    def forfeit_deposit(self, project_id: int, round_: int, trainer: str) -> Receipt:
        """Take the commit deposit of a trainer that did not reveal (it goes to the round's revealers)."""
        fn = self.contract.functions.forfeitDeposit(project_id, round_, checksum(trainer, "trainer"))
        return self._send(fn, "forfeitDeposit")

    def dispute(self, project_id: int, round_: int, evidence_cid: str, bond: int | None = None) -> Receipt:
        """Dispute a round, paying the project's bond (ETH, or an ERC-20 approved here). `bond`,
        if given, is sent as is (to test the contract's check). The dispute's index is in the
        receipt's RoundDisputed event (`disputes_opened`)."""
        info = self.project(project_id)
        fn = self.contract.functions.dispute(project_id, round_, evidence_cid)
        if bond is not None and int(info.token, 16) == 0:
            return self._send(fn, "dispute", value=bond)
        return self._send(fn, "dispute", value=self._fund(info.token, info.dispute_bond, "dispute"))

    def resolve_dispute(
        self,
        project_id: int,
        round_: int,
        upheld: bool,
        reason_cid: str,
        *,
        index: int | None = None,
        corrected_root: bytes | None = None,
    ) -> Receipt:
        """Rule on dispute `index` of the round (default: its oldest pending one, else 0). Upholding
        needs the corrected rewards root, which replaces the round's root (the contract refuses an
        upheld ruling without one: EmptyRoot)."""
        if index is None:
            pending = [d.index for d in self.disputes(project_id, round_) if d.status == DisputeStatus.PENDING]
            index = pending[0] if pending else 0
        root = corrected_root if upheld and corrected_root else bytes(32)
        fn = self.contract.functions.resolveDispute(project_id, round_, index, upheld, reason_cid, root)
        return self._send(fn, "resolveDispute")

    def lapse_dispute(self, project_id: int, round_: int, index: int) -> Receipt:
        """Close a dispute the arbiter did not rule on in time (bond refunded, round stands)."""
        return self._send(self.contract.functions.lapseDispute(project_id, round_, index), "lapseDispute")

    def claim(
        self,
        project_id: int,
        round_: int,
        trainer: str,
        cumulative: int,
        proof: list[bytes],
        *,
        recipient: str | None = None,
    ) -> Receipt:
        """Pay `trainer`'s leaf to `trainer`; with `recipient`, the sender's own leaf to `recipient`."""
        if recipient is None:
            fn = self.contract.functions.claim(project_id, round_, checksum(trainer, "trainer"), cumulative, proof)
            return self._send(fn, "claim")
        if checksum(trainer, "trainer") != checksum(self.account_address):
            raise ConfigError(f"only {trainer} may send its reward elsewhere: sign with that account")
        fn = self.contract.functions.claimTo(project_id, round_, cumulative, proof, checksum(recipient, "recipient"))
        return self._send(fn, "claimTo")

    def claim_pool_share(self, project_id: int, round_: int, recipient: str | None = None) -> Receipt:
        """Take the sender's share of a round's pool (slashed aggregator bond, forfeited deposits)."""
        to = checksum(recipient or self.account_address, "recipient")
        return self._send(self.contract.functions.claimPoolShare(project_id, round_, to), "claimPoolShare")

    def end_project(self, project_id: int) -> Receipt:
        """End the project (anyone may, once every round is closed and settled)."""
        return self._send(self.contract.functions.endProject(project_id), "endProject")

    def sweep(self, project_id: int) -> Receipt:
        """After the claim deadline, credit the owner with what no leaf claimed."""
        return self._send(self.contract.functions.sweep(project_id), "sweep")

    def withdraw_stake(self, project_id: int, recipient: str | None = None) -> Receipt:
        """Withdraw the sender's stake after the end, to itself or to `recipient`."""
        if recipient is None:
            return self._send(self.contract.functions.withdrawStake(project_id), "withdrawStake")
        fn = self.contract.functions.withdrawStakeTo(project_id, checksum(recipient, "recipient"))
        return self._send(fn, "withdrawStakeTo")

    def withdraw_credit(self, project_id: int, recipient: str | None = None) -> Receipt:
        """Withdraw the sender's credit, to itself or to `recipient`."""
        if recipient is None:
            return self._send(self.contract.functions.withdrawCredit(project_id), "withdrawCredit")
        fn = self.contract.functions.withdrawCreditTo(project_id, checksum(recipient, "recipient"))
        return self._send(fn, "withdrawCreditTo")

    def replace_aggregator(self, project_id: int, new_aggregator: str) -> Receipt:
        """Owner only, after the aggregator let a round expire."""
        fn = self.contract.functions.replaceRole(project_id, int(Role.AGGREGATOR), checksum(new_aggregator, "aggregator"))
        return self._send(fn, "replaceRole")

    def replace_arbiter(self, project_id: int, new_arbiter: str) -> Receipt:
        """Owner only, after the arbiter let a dispute lapse."""
        fn = self.contract.functions.replaceRole(project_id, int(Role.ARBITER), checksum(new_arbiter, "arbiter"))
        return self._send(fn, "replaceRole")

    def transfer_project_ownership(self, project_id: int, new_owner: str) -> Receipt:
        fn = self.contract.functions.transferProjectOwnership(project_id, checksum(new_owner, "new owner"))
        return self._send(fn, "transferProjectOwnership")

    def accept_project_ownership(self, project_id: int) -> Receipt:
        return self._send(self.contract.functions.acceptProjectOwnership(project_id), "acceptProjectOwnership")

    # ------------------------------------------------------------------ views

    def project_count(self) -> int:
        return int(self._call(self.contract.functions.projectCount(), "projectCount"))

    def project(self, project_id: int) -> ProjectInfo:
        p = self._call(self.contract.functions.getProject(project_id), "getProject")
        return ProjectInfo(project_id, *p)

    def round(self, project_id: int, round_: int) -> RoundInfo:
        r = self._call(self.contract.functions.getRound(project_id, round_), "getRound")
        return RoundInfo(
            project_id, round_, r[0], RoundStatus(r[1]), r[2], r[3], "0x" + bytes(r[5]).hex(),
            reveals=r[4], pool=r[6], pending_disputes=r[7], dispute_count=r[8], corrected=bool(r[9]),
        )

    def round_allocation(self, project_id: int) -> int:
        """The open round's fixed allocation (`roundAllocation`)."""
        return int(self._call(self.contract.functions.roundAllocation(project_id), "roundAllocation"))

    def settles_after(self, project_id: int, round_: int) -> int:
        """Last block at which the round may still be unsettled (claims and the next finalize wait)."""
        return int(self._call(self.contract.functions.settlesAfter(project_id, round_), "settlesAfter"))

    def dispute_info(self, project_id: int, round_: int, index: int) -> DisputeInfo:
        d = self._call(self.contract.functions.getDispute(project_id, round_, index), "getDispute")
        return DisputeInfo(project_id, round_, index, d[0], DisputeStatus(d[1]), int(d[2]))

    def disputes(self, project_id: int, round_: int) -> list[DisputeInfo]:
        """Every dispute of the round, by index."""
        n = self.round(project_id, round_).dispute_count
        return [self.dispute_info(project_id, round_, i) for i in range(n)]

    def pool_share_of(self, project_id: int, round_: int, trainer: str) -> int:
        fn = self.contract.functions.poolShareOf(project_id, round_, checksum(trainer, "trainer"))
        return int(self._call(fn, "poolShareOf"))

    def commitment_state(self, project_id: int, round_: int, trainer: str) -> CommitState:
        fn = self.contract.functions.commitmentState(project_id, round_, checksum(trainer, "trainer"))
        return CommitState(self._call(fn, "commitmentState"))

    def registration(self, project_id: int, trainer: str) -> tuple[bool, int]:
        fn = self.contract.functions.registration(project_id, checksum(trainer, "trainer"))
        registered, stake = self._call(fn, "registration")
        return bool(registered), int(stake)

    def claimed_by(self, project_id: int, trainer: str) -> int:
        fn = self.contract.functions.claimedBy(project_id, checksum(trainer, "trainer"))
        return int(self._call(fn, "claimedBy"))

    def credit_of(self, project_id: int, account: str) -> int:
        fn = self.contract.functions.creditOf(project_id, checksum(account, "account"))
        return int(self._call(fn, "creditOf"))

    # ------------------------------------------------------------------ events

    def _logs(self, event: str | Sequence[str], from_block: int, **filters: Any) -> list[dict[str, Any]]:
        """Logs of `event` (or of several events that index `filters` alike) whose indexed
        arguments equal `filters`, in chain order, shaped as web3's (`args`, `blockNumber`,
        `logIndex`, `transactionHash`). The node filters by topic; logs are decoded here from the
        ABI (`market.chain.events`), an order of magnitude faster than web3's formatters on a
        round of a thousand reveals. Read up to the head held back by `confirmations`, in pages
        of `page_size` blocks; on a local chain (neither set) in one call to the newest block."""
        try:
            topics = topic_filter(self.abi, event, **filters)
        except KeyError as exc:
            raise ChainError(f"the LearningMarket ABI has no event {exc.args[0]!r}: check the event name") from None
        reader = LogReader(self.w3, self.address, self.abi, start_block=max(self.deployed_at, from_block),
                           page=self.page_size or DEFAULT_PAGE, confirmations=self.confirmations, topics=topics)
        try:
            found = reader.read_to_latest() if self.page_size is None and self.confirmations == 0 else reader.poll()
        except ChainError as exc:
            raise ChainError(f"reading {event} events failed: {exc}") from exc
        return [{"event": e.name, "args": e.args, "blockNumber": e.block_number, "logIndex": e.log_index,
                 "transactionHash": bytes.fromhex(e.tx_hash.removeprefix("0x"))} for e in found]

    def project_created(self, project_id: int, from_block: int = 0) -> ProjectCreated:
        logs = self._logs("ProjectCreated", from_block, projectId=project_id)
        if not logs:
            raise ChainError(f"no ProjectCreated event for project {project_id}: check the project id")
        a = logs[0]["args"]
        return ProjectCreated(
            project_id, a["owner"], a["token"], int(a["budget"]), a["specCID"], logs[0]["blockNumber"]
        )

    def commits(self, project_id: int, round_: int, from_block: int = 0) -> list[Commit]:
        logs = self._logs("UpdateCommitted", from_block, projectId=project_id, round=round_)
        return [
            Commit(project_id, round_, e["args"]["trainer"], bytes(e["args"]["commitment"]), e["blockNumber"], e["logIndex"])
            for e in logs
        ]

    def reveals(self, project_id: int, round_: int, from_block: int = 0) -> list[Reveal]:
        logs = self._logs("UpdateRevealed", from_block, projectId=project_id, round=round_)
        return [
            Reveal(
                project_id, round_, e["args"]["trainer"], e["args"]["cid"], bytes(e["args"]["digest"]),
                e["blockNumber"], e["logIndex"],
            )
            for e in logs
        ]

    def submissions(self, project_id: int, round_: int, from_block: int = 0) -> tuple[list[Commit], list[Reveal]]:
        """The round's commits and reveals, read in one query (`commits` and `reveals` together)."""
        commits, reveals = [], []
        for e in self._logs(("UpdateCommitted", "UpdateRevealed"), from_block, projectId=project_id, round=round_):
            a = e["args"]
            if e["event"] == "UpdateCommitted":
                commits.append(Commit(project_id, round_, a["trainer"], bytes(a["commitment"]), e["blockNumber"],
                                      e["logIndex"]))
            else:
                reveals.append(Reveal(project_id, round_, a["trainer"], a["cid"], bytes(a["digest"]), e["blockNumber"],
                                      e["logIndex"]))
        return commits, reveals

    def finalized(self, project_id: int, from_block: int = 0) -> list[Finalized]:
        logs = self._logs("RoundFinalized", from_block, projectId=project_id)
        return [
            Finalized(
                project_id, int(e["args"]["round"]), e["args"]["modelCID"], e["args"]["recordCID"],
                bytes(e["args"]["rewardsRoot"]), int(e["args"]["allocation"]), e["blockNumber"],
            )
            for e in logs
        ]

    def disputes_opened(self, project_id: int, from_block: int = 0) -> list[DisputeOpened]:
        return [
            DisputeOpened(
                project_id, int(e["args"]["round"]), int(e["args"]["index"]), e["args"]["disputer"],
                e["args"]["evidenceCID"], int(e["args"]["bond"]), e["blockNumber"],
            )
            for e in self._logs("RoundDisputed", from_block, projectId=project_id)
        ]

    def rulings(self, project_id: int, from_block: int = 0) -> list[DisputeRuling]:
        """Every ruling and lapse, in chain order."""
        out = [
            DisputeRuling(
                project_id, int(e["args"]["round"]), int(e["args"]["index"]),
                DisputeStatus.UPHELD if e["args"]["upheld"] else DisputeStatus.DISMISSED, e["args"]["reasonCID"],
                bytes(e["args"]["correctedRoot"]) if e["args"]["upheld"] else None, e["blockNumber"],
            )
            for e in self._logs("DisputeResolved", from_block, projectId=project_id)
        ]
        out += [
            DisputeRuling(project_id, int(e["args"]["round"]), int(e["args"]["index"]), DisputeStatus.LAPSED, None, None,
                          e["blockNumber"])
            for e in self._logs("DisputeLapsed", from_block, projectId=project_id)
        ]
        return sorted(out, key=lambda d: d.block_number)

    def expired(self, project_id: int, from_block: int = 0) -> list[Expired]:
        return [
            Expired(project_id, int(e["args"]["round"]), int(e["args"]["slashed"]), e["blockNumber"])
            for e in self._logs("RoundExpired", from_block, projectId=project_id)
        ]

    def trainers(self, project_id: int, from_block: int = 0) -> list[str]:
        """Registered trainers, in registration order (read from events, never from a loop on chain)."""
        return [e["args"]["trainer"] for e in self._logs("TrainerRegistered", from_block, projectId=project_id)]

    def events(self, event: str, project_id: int, from_block: int = 0) -> list[dict[str, Any]]:
        """Raw decoded events of one kind for a project (for status and audit views)."""
        return [
            dict(e["args"]) | {"blockNumber": e["blockNumber"], "transactionHash": "0x" + bytes(e["transactionHash"]).hex()}
            for e in self._logs(event, from_block, projectId=project_id)
        ]
