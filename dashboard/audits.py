"""Audit jobs: `aggregator.audit` run in a background thread, one round at a time, so a page can
show progress and each check as it lands. A job has its own chain connection and store (a long
rebuild must not hold the pages' connections)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dashboard.service import Dashboard
from market._text import one_line

__all__ = ["AuditJob", "AuditJobs"]

log = logging.getLogger("dashboard")

CHECKS = ("record", "model", "verdicts", "scores", "rewards", "root")


@dataclass
class AuditJob:
    project_id: int
    rounds: list[int] | None  # None: every finalized round
    started: float = field(default_factory=time.time)
    total: int | None = None
    current: int | None = None
    results: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    finished: float | None = None

    @property
    def key(self) -> str:
        return "all" if self.rounds is None else ",".join(map(str, self.rounds))

    @property
    def running(self) -> bool:
        return self.finished is None

    @property
    def ok(self) -> bool | None:
        """True when every audited round reproduced, False on any mismatch or error, None while running."""
        if self.error is not None:
            return False
        if any(not r["ok"] for r in self.results):
            return False
        return None if self.running else True

    def to_json(self) -> dict[str, Any]:
        return {"project_id": self.project_id, "scope": self.key, "running": self.running, "ok": self.ok,
                "total": self.total, "done": len(self.results), "current": self.current, "error": self.error,
                "rounds": self.results}


class AuditJobs:
    """The newest job per (project, scope); starting one while it runs returns the running one."""

    def __init__(self, dashboard: Dashboard):
        self.dashboard = dashboard
        self._jobs: dict[tuple[int, str], AuditJob] = {}
        self._lock = threading.Lock()

    def get(self, project_id: int, rounds: list[int] | None) -> AuditJob | None:
        key = "all" if rounds is None else ",".join(map(str, rounds))
        with self._lock:
            return self._jobs.get((project_id, key))

    def for_project(self, project_id: int) -> list[AuditJob]:
        with self._lock:
            return [j for (pid, _), j in sorted(self._jobs.items()) if pid == project_id]

    def start(self, project_id: int, rounds: list[int] | None) -> AuditJob:
        job = AuditJob(project_id, rounds)
        with self._lock:
            old = self._jobs.get((project_id, job.key))
            if old is not None and old.running:
                return old
            self._jobs[(project_id, job.key)] = job
        threading.Thread(target=self._run, args=(job,), name=f"audit-{project_id}-{job.key}", daemon=True).start()
        return job

    def _run(self, job: AuditJob) -> None:
        store = None
        try:
            # aggregator (and torch) load only when someone asks for an audit
            from aggregator.audit import audit_round
            from market.chain import connect
            from market.chain.deployment import Deployment
            from market.protocol.reading import load_spec
            from market.storage import open_store

            cfg = self.dashboard.config
            client = Deployment.load(cfg.deployment).client(connect(cfg.rpc, timeout=30.0))
            store = open_store(cfg.ipfs)
            spec = load_spec(client, store, job.project_id)
            events = sorted(client.finalized(job.project_id), key=lambda f: f.round)
            if job.rounds is not None:
                events = [e for e in events if e.round in job.rounds]
                missing = sorted(set(job.rounds) - {e.round for e in events})
                if missing:
                    raise ValueError(f"round(s) {missing} of project {job.project_id} are not finalized: nothing to audit")
            job.total = len(events)
            for ev in events:
                job.current = ev.round
                result = audit_round(client, store, job.project_id, ev, spec=spec)
                job.results.append(result.to_json())
            job.current = None
        except Exception as exc:
            job.error = one_line(exc)
            log.warning("audit of project %d (%s) stopped", job.project_id, job.key, exc_info=True)
        finally:
            if store is not None:
                store.close()
            job.finished = time.time()
