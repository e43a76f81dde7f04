"""The Python face of the LearningMarket contract: every call, view and event, typed."""

from __future__ import annotations

from typing import Any

from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import is_address, keccak, to_checksum_address
from web3 import Web3
from web3.exceptions import ContractLogicError
from web3.logs import DISCARD

from market.chain.records import (
    Commit,
    CommitState,
    Finalized,
    ProjectCreated,
    ProjectInfo,
    ProjectParams,
    Reveal,
    RoundInfo,
    RoundStatus,
)
from market.chain.reverts import RevertDecoder
from market.chain.sender import Receipt, TxSender, revert_data
from market.errors import ChainError, ConfigError, InsufficientFunds

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
    ):
        self.w3 = w3
        self.address = checksum(address, "contract address")
        self.abi = abi
        self.contract = w3.eth.contract(address=self.address, abi=abi)
        self.decoder = RevertDecoder(abi)
        self.sender = TxSender(w3, account, self.decoder, receipt_timeout=receipt_timeout) if account else None

    # ------------------------------------------------------------------ plumbing

    def with_account(self, account: LocalAccount) -> MarketClient:
        """The same contract, sending from `account`."""
        return MarketClient(self.w3, self.address, self.abi, account)

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
            raise ChainError(f"{action}: the node did not answer ({type(exc).__name__}: {exc})") from exc

    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

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
        return self._send(self.contract.functions.commit(project_id, round_, commitment), "commit")

    def reveal(self, project_id: int, round_: int, cid: str, digest: bytes, salt: bytes) -> Receipt:
        return self._send(self.contract.functions.reveal(project_id, round_, cid, digest, salt), "reveal")

    def finalize_round(
        self, project_id: int, round_: int, model_cid: str, record_cid: str, root: bytes, allocation: int
    ) -> Receipt:
        fn = self.contract.functions.finalizeRound(project_id, round_, model_cid, record_cid, root, allocation)
        return self._send(fn, "finalizeRound")

    def dispute(self, project_id: int, round_: int, evidence_cid: str, bond: int | None = None) -> Receipt:
        """Dispute a round, paying the project's bond (ETH, or an ERC-20 approved here). `bond`,
        if given, is sent as is (to test the contract's check)."""
        info = self.project(project_id)
        fn = self.contract.functions.dispute(project_id, round_, evidence_cid)
        if bond is not None and int(info.token, 16) == 0:
            return self._send(fn, "dispute", value=bond)
        return self._send(fn, "dispute", value=self._fund(info.token, info.dispute_bond, "dispute"))

    def resolve_dispute(self, project_id: int, round_: int, upheld: bool, reason_cid: str) -> Receipt:
        fn = self.contract.functions.resolveDispute(project_id, round_, upheld, reason_cid)
        return self._send(fn, "resolveDispute")

    def claim(self, project_id: int, round_: int, trainer: str, cumulative: int, proof: list[bytes]) -> Receipt:
        fn = self.contract.functions.claim(project_id, round_, checksum(trainer, "trainer"), cumulative, proof)
        return self._send(fn, "claim")

    def end_project(self, project_id: int) -> Receipt:
        return self._send(self.contract.functions.endProject(project_id), "endProject")

    def withdraw_stake(self, project_id: int) -> Receipt:
        return self._send(self.contract.functions.withdrawStake(project_id), "withdrawStake")

    def withdraw_credit(self, project_id: int) -> Receipt:
        return self._send(self.contract.functions.withdrawCredit(project_id), "withdrawCredit")

    def slash_stake(self, project_id: int, trainer: str, reason_cid: str) -> Receipt:
        fn = self.contract.functions.slashStake(project_id, checksum(trainer, "trainer"), reason_cid)
        return self._send(fn, "slashStake")

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
        return RoundInfo(project_id, round_, r[0], RoundStatus(r[1]), r[2], r[3], "0x" + bytes(r[4]).hex())

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

    def _logs(self, event: str, from_block: int, **filters: Any) -> list[Any]:
        try:
            return list(
                getattr(self.contract.events, event)().get_logs(
                    from_block=from_block, to_block="latest", argument_filters=filters or None
                )
            )
        except Exception as exc:
            raise ChainError(f"reading {event} events failed: {exc}") from exc

    def project_created(self, project_id: int, from_block: int = 0) -> ProjectCreated:
        logs = self._logs("ProjectCreated", from_block, projectId=project_id)
        if not logs:
            raise ChainError(f"no ProjectCreated event for project {project_id}: check the project id")
        a = logs[0]["args"]
        params = a["params"]
        # web3 decodes the params struct as a mapping of named fields (a tuple on older versions)
        spec_cid = params["specCID"] if hasattr(params, "keys") else params[-1]
        return ProjectCreated(
            project_id, a["owner"], a["token"], int(a["budget"]), spec_cid, logs[0]["blockNumber"]
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

    def finalized(self, project_id: int, from_block: int = 0) -> list[Finalized]:
        logs = self._logs("RoundFinalized", from_block, projectId=project_id)
        return [
            Finalized(
                project_id, int(e["args"]["round"]), e["args"]["modelCID"], e["args"]["recordCID"],
                bytes(e["args"]["rewardsRoot"]), int(e["args"]["allocation"]), e["blockNumber"],
            )
            for e in logs
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
