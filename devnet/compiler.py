"""Compile the Solidity sources with solc-js through py-solc-x, caching artifacts.

Artifacts (ABI, bytecode, compiler version, source hash) are written to `build/contracts/` and
rebuilt only when a source, an imported OpenZeppelin file, or the compiler version changes.
`python -m devnet.compiler --ship` copies LearningMarket's artifact into the package
(`market/chain/abi/`), which is all that readers of the chain need.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from devnet import toolpaths
from market.chain.artifact import ContractArtifact
from market.errors import CompileError, ToolchainError

EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200  # LearningMarket v2 exceeds the 24 KiB code limit at 10,000 runs


#: A compiled contract; the same record the package ships in `market/chain/abi/`.
Artifact = ContractArtifact
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "market" / "chain" / "abi"


def _solc_binary() -> Path:
    if shutil.which("node") is None:
        raise ToolchainError("node is not on PATH: install Node.js 20 (the Solidity compiler runs on it)")
    if not (toolpaths.NODE_MODULES / "solc").is_dir():
        raise ToolchainError(
            f"solc-js is not installed in {toolpaths.NODE_MODULES}: run `npm ci` in {toolpaths.ROOT}"
        )
    return toolpaths.SOLC_FRONT


def compiler_version() -> str:
    out = subprocess.run([str(_solc_binary()), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].removeprefix("Version: ")


def _sources(source_dir: Path) -> dict[str, Path]:
    return {f"src/{p.relative_to(source_dir).as_posix()}": p for p in sorted(source_dir.rglob("*.sol"))}


def _source_hash(sources: dict[str, Path], version: str) -> str:
    h = hashlib.sha256(version.encode())
    h.update(f"{EVM_VERSION}:{OPTIMIZER_RUNS}".encode())
    for name, p in sources.items():
        h.update(name.encode())
        h.update(p.read_bytes())
    oz = toolpaths.NODE_MODULES / "@openzeppelin" / "contracts" / "package.json"
    if oz.exists():
        h.update(oz.read_bytes())
    return h.hexdigest()


def compile_contracts(
    source_dir: Path | None = None, build_dir: Path | None = None, force: bool = False
) -> dict[str, Artifact]:
    """Compile every contract under `source_dir`; reuse the cached build when nothing changed."""
    import solcx  # imported late: it is slow to import and only needed here

    source_dir = source_dir or toolpaths.CONTRACT_SOURCES
    build_dir = build_dir or toolpaths.BUILD_DIR
    sources = _sources(source_dir)
    if not sources:
        raise CompileError(f"no Solidity sources under {source_dir}")
    binary = _solc_binary()
    # The cache key uses solc-js's package version (cheap to read); the full version string is
    # asked of the compiler only when compiling.
    pkg_version = json.loads((toolpaths.NODE_MODULES / "solc" / "package.json").read_text())["version"]
    digest = _source_hash(sources, pkg_version)
    manifest = build_dir / "manifest.json"
    if not force and manifest.exists():
        cached = json.loads(manifest.read_text())
        if cached.get("source_hash") == digest:
            return {n: Artifact(**json.loads((build_dir / f"{n}.json").read_text())) for n in cached["contracts"]}

    version = compiler_version()
    standard_input: dict[str, Any] = {
        "language": "Solidity",
        "sources": {name: {"urls": [str(p)]} for name, p in sources.items()},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }
    # solc-js reads `urls` through the import callback, which resolves against the repository root.
    for name, p in sources.items():
        standard_input["sources"][name] = {"content": p.read_text()}
    try:
        out = solcx.compile_standard(
            standard_input, solc_binary=str(binary), allow_paths=[str(toolpaths.ROOT)], base_path=str(toolpaths.ROOT)
        )
    except solcx.exceptions.SolcError as exc:  # type: ignore[attr-defined]
        # The exception text embeds the whole stdout; the first lines carry the diagnosis.
        first = "\n".join(str(exc).splitlines()[:6])
        raise CompileError(f"the Solidity compiler failed: {first}") from exc
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise CompileError("; ".join(e.get("formattedMessage", e.get("message", "")) for e in errors))

    build_dir.mkdir(parents=True, exist_ok=True)
    artifacts: dict[str, Artifact] = {}
    for file_name in sources:
        for cname, c in out["contracts"].get(file_name, {}).items():
            art = Artifact(
                name=cname,
                abi=c["abi"],
                bytecode="0x" + c["evm"]["bytecode"]["object"],
                deployed_bytecode="0x" + c["evm"]["deployedBytecode"]["object"],
                compiler=version,
                source_hash=digest,
            )
            artifacts[cname] = art
            (build_dir / f"{cname}.json").write_text(json.dumps(art.__dict__))
    manifest.write_text(json.dumps({"source_hash": digest, "compiler": version, "contracts": sorted(artifacts)}))
    return artifacts


def load_artifact(name: str = "LearningMarket") -> Artifact:
    """The artifact of one contract, compiling first if the cache is stale or missing."""
    artifacts = compile_contracts()
    if name not in artifacts:
        raise CompileError(f"no contract named {name!r} in {toolpaths.CONTRACT_SOURCES}")
    return artifacts[name]


def ship(names: tuple[str, ...] = ("LearningMarket",)) -> list[Path]:
    """Write the artifacts of `names` into the package's `market/chain/abi/`."""
    artifacts = compile_contracts()
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        path = SHIPPED_DIR / f"{name}.json"
        path.write_text(artifacts[name].to_json())
        written.append(path)
    return written


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--ship"]:
        sys.exit("usage: python -m devnet.compiler --ship   (compile contracts/src and ship the ABI)")
    for path in ship():
        print(f"wrote {path}")
