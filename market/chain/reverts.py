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
    "NotOwner": "send from the project owner's account",
    "NotAggregator": "send from the project's aggregator account",
    "NotArbiter": "send from the project's arbiter account",
    "NotStakeholder": "only the owner or a registered trainer may dispute",
    "NotRegistered": "register first with `trainer join`",
    "AlreadyRegistered": "this account is already registered",
    "CommitClosed": "the commit window has passed: wait for the next round",
    "AlreadyCommitted": "this trainer already committed this round",
    "RevealNotOpen": "reveals open after the commit deadline: wait a few blocks",
    "RevealClosed": "the reveal window has passed: this round's update is lost",
    "RevealMismatch": "the CID, digest or salt differ from the commitment",
    "RevealStillOpen": "finalize only after the reveal deadline",
    "ChallengeWindowOpen": "wait until the challenge window closes",
    "ChallengeWindowClosed": "disputes are only accepted inside the challenge window",
    "WrongPayment": "send exactly the amount asked (budget, stake or bond)",
    "InvalidProof": "fetch the proof from the latest settled round record",
    "NothingToClaim": "everything earned so far has been claimed",
    "RoundsRemaining": "end the project only after its last round is finalized",
}
