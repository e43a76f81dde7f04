"""Turn revert data into typed exceptions naming the contract's custom error and its arguments."""

from __future__ import annotations

from typing import Any

from eth_abi import decode
from eth_utils import function_signature_to_4byte_selector, to_checksum_address

from market.errors import ContractRevert

_BUILTIN = {
    bytes.fromhex("08c379a0"): ("Error", [("message", "string")]),
    bytes.fromhex("4e487b71"): ("Panic", [("code", "uint256")]),
}


def _type_str(inp: dict[str, Any]) -> str:
    if inp["type"].startswith("tuple"):
        inner = ",".join(_type_str(c) for c in inp["components"])
        return f"({inner}){inp['type'][5:]}"
    return str(inp["type"])


class RevertDecoder:
    """Decodes revert data against the custom errors of an ABI."""

    def __init__(self, abi: list[dict[str, Any]]):
        self._errors: dict[bytes, tuple[str, list[tuple[str, str]]]] = dict(_BUILTIN)
        for item in abi:
            if item.get("type") == "error":
                types = [_type_str(i) for i in item["inputs"]]
                sig = f"{item['name']}({','.join(types)})"
                self._errors[function_signature_to_4byte_selector(sig)] = (
                    item["name"],
                    [(i["name"], t) for i, t in zip(item["inputs"], types)],
                )

    def decode(self, data: object, action: str) -> ContractRevert:
        if isinstance(data, str):
            if not data.startswith("0x"):
                # already-decoded text (the embedded chain decodes string arguments itself)
                return ContractRevert(f"{action} reverted: {data}", None, {"message": data})
            data = bytes.fromhex(data[2:])
        if not isinstance(data, bytes) or len(data) < 4:
            return ContractRevert(f"{action} reverted without a reason", None, {})
        entry = self._errors.get(data[:4])
        if entry is None:
            return ContractRevert(f"{action} reverted with unknown error 0x{data[:4].hex()}", None, {})
        name, inputs = entry
        try:
            values = decode([t for _, t in inputs], data[4:])
        except Exception:  # noqa: BLE001 - eth_abi raises several types; any means "undecodable"
            return ContractRevert(f"{action} reverted with {name} (undecodable arguments)", name, {})
        args = {}
        for (arg_name, t), v in zip(inputs, values):
            if t == "address":
                v = to_checksum_address(v)
            elif t.startswith("bytes"):
                v = "0x" + v.hex()
            args[arg_name] = v
        shown = ", ".join(f"{k}={v}" for k, v in args.items())
        hint = HINTS.get(name, "")
        return ContractRevert(f"{action} reverted: {name}({shown}){'; ' + hint if hint else ''}", name, args)


#: What a user can do about each custom error.
HINTS = {
    "UnknownProject": "check the project id with `market project status`",
    "ZeroRounds": "give the project at least one round",
    "ZeroReward": "give a reward per round above 0",
    "WindowTooShort": "lengthen the window to at least the minimum shown",
    "SettlementDoesNotFit": "challenge + rule windows must be shorter than commit + reveal + finalize windows",
    "RolesNotDistinct": "owner, aggregator and arbiter must be three different accounts, none of them a trainer",
    "EmptyCID": "give a non-empty CID",
    "BudgetTooLarge": "lower the reward per round or the number of rounds",
    "BelowMinimum": "raise the amount to the minimum shown (what: 0 stake, 1 dispute bond, 2 aggregator bond, 3 commit deposit)",
    "NotOwner": "send from the project owner's account",
    "NotPendingOwner": "send from the account the ownership was offered to",
    "NotAggregator": "send from the project's aggregator account",
    "NotArbiter": "send from the project's arbiter account",
    "NotStakeholder": "only the owner or a registered trainer may dispute",
    "RoleNotMissed": "a role can only be replaced after its holder missed a deadline (expired round, lapsed dispute)",
    "NotRegistered": "register first with `trainer join`",
    "AlreadyRegistered": "this account is already registered",
    "BondNotPosted": "post the aggregator bond first (`postBond`)",
    "BondAlreadyPosted": "the aggregator bond is already posted",
    "ProjectEndedAlready": "the project has ended: withdraw stakes, credits and claims instead",
    "ProjectNotEnded": "wait until the project ends (anyone may end it once every round is settled)",
    "RoundNotOpen": "check the open round with `market project status`",
    "CommitClosed": "the commit window has passed: wait for the next round",
    "InvalidCommitment": "compute the commitment with commitmentOf",
    "StakeBelowDeposit": "the stake left cannot cover a commit deposit (lost by unrevealed commits)",
    "AlreadyCommitted": "this trainer already committed this round",
    "RevealNotOpen": "reveals open after the commit deadline: wait a few blocks",
    "RevealClosed": "the reveal window has passed: this round's update is lost",
    "NotCommitted": "there is no open commitment for this trainer and round",
    "AlreadyRevealed": "this commitment is already revealed",
    "RevealMismatch": "the CID, digest or salt differ from the commitment",
    "RevealStillOpen": "wait until after the reveal deadline",
    "FinalizeClosed": "the finalize deadline passed: the round can only be expired (`expireRound`)",
    "FinalizeStillOpen": "the aggregator may still finalize: wait until after the finalize deadline",
    "RoundUnsettled": "wait until the round is settled (challenge window over, disputes ruled or lapsed)",
    "AllocationMismatch": "build the rewards tree for the round's fixed allocation (`roundAllocation`)",
    "EmptyRoot": "give a non-zero rewards root",
    "RoundNotFinalized": "only a finalized round can be disputed",
    "ChallengeWindowClosed": "disputes are only accepted inside the challenge window",
    "DisputeNotPending": "this dispute was already ruled or lapsed",
    "RulingClosed": "the ruling deadline passed: the dispute can only lapse (`lapseDispute`)",
    "RulingStillOpen": "the arbiter may still rule: wait until after the ruling deadline",
    "RoundNotClaimable": "wait until the round is settled (the error says from which block), or claim through another round",
    "WrongPayment": "send exactly the amount asked (budget, stake or bond)",
    "UnexpectedEther": "this project pays in a token: send no ETH",
    "InvalidProof": "fetch the proof from the latest settled round record",
    "NothingToClaim": "everything earned so far has been claimed",
    "ClaimExceedsAllocation": "the leaf asks more than the project allocated up to that round: dispute the round",
    "ClaimsClosed": "the claim deadline passed: unclaimed rewards were or will be swept to the owner",
    "ClaimsStillOpen": "wait until after the claim deadline to sweep",
    "RoundsRemaining": "every round must be finalized or expired first (`expireRound` once its deadline passed)",
    "NothingToWithdraw": "nothing is owed to this account here",
    "ZeroRecipient": "give a recipient address",
}
