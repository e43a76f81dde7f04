"""The hot path to an HTTP node: contract calls encoded with eth-abi from the ABI, and JSON-RPC
requests (single or batched) sent through the provider without web3's middleware and formatters.

A round costs every trainer a handful of calls (its view of the project, an estimate, a send). On
loopback the node answers in well under a millisecond; what costs is the client: web3 resolves and
re-validates the whole contract ABI (a keccak per function) for each call it encodes, and runs
every request and result through its formatter stack. Here each function's selector and types are
looked up once, results are decoded as web3 decodes them (addresses checksummed, a single output
unwrapped, several as a list, structs as tuples), and a batch is one HTTP request.

Only for nodes spoken to over HTTP; the embedded chain keeps web3's own path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_abi import decode, encode
from eth_utils import function_abi_to_4byte_selector, to_checksum_address
from web3 import Web3
from web3.types import RPCEndpoint

__all__ = ["AbiCalls", "RpcFailure", "batch", "request"]


class RpcFailure(Exception):
    """A JSON-RPC request the node answered with an error (`error`: its error object)."""

    def __init__(self, method: str, error: dict[str, Any]):
        super().__init__(f"{method}: {error.get('message', error)}")
        self.method = method
        self.error = error

    @property
    def data(self) -> str | None:
        """The revert data of a reverted call, when the node sent it."""
        data = self.error.get("data")
        if isinstance(data, dict):  # some nodes nest it: {"data": {"data": "0x..."}}
            data = data.get("data")
        return data if isinstance(data, str) and data.startswith("0x") else None


def _type(param: dict[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        return "(" + ",".join(_type(c) for c in param["components"]) + ")" + kind[len("tuple"):]
    return kind


def _normal(param: dict[str, Any], value: Any) -> Any:
    """`value` as web3 returns it: addresses checksummed, structs as tuples, arrays as lists."""
    kind = str(param["type"])
    if kind.endswith("]"):
        inner = {**param, "type": kind[: kind.rindex("[")]}
        return [_normal(inner, v) for v in value]
    if kind == "tuple":
        return tuple(_normal(c, v) for c, v in zip(param["components"], value, strict=True))
    if kind == "address":
        return to_checksum_address(value)
    return value


@dataclass(frozen=True)
class _Function:
    selector: bytes
    inputs: list[str]
    outputs: list[dict[str, Any]]
    output_types: list[str]


class AbiCalls:
    """Encodes calls to, and decodes results of, the functions of one ABI (no overloads)."""

    def __init__(self, abi: list[dict[str, Any]]):
        self._fns: dict[str, _Function] = {}
        for e in abi:
            if e.get("type") == "function":
                outputs = list(e.get("outputs", []))
                selector = function_abi_to_4byte_selector(e)  # type: ignore[arg-type]
                self._fns[str(e["name"])] = _Function(
                    selector, [_type(p) for p in e["inputs"]], outputs, [_type(p) for p in outputs])

    def data(self, name: str, *args: Any) -> str:
        """The calldata of `name(*args)`, 0x-hex."""
        fn = self._fns[name]
        return "0x" + (fn.selector + encode(fn.inputs, list(args))).hex()

    def result(self, name: str, data: str) -> Any:
        """What `name` returned, as web3's `call()` returns it."""
        fn = self._fns[name]
        values = decode(fn.output_types, bytes.fromhex(data.removeprefix("0x")))
        out = [_normal(p, v) for p, v in zip(fn.outputs, values, strict=True)]
        return out[0] if len(out) == 1 else out


def request(w3: Web3, method: str, params: list[Any]) -> Any:
    """One JSON-RPC request's result; RpcFailure when the node answers with an error."""
    answer = w3.provider.make_request(RPCEndpoint(method), params)
    if "error" in answer:
        raise RpcFailure(method, dict(answer["error"]))  # type: ignore[arg-type]
    return answer["result"]


def batch(w3: Web3, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """The results of `calls` sent as one JSON-RPC batch, in order; RpcFailure for the first that
    failed (or for the whole batch, when the node refused it)."""
    answers = w3.provider.make_batch_request([(RPCEndpoint(m), p) for m, p in calls])  # type: ignore[attr-defined]
    if not isinstance(answers, list):
        raise RpcFailure("batch", dict(answers.get("error", {"message": str(answers)})))
    if len(answers) != len(calls):
        raise RpcFailure("batch", {"message": f"{len(answers)} answers to {len(calls)} requests"})
    out = []
    for (method, _), answer in zip(calls, answers, strict=True):
        if "error" in answer:
            raise RpcFailure(method, dict(answer["error"]))
        out.append(answer["result"])
    return out
