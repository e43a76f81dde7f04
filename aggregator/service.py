"""`aggregator serve`: follow one project on the chain and finalize each round exactly once.

The service polls the chain (every `poll` seconds). Round r runs when it is the project's open
round, its reveal deadline has passed and round r-1 is settled (challenge window over, no
dispute pending). Running it means: `round.load_context` (chain) -> `round.compute_round`
(`gather_inputs`, then the pure `compute_from_inputs`) -> `round.publish_round` (store) ->
`finalizeRound` (chain), with the local journal advanced after every stage.

Restartable and idempotent. The state is the chain plus the journal (`aggregator.journal`):

- every compute stage is re-run after a restart; it is a deterministic function of chain data,
  content-addressed bytes and config, so it gives the same bytes and CIDs, and the allocation is
  the one journalled when the round first ran;
- fetched update bytes are journalled, so an update is never lost once fetched;
- publishing is content-addressed (adding the same bytes again is a no-op);
- before sending `finalizeRound` the chain is asked whether round r is already finalized, and
  a finalize that reverts with `RoundNotOpen` because the round was finalized meanwhile counts
  as done. So a kill at any instant (even between sending the transaction and journalling its
  receipt) never finalizes twice.

Outages (the IPFS node or the RPC node not answering) pause the service with one log line and
retries with exponential backoff; it resumes where it stopped.

Encrypted projects (the spec names recipients): the service opens every update at fetch with its
encryption keys, read once from a `KeySource` when the spec first asks for them: the keystore
encryption key of `--account NAME` (its password from $MARKET_PASSWORD or a prompt), or for
`--dev-account N` the key file `<state>/aggregator/keys/devN.x25519.pem`, encrypted with the
password "dev" (as public as the dev accounts themselves: local chains only; `dev_encryption_key`
creates it). Global models stay public.

Secret validation parts (the spec has `validation_data`, docs/robustness.md): the service reads
the owner's key file (setting `validation_key`), scores round r on part r alone, adds part r to
the store only when round r runs (past its reveal deadline, so every update it scores is already
fixed) and names it in round r's record (`validation_cid`, `aggregation.validation_disclosure`),
which becomes known at finalize. Without `validation_data` nothing changes.

The aggregation policy (the spec's `validation.defence`, `aggregator.policy`): the service adopts
it before its first poll: rule, filter and pay thresholds, scorer, server learning rate and schedule,
and the public validation set all come from the spec, and a setting the operator set explicitly
that contradicts it stops the service with one line naming the key. A spec without a policy
(created before policies) runs on the settings, as before.

Fault injection for tests: `AGGREGATOR_CRASH_AT=<stage>` makes the process `os._exit(137)` right
after that stage (`fetch`, `validate`, `filter`, `aggregate`, `score`, `reward`, `adapt`,
`publish`, `finalize_sent`, `finalize`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.errors import AggregatorError, SettingsError
from aggregator.filters import FilterConfig
from aggregator.journal import Journal, JournalError, RoundEntry, Stage
from aggregator.policy import config_from_policy, policy_of, policy_validation, refuse_contradictions
from aggregator.round import STAGES, RoundConfig, compute_round, load_context, publish_round
from aggregator.rules import make_rule
from aggregator.scoring import make_scorer
from aggregator.settings import AggregatorSettings
from aggregator.valset import (
    BUILTINS,
    SecretParts,
    ValidationSet,
    load_secret_parts,
    load_validation_set,
    with_disclosure,
)
from market._text import one_line
from market.chain import Finalized, MarketClient, ProjectInfo, RoundStatus
from market.errors import (
    ChainError,
    ConfigError,
    ContractRevert,
    InsufficientFunds,
    StorageError,
    TransientError,
    is_transient,
)
from market.protocol.allocation import fixed_allocation
from market.protocol.documents import ProjectSpec
from market.protocol.reading import load_spec
from market.protocol.valsplit import PartDisclosure
from market.storage import Store, same_multihash

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

__all__ = [
    "CRASH_ENV",
    "CRASH_STAGES",
    "DEV_KEY_PASSWORD",
    "AggregatorService",
    "KeySource",
    "Step",
    "config_from_settings",
    "dev_encryption_key",
    "outage_kind",
    "round_status",
    "setup_logging",
]

CRASH_ENV = "AGGREGATOR_CRASH_AT"
CRASH_STAGES = (*STAGES, "publish", "finalize_sent", "finalize")
_STAGE_OF = {
    "fetch": Stage.FETCHED,
    "validate": Stage.VALIDATED,
    "filter": Stage.FILTERED,
    "aggregate": Stage.AGGREGATED,
    "score": Stage.SCORED,
    "reward": Stage.REWARDED,
    "adapt": Stage.ADAPTED,
}

log = logging.getLogger("aggregator")


# ---------------------------------------------------------------------------------------------
# logging


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        out.update(getattr(record, "fields", {}) or {})
        return json.dumps(out, default=str)


def setup_logging(json_log: bool = False, level: int = logging.INFO) -> None:
    """One line per event on stderr: `time level message`, or JSON objects with --json-log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter() if json_log else logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    )
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def _info(msg: str, **fields: Any) -> None:
    log.info(msg, extra={"fields": fields})


def _warn(msg: str, **fields: Any) -> None:
    log.warning(msg, extra={"fields": fields})


# ---------------------------------------------------------------------------------------------
# crash hook and outages


def crash_point(stage: str) -> None:
    """`os._exit(137)` right after `stage` if $AGGREGATOR_CRASH_AT names it (fault injection)."""
    if os.environ.get(CRASH_ENV) == stage:
        _warn(f"crash injected after stage {stage} ({CRASH_ENV})", stage=stage, event="crash")
        for h in log.handlers:
            h.flush()
        sys.stderr.flush()
        os._exit(137)


def outage_kind(exc: BaseException) -> str | None:
    """"ipfs" or "rpc" when `exc` means a service is not answering (worth waiting for), else None.

    Decided by type (`market.errors.TransientError`), never by message: wrong bytes (IntegrityError,
    a malformed spec or record) and reverts are not outages. Any other chain failure (a node that
    timed out a transaction, a dropped connection) is waited out.
    """
    if isinstance(exc, StorageError):
        return "ipfs" if isinstance(exc, TransientError) else None
    if isinstance(exc, ContractRevert | InsufficientFunds):
        return None
    if isinstance(exc, ChainError) or is_transient(exc):
        return "rpc"
    return None


# ---------------------------------------------------------------------------------------------


def config_from_settings(s: AggregatorSettings) -> RoundConfig:
    """The RoundConfig the settings describe, checked (rule, scorer and filter names) up front."""
    try:
        filters = FilterConfig(**s.filters)
    except TypeError as exc:
        raise SettingsError(f"aggregator.filters: {exc}; see aggregator.filters.FilterConfig for the keys") from None
    make_rule(s.rule)
    if s.scorer.strip().lower() != "auto":
        make_scorer(s.scorer)
    return RoundConfig(
        rule=s.rule,
        filters=filters,
        scorer=s.scorer,
        server_lr=s.server_lr,
        adapt=s.adapt,
        threads=s.threads,
        allow_user_models=s.allow_user_models,
        fetch_workers=s.fetch_workers,
        fetch_timeout=s.fetch_timeout,
        fetch_attempts=s.fetch_attempts,
        compute=s.compute,
        ray_address=s.ray_address,
    )


#: The password of dev accounts' encryption key files (like the dev accounts: local chains only).
DEV_KEY_PASSWORD = "dev"


def _dev_keystore(state_dir: Path) -> Any:
    from market.chain.accounts import Keystore

    return Keystore(Path(state_dir) / "aggregator" / "keys")


def dev_encryption_key(state_dir: Path, dev: int) -> str:
    """The public key hex of dev account `dev`'s encryption key in `state_dir` (the aggregator's
    --state), created on first use: what a demo project lists as its aggregator recipient."""
    from market.protocol.envelope import public_key_hex

    keystore = _dev_keystore(state_dir)
    keystore.directory.mkdir(parents=True, exist_ok=True)
    try:
        return public_key_hex(keystore.load_encryption_key(f"dev{dev}", DEV_KEY_PASSWORD))
    except ConfigError:
        return str(keystore.new_encryption_key(f"dev{dev}", DEV_KEY_PASSWORD))


@dataclass(frozen=True)
class KeySource:
    """Where the aggregator's decryption keys come from: keystore account `account`'s encryption
    keys (current, then retired), or dev account `dev`'s key file in `state` (see the module doc)."""

    keystore: Path
    state: Path
    account: str | None = None
    dev: int | None = None
    #: a PKCS#8 PEM file holding one X25519 key (encrypted: its password from $MARKET_PASSWORD or a prompt)
    key_file: Path | None = None

    def load(self) -> list[X25519PrivateKey]:
        from market.chain.accounts import Keystore
        from market.cli.kit import read_password

        if self.key_file is not None:
            return [_read_key_file(Path(self.key_file))]
        if self.account is not None:
            password = read_password(f"Password for the encryption key of {self.account}")
            return list(Keystore(self.keystore).encryption_keys(self.account, password))
        if self.dev is not None:
            try:
                return list(_dev_keystore(self.state).encryption_keys(f"dev{self.dev}", DEV_KEY_PASSWORD))
            except ConfigError as exc:
                raise SettingsError(
                    f"the project's updates are encrypted and dev account {self.dev} has no usable key file ({exc}):"
                    " create it with aggregator.service.dev_encryption_key (the demo does) and list its public key"
                    " in the project's [recipients]"
                ) from None
        raise SettingsError("the project's updates are encrypted: pass --account NAME (its encryption key) to open them")


def _read_key_file(path: Path) -> X25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey as _X25519

    from market.cli.kit import read_password

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read the key file {path} ({exc.strerror}): check --key-file") from None
    password = read_password(f"Password for {path.name}").encode() if b"ENCRYPTED" in data else None
    try:
        key = serialization.load_pem_private_key(data, password)
    except (TypeError, ValueError):
        raise SettingsError(f"{path} is not a PEM private key, or the password is wrong: check --key-file and $MARKET_PASSWORD") from None
    if not isinstance(key, _X25519):
        raise SettingsError(f"{path} holds a {type(key).__name__}, not an X25519 encryption key: pass a recipient's key")
    return key


@dataclass(frozen=True)
class Step:
    """What one poll did: `done` (no open round), `waiting` (with why) or `finalized` (round)."""

    kind: str
    round: int | None = None
    message: str = ""
    record_cid: str | None = None


#: Reverts that only mean "too early": wait and try again.
_TOO_EARLY = frozenset({"RevealStillOpen", "ChallengeWindowOpen", "PreviousRoundUnsettled"})


def available_for(client: MarketClient, info: ProjectInfo, round_: int) -> int:
    """What round `round_` allocates: the chain's figure once it is finalized, else what the contract
    will fix (`market.protocol.allocation`, on the chain's figures). A service that restarts after
    its finalize landed computes the same allocation, so the same record."""
    landed = int(client.round(info.project_id, round_).allocation)
    if landed:
        return landed
    return fixed_allocation(int(info.unallocated), int(info.allocated), int(info.reward_per_round),
                            int(info.num_rounds), round_)


class AggregatorService:
    """Follows project `project_id` as its aggregator (the client's account)."""

    def __init__(
        self,
        client: MarketClient,
        store: Store,
        project_id: int,
        settings: AggregatorSettings,
        journal: Journal,
        *,
        sleep: Callable[[float], None] = time.sleep,
        keys: KeySource | None = None,
    ):
        """`keys`: where the decryption keys of an encrypted project come from (read once, when
        its spec first needs them)."""
        self.client = client
        self.store = store
        self.project_id = project_id
        self.settings = settings
        #: the settings' own config, checked up front; the spec's policy replaces it (`round_config`)
        self.config = config_from_settings(settings)
        self._round_config: RoundConfig | None = None
        self.journal = journal
        self.sleep = sleep
        self._spec: ProjectSpec | None = None
        self._valset: ValidationSet | None = None
        self._validation_cid: str | None = None
        self._parts: SecretParts | None = None
        self._key_ignored = False
        self._last_wait = ""
        self._key_source = keys
        self._keys: tuple[X25519PrivateKey, ...] | None = None

    # -- inputs that do not change during the project -------------------------------------------

    @property
    def spec(self) -> ProjectSpec:
        if self._spec is None:
            self._spec = load_spec(self.client, self.store, self.project_id)
        return self._spec

    def round_config(self) -> RoundConfig:
        """What every round runs with: the spec's policy (the operator's I/O settings aside), after
        refusing an explicit setting that contradicts it; the settings for a spec without one."""
        if self._round_config is None:
            policy = policy_of(self.spec)
            if policy is None:
                self._round_config = self.config
            else:
                refuse_contradictions(self.settings, policy, self.spec, self.project_id)
                self._round_config = config_from_policy(policy, self.config)
                _info(f"project {self.project_id}'s spec fixes the aggregation policy: rule {policy.rule}, scorer"
                      f" {policy.scorer}, server_lr {policy.server_lr:g}, validation"
                      f" {policy_validation(policy, self.spec) or 'secret parts'}", event="policy", rule=policy.rule)
        return self._round_config

    def decryption_keys(self) -> tuple[X25519PrivateKey, ...]:
        """The keys that open this project's updates (none for a plaintext project); a key that
        the spec does not name as the aggregator's gives one line before any round runs."""
        if self._keys is None:
            if not self.spec.encrypted:
                self._keys = ()
            else:
                if self._key_source is None:
                    raise SettingsError(f"project {self.project_id}'s updates are encrypted: give the aggregator its key"
                                        " (--account NAME, or --dev-account N with its key file)")
                keys = tuple(self._key_source.load())
                self._keys = _check_aggregator_key(self.spec, keys, self.project_id)
        return self._keys

    def validation(self) -> tuple[ValidationSet, str]:
        """The public validation set (config, else the spec's built-in dataset) and its published CID."""
        if self._valset is None:
            policy = policy_of(self.spec)
            text = self.settings.validation if policy is None else policy_validation(policy, self.spec)
            if text is None:
                dataset = self.spec.model.dataset
                if dataset not in BUILTINS:
                    raise SettingsError(
                        f"the spec's dataset {dataset!r} is not built in: give --validation NAME:size=N,seed=S or a .npz path"
                    )
                text = f"{dataset}:size=500,seed=0"
            self._valset = load_validation_set(text, self.spec.model)
        if self._validation_cid is None:
            self._validation_cid = self.store.add(self._valset.to_npz())
            _info(f"validation set {self._valset.source} ({len(self._valset)} samples) published as {self._validation_cid}",
                  event="validation_set", cid=self._validation_cid)
        return self._valset, self._validation_cid

    def secret_parts(self) -> SecretParts | None:
        """The split behind the spec's committed validation parts (None: the spec commits to none)."""
        commitment = self.spec.validation_data
        if commitment is None:
            if self.settings.validation_key is not None and not self._key_ignored:
                self._key_ignored = True
                _warn(f"project {self.project_id}'s spec commits to no secret validation parts: the validation key"
                      f" {self.settings.validation_key} is not used", event="validation_key_ignored")
            return None
        if self._parts is None:
            self._parts = load_secret_parts(self.settings.validation_key, commitment, self.spec.model)
            if self.settings.validation is not None:
                _warn(f"the spec commits to secret validation parts: the validation setting {self.settings.validation!r}"
                      " is not used", event="validation_ignored")
        return self._parts

    def round_validation(self, r: int) -> tuple[ValidationSet, str, PartDisclosure | None]:
        """What round r is scored on, its CID and (secret parts) the part's disclosure. Part r is
        added to the store only now, when round r runs: after its reveal deadline, so every update
        it scores is fixed on chain; its CID becomes known with the record, at finalize."""
        parts = self.secret_parts()
        if parts is None:
            return (*self.validation(), None)
        valset, data, disclosure = parts.part(r)
        cid = self.store.add(data)
        _info(f"round {r}: secret validation part {r} ({len(valset)} samples) disclosed as {cid}",
              event="validation_part", round=r, cid=cid)
        return valset, cid, disclosure

    def check_role(self) -> ProjectInfo:
        info = self.client.project(self.project_id)
        me = self.client.account_address
        if info.aggregator.lower() != me.lower():
            raise AggregatorError(
                f"{me} is not the aggregator of project {self.project_id} ({info.aggregator} is): "
                "use that account (--account/--dev-account)"
            )
        return info

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, once: bool = False, until_done: bool = False, max_polls: int | None = None) -> int:
        """Poll and run rounds. `once`: return after one round is finalized (or the project has
        none open); `until_done`: return when the project has no open round. Returns the number of
        rounds this call finalized."""
        finalized = 0
        outage: str | None = None
        backoff = self.settings.poll
        polls = 0
        while True:
            polls += 1
            try:
                step = self.poll()
            except Exception as exc:
                kind = outage_kind(exc)
                if kind is None:
                    raise
                if outage is None:
                    what = "IPFS node" if kind == "ipfs" else "RPC node"
                    _warn(f"paused: the {what} does not answer ({one_line(exc)}); retrying with backoff",
                          event="outage", service=kind)
                    backoff = self.settings.poll
                outage = kind
                self.sleep(backoff)
                backoff = min(self.settings.max_backoff, backoff * 2)
                continue
            if outage is not None:
                _info(f"resumed: the {'IPFS' if outage == 'ipfs' else 'RPC'} node answers again", event="resumed")
                outage = None
            if step.kind == "finalized":
                finalized += 1
                if once:
                    return finalized
                continue
            if step.kind == "done":
                if step.message != self._last_wait:
                    _info(step.message, event="done")
                    self._last_wait = step.message
                if once or until_done:
                    return finalized
            if max_polls is not None and polls >= max_polls:
                return finalized
            self.sleep(self.settings.poll)

    def poll(self) -> Step:
        """Look at the chain once; run the open round if it is ready."""
        info = self.check_role()
        self.round_config()
        self.secret_parts()  # a missing, unreadable or wrong key file stops the service now, not at round r
        reconciled = self._reconcile_journal(info)
        if reconciled is not None:
            return reconciled
        if info.ended or info.current_round >= info.num_rounds:
            return Step("done", None, f"project {self.project_id} has no open round ({info.num_rounds} finalized)")
        r = info.current_round
        now = self.client.block_number
        key, wait = self._wait_reason(info, r, now)
        if wait:
            if key != self._last_wait:  # one line per reason, not one per poll
                _info(wait, event="waiting", round=r, block=now)
                self._last_wait = key
            return Step("waiting", r, wait)
        self._last_wait = ""
        try:
            return self.run_round(r, info, now)
        except ContractRevert as exc:
            if exc.name not in _TOO_EARLY:
                raise
            _warn(f"round {r}: the contract says it is too early ({exc}); waiting", event="too_early", round=r)
            return Step("waiting", r, str(exc))

    def _reconcile_journal(self, info: ProjectInfo) -> Step | None:
        """A round the journal left unfinished but the chain has finalized (killed after sending
        `finalizeRound`, before journalling it): journal it now, once."""
        for entry in self.journal.rounds():
            if entry.round < info.current_round and entry.stage != Stage.FINALIZED:
                return self._reconcile(entry, entry.round, entry.record_cid)
        return None

    def _wait_reason(self, info: ProjectInfo, r: int, now: int) -> tuple[str, str]:
        """(a key that changes only with the reason, the message), or ("", "") when ready. The
        finalize lands in a later block than `now`, but gas is estimated at `now`: wait until
        `now` itself is past each deadline."""
        if now <= info.reveal_deadline:
            return (f"reveal-{r}", f"round {r}: waiting for the reveal deadline (block {info.reveal_deadline}, now {now})")
        if r > 0:
            prev = self.client.round(self.project_id, r - 1)
            settles = self.client.settles_after(self.project_id, r - 1)
            if prev.status != RoundStatus.EXPIRED and now <= settles:
                if prev.pending_disputes:
                    msg = f"round {r}: round {r - 1} is disputed; waiting for the ruling (deadline block {settles}, now {now})"
                    return (f"dispute-{r}", msg)
                msg = f"round {r}: waiting for round {r - 1}'s challenge window (closes at block {settles}, now {now})"
                return (f"challenge-{r}", msg)
        return ("", "")

    # -- one round --------------------------------------------------------------------------

    def _finalized_event(self, r: int) -> Finalized | None:
        for f in self.client.finalized(self.project_id):
            if f.round == r:
                return f
        return None

    def _reconcile(self, entry: RoundEntry, r: int, ours: str | None) -> Step:
        """Round r is finalized on chain: journal it (once) and say whether it is ours."""
        ev = self._finalized_event(r)
        notes = list(entry.notes)
        if ev is not None and ours is not None and not same_multihash(ev.record_cid, ours):
            note = f"round {r} was finalized with record {ev.record_cid}, not ours ({ours})"
            _warn(note, event="foreign_finalize", round=r)
            notes.append(note)
        entry = self.journal.advance(
            entry, Stage.FINALIZED, notes=notes,
            finalize_block=ev.block_number if ev else entry.finalize_block,
            record_cid=entry.record_cid or (ev.record_cid if ev else None),
            model_cid=entry.model_cid or (ev.model_cid if ev else None),
        )
        _info(f"round {r} is already finalized on chain (record {entry.record_cid}); nothing to send",
              event="already_finalized", round=r)
        return Step("finalized", r, "already finalized", entry.record_cid)

    def run_round(self, r: int, info: ProjectInfo | None = None, now: int | None = None) -> Step:
        info = info or self.client.project(self.project_id)
        now = self.client.block_number if now is None else now
        entry = self.journal.load(self.project_id, r)
        if self.client.round(self.project_id, r).status != RoundStatus.NONE:
            entry = entry or self.journal.save(RoundEntry(self.project_id, r, Stage.STARTED))
            return self._reconcile(entry, r, entry.record_cid)
        if entry is not None and entry.stage == Stage.FINALIZED:
            _warn(f"the journal says round {r} is finalized but the chain does not: running it again",
                  event="journal_ahead", round=r)
            self.journal.forget(r)
            entry = None
        resumed = entry is not None
        entry = self.journal.begin(self.project_id, r, now, available_for(self.client, info, r))
        _info(f"round {r}: {'resuming from stage ' + entry.stage.value if resumed else 'starting'}"
              f" (allocation available {entry.available} at block {entry.snapshot_block})",
              event="round_start", round=r, stage=entry.stage.value)

        valset, validation_cid, disclosure = self.round_validation(r)
        assert entry.available is not None
        ctx = load_context(self.client, self.store, self.project_id, r, entry.available, spec=self.spec,
                           decryption_keys=self.decryption_keys())

        state = {"entry": entry}

        def on_stage(name: str) -> None:
            state["entry"] = self.journal.advance(state["entry"], _STAGE_OF[name])
            crash_point(name)

        computed = compute_round(ctx, self.store, self.round_config(), valset, validation_cid, cache=self.journal, on_stage=on_stage)
        entry = state["entry"]
        if disclosure is not None:
            aggregation = with_disclosure(computed.fields["aggregation"], disclosure)
            computed = dataclasses.replace(computed, fields={**computed.fields, "aggregation": aggregation})
        published = publish_round(self.store, computed)
        notes = list(entry.notes)
        if entry.record_cid and entry.record_cid != published.record_cid:
            note = f"recomputed record {published.record_cid} differs from the journalled {entry.record_cid}"
            _warn(note, event="nondeterminism", round=r)
            notes.append(note)
        entry = self.journal.advance(
            entry, Stage.PUBLISHED, model_cid=published.model_cid, record_cid=published.record_cid,
            model_digest=computed.model_digest, notes=notes,
        )
        rec = published.record
        accepted = sum(1 for v in rec.verdicts if v.accepted)
        _info(f"round {r}: {accepted}/{len(rec.verdicts)} accepted, allocation {rec.allocation}, "
              f"accuracy {rec.metrics['accuracy_before']:.4f} -> {rec.metrics['accuracy_after']:.4f}; "
              f"model {published.model_cid}, record {published.record_cid}",
              event="published", round=r, model_cid=published.model_cid, record_cid=published.record_cid,
              allocation=rec.allocation)
        crash_point("publish")

        # finalize exactly once: ask the chain first; a RoundNotOpen after sending means it landed
        if self.client.round(self.project_id, r).status != RoundStatus.NONE:
            return self._reconcile(entry, r, published.record_cid)
        entry = self.journal.advance(entry, Stage.FINALIZE_SENDING)
        try:
            rcpt = self.client.finalize_round(
                self.project_id, r, published.model_cid, published.record_cid, computed.root, computed.allocation
            )
        except ContractRevert as exc:
            if exc.name == "RoundNotOpen" and self._finalized_event(r) is not None:
                return self._reconcile(entry, r, published.record_cid)
            raise
        crash_point("finalize_sent")
        entry = self.journal.advance(entry, Stage.FINALIZED, finalize_tx=rcpt.tx_hash, finalize_block=rcpt.block_number)
        _info(f"round {r} finalized in block {rcpt.block_number} (tx {rcpt.tx_hash})",
              event="finalized", round=r, tx=rcpt.tx_hash, block=rcpt.block_number)
        crash_point("finalize")
        return Step("finalized", r, "finalized", published.record_cid)

    # -- status -----------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        return round_status(self.client, self.journal, self.project_id)


def _check_aggregator_key(spec: ProjectSpec, keys: tuple[X25519PrivateKey, ...], project_id: int) -> tuple[X25519PrivateKey, ...]:
    from market.protocol.envelope import fingerprint, public_key_hex

    named = {r.public_key for r in spec.recipients.values() if r.role == "aggregator"}
    if not any(public_key_hex(k) in named for k in keys):
        want = ", ".join(fingerprint(bytes.fromhex(k)) for k in sorted(named))
        have = ", ".join(fingerprint(k.public_key()) for k in keys)
        raise SettingsError(f"none of this aggregator's encryption keys ({have}) is the one project {project_id}'s spec"
                            f" names for its aggregator ({want}): use the account whose key the project lists")
    return keys


def round_status(client: MarketClient, journal: Journal, project_id: int) -> list[dict[str, Any]]:
    """Per round: the chain's status and record CID beside the journal's stage and CIDs."""
    info = client.project(project_id)
    events = {f.round: f for f in client.finalized(project_id)}
    rows = []
    for r in range(info.num_rounds):
        note = ""
        try:
            entry = journal.load(project_id, r)
        except JournalError as exc:
            entry, note = None, str(exc)
        ev = events.get(r)
        if ev is not None:
            chain_status = client.round(project_id, r).status.name.lower()
        else:
            chain_status = "open" if r == info.current_round and not info.ended else "-"
        agree = None
        if ev is not None and entry is not None and entry.record_cid:
            agree = same_multihash(ev.record_cid, entry.record_cid)
        rows.append({
            "round": r,
            "chain": chain_status,
            "chain_record_cid": ev.record_cid if ev else None,
            "allocation": ev.allocation if ev else None,
            "journal": entry.stage.value if entry else None,
            "journal_record_cid": entry.record_cid if entry else None,
            "finalize_tx": entry.finalize_tx if entry else None,
            "agree": agree,
            "note": note or ("; ".join(entry.notes) if entry and entry.notes else ""),
        })
    return rows

