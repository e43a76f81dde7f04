"""The `audit` command, offered by both CLIs: `aggregator audit PROJECT` and, through the
`market.commands` entry-point group, `market audit PROJECT` (so `market` never imports
`aggregator`). Exit 0 when every round matches, 1 on any mismatch (each one named on stderr), 27
when nothing failed but some round could not be verified here, the usual codes for configuration,
chain and storage errors."""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table

from market.cli.config import Settings, load_settings
from market.cli.kit import ConfigOpt, DeploymentOpt, JsonOpt, RpcOpt, console, emit_json, err_console, format_amount
from market.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from aggregator.audit import RoundAudit
    from market.storage import Store

__all__ = ["EXIT_MISMATCH", "Correction", "audit", "open_settings_store", "write_corrections"]

#: Exit code when the audit finds a mismatch (the rebuild ran, the published round is wrong).
EXIT_MISMATCH = ExitCode.CHECK_FAILED


def open_settings_store(s: Settings) -> Any:
    """The store the settings' `ipfs` key names: an API multiaddr, an http URL or embedded:DIR."""
    from market.storage import open_store

    # ipfshttpclient triggers a urllib3 FutureWarning per request; IpfsStore silences it with
    # warnings.catch_warnings, which is not thread-safe, so parallel fetches let some through.
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*'strict' parameter")

    return open_store(s.ipfs)


RoundsOpt = typer.Option(None, "--round", help="Audit only this round (repeatable).")
IpfsOpt = typer.Option(None, "--ipfs", help="IPFS API (multiaddr or URL) or embedded:DIR; default from the config.")
UserModelsOpt = typer.Option(
    False, "--allow-user-models", help="Build `package.module:factory` architectures (runs their code)."
)


#: How a failed check reads in the table ("record": the round could not be rebuilt or re-encoded).
_CHECK_NAMES = {"record": "not rebuilt", "model": "model", "evaluations": "evaluations", "verdicts": "verdicts",
                "scores": "scores", "rewards": "rewards", "root": "root"}
#: Exit code when no round failed but some could not be verified here (each says why and which
#: flag would let it be rebuilt, if one would).
EXIT_UNVERIFIED = ExitCode.NOT_VERIFIED
ThreadsOpt = typer.Option(None, "--threads", min=1, help="Rebuild on this many threads (results do not depend on it).")
KeyAccountOpt = typer.Option(
    None, "--account", "-a", help="Open encrypted updates with this keystore account's encryption key (a recipient's).")
KeyFileOpt = typer.Option(None, "--key-file", help="Open encrypted updates with this X25519 PEM key (a recipient's).")
CorrectedOutOpt = typer.Option(
    None, "--corrected-out", metavar="DIR", file_okay=False,
    help="Write the rebuilt record of every FAILed round whose rebuild pays by another root to"
         " DIR/p<project>-r<round>.record.json: the corrected record an arbiter upholds with `market resolve --record`.")
PublishOpt = typer.Option(False, "--publish", help="With --corrected-out: also add each corrected record to the store"
                          " and print its CID (the one `market resolve --uphold --record CID` takes).")


#: `RoundAudit.verdict` -> table cell (aggregator.audit loads torch: imported only when run).
_RESULT = {"pass": "[green]PASS[/]", "fail": "[bold red]FAIL[/]", "cannot verify": "[yellow]CANNOT VERIFY[/]"}


def audit(
    project_id: int = typer.Argument(..., help="Project id."),
    rounds: list[int] = RoundsOpt,
    rpc: str = RpcOpt,
    deployment: Path = DeploymentOpt,
    ipfs: str = IpfsOpt,
    allow_user_models: bool = UserModelsOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
    threads: int = ThreadsOpt,
    account: str = KeyAccountOpt,
    key_file: Path = KeyFileOpt,
    corrected_out: Path = CorrectedOutOpt,
    publish: bool = PublishOpt,
) -> None:
    """Rebuild every finalized round from chain + IPFS alone: re-measure every recorded
    evaluation (within its tolerance), then check the model digest, verdicts, scores, rewards and
    Merkle root exactly. Exit 1 on any mismatch, 27 if nothing failed but a round cannot be verified here.
    With --corrected-out (and --publish), a FAILed round's rebuilt record is kept as its correction."""
    from aggregator.audit import audit_project
    from market.chain import connect
    from market.chain.deployment import Deployment

    if publish and corrected_out is None:
        raise ConfigError("--publish adds the corrected records to the store: give --corrected-out DIR too")
    s = load_settings(config).merged(rpc=rpc, deployment=deployment, ipfs=ipfs)
    dep = Deployment.load(s.deployment)
    client = dep.client(connect(s.rpc, profile=s.profile or dep.chain_profile), profile=s.profile)
    keys = []
    if account is not None or key_file is not None:
        from aggregator.service import KeySource

        keys = KeySource(s.keystore, s.state, account=account, key_file=key_file).load()
    store = open_settings_store(s)
    try:
        results = audit_project(client, store, project_id, rounds=rounds or None, allow_user_models=allow_user_models,
                                threads=threads, decryption_keys=keys)
        corrected = [] if corrected_out is None else write_corrections(
            results, project_id, {r.round: client.round(project_id, r.round).rewards_root for r in results},
            corrected_out, store if publish else None)
    finally:
        store.close()
    problems = [p for r in results for p in r.problems]
    unverified = [r for r in results if r.verdict == "cannot verify"]
    if as_json:
        emit_json({"project_id": project_id, "ok": not problems and not unverified,
                   "verified": not unverified, "rounds": [r.to_json() for r in results]}
                  | ({"corrected": [c.to_json() for c in corrected]} if corrected_out is not None else {}))
    else:
        # one "checks" column naming what failed, so the table fits 80 columns and a round whose
        # rebuild could not run is not shown with every check "ok"
        table = Table("round", "status", "trainers", "allocation", "checks", "result",
                      title=f"audit of project {project_id}")
        for col in table.columns[:4]:
            col.no_wrap = True
        table.columns[4].overflow = "fold"
        for r in results:
            failed = [name for name, ok in r.checks.items() if ok is False]
            if failed:
                checks = "[bold red]" + ", ".join(_CHECK_NAMES.get(n, n) for n in failed) + "[/]"
            elif r.cannot_verify:
                checks = "[yellow]chain vs record ok[/]"
            else:
                checks = "[green]all ok[/]"
            table.add_row(
                str(r.round), r.status, f"{r.accepted}/{r.inputs}", format_amount(r.allocation), checks,
                _RESULT[r.verdict],
            )
        console.print(table)
        if not results:
            console.print(f"project {project_id} has no finalized round yet: nothing to audit")
        for c in corrected:
            if c.path is not None:
                console.print(f"corrected record of round {c.round}: {c.path} (rewards root {c.rewards_root}"
                              + (f", CID {c.cid}" if c.cid else "") + ")", highlight=False, soft_wrap=True)
    for c in corrected:
        if c.path is None:
            err_console.print(f"[yellow]no correction:[/] round {c.round}: {c.note}", highlight=False, soft_wrap=True)
    for r in unverified:
        err_console.print(f"[yellow]cannot verify:[/] round {r.round}: {r.cannot_verify}", highlight=False,
                          soft_wrap=True)
    if problems:
        for p in problems:
            err_console.print(f"[bold red]mismatch:[/] {p}", highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_MISMATCH)
    if unverified:
        raise typer.Exit(EXIT_UNVERIFIED)
    keyless = [r for r in results if r.unverified]
    for r in keyless:
        for note in r.unverified:
            err_console.print(f"[yellow]not verified:[/] round {r.round}: {note}", highlight=False, soft_wrap=True)
    if not as_json and keyless:
        console.print(f"{len(results)} round(s) of project {project_id} pass every check that needs no update bytes;"
                      " the updates are encrypted: rerun with a recipient's --account or --key-file to rebuild them")
    elif not as_json and results:
        checked = sum(r.evaluations for r in results)
        worst = max(r.largest_relative_difference for r in results)
        console.print(f"all {len(results)} round(s) of project {project_id} reproduce exactly "
                      f"({checked} recorded evaluations within tolerance, largest relative difference {worst:.2g})")


@dataclass(frozen=True)
class Correction:
    """What `--corrected-out` did for one FAILed round: the corrected record written at `path`
    (None: none, `note` says why), its rewards root, and its CID once published."""

    round: int
    path: Path | None
    rewards_root: str | None = None
    cid: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"path": None if self.path is None else str(self.path)}


def write_corrections(results: list[RoundAudit], project_id: int, roots: dict[int, str], directory: Path,
                      store: Store | None = None) -> list[Correction]:
    """Write (and with `store`, publish) the rebuilt record of every FAILed round as its correction;
    `roots`: each round's rewards root on chain now. A round not rebuilt has none; nor does one whose
    rebuild pays by the chain's root (what failed is then not the payout, e.g. a policy the record
    chose, which the rebuild replays as declared, or a root already corrected)."""
    out = []
    for r in results:
        if r.verdict != "fail":
            continue
        if r.rebuilt is None:
            out.append(Correction(r.round, None, note="the round could not be rebuilt, so there is no corrected record"))
            continue
        root = r.rebuilt.rewards_root
        if root.lower() == roots[r.round].lower():
            out.append(Correction(r.round, None, root, note=f"the rebuilt record pays by the chain's root ({root}):"
                                  " what failed is not the payout, so a corrected root would change nothing"))
            continue
        data = r.rebuilt.to_bytes()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"p{project_id}-r{r.round}.record.json"
        path.write_bytes(data)
        out.append(Correction(r.round, path, root, str(store.add(data)) if store is not None else None))
    return out
