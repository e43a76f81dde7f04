"""The compiled LearningMarket contract, shipped with the package.

Reading the chain, deploying and auditing need the ABI (and, to deploy, the bytecode) but never the
Solidity compiler: `abi/LearningMarket.json` is package data. `devnet.compiler` rebuilds it from
`contracts/src` (`python -m devnet.compiler --ship`), and `tests/test_abi_parity.py` fails when the
shipped file and a fresh compile disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from importlib import resources
from typing import Any

from market.errors import DeploymentError

__all__ = ["ContractArtifact", "shipped_artifact"]


@dataclass(frozen=True)
class ContractArtifact:
    """One compiled contract: ABI, creation and runtime bytecode, and what built it."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler: str
    source_hash: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"


@cache
def shipped_artifact(name: str = "LearningMarket") -> ContractArtifact:
    """The artifact shipped in `market/chain/abi/`."""
    try:
        text = resources.files("market.chain").joinpath("abi", f"{name}.json").read_text()
    except FileNotFoundError:
        raise DeploymentError(
            f"the package ships no artifact for contract {name!r}: reinstall the package, or in a checkout"
            " run `python -m devnet.compiler --ship`"
        ) from None
    return ContractArtifact(**json.loads(text))
