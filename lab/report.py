"""A project's report, built from chain + IPFS alone: accuracy per round, verdicts with reasons,
contribution scores, rewards, gas per role; an HTML page with PNG plots.

`truth` (optional) maps trainer address -> {"label": str, "quality": float, "malicious": bool}: what
a simulation knows about each trainer, to plot rewards against true data quality.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from market.chain import MarketClient
from market.protocol.documents import ProjectSpec, RoundRecord
from market.protocol.privacy import epsilon_spent
from market.protocol.reading import ReadableStore, load_record, load_spec


@dataclass
class ProjectReport:
    project_id: int
    records: list[RoundRecord]
    voided: set[int]
    paid: dict[str, int]
    gas_by_role: dict[str, int]
    truth: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the project's spec (recipients: whether updates were encrypted; privacy: its DP policy)
    spec: ProjectSpec | None = None

    @property
    def trainers(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.records:
            for v in r.verdicts:
                seen[v.trainer] = None
        return list(seen)

    def accuracy(self) -> list[tuple[int, float]]:
        return [(r.round, r.metrics.get("accuracy_after", r.metrics.get("accuracy", float("nan")))) for r in self.records]

    def final_cumulative(self) -> dict[str, int]:
        valid = [r for r in self.records if r.round not in self.voided]
        return dict(valid[-1].cumulative_rewards) if valid else {}

    def verdict_summary(self) -> dict[str, dict[str, Any]]:
        """Per trainer: rounds accepted, rejection reasons, total score."""
        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"accepted": 0, "rejected": 0, "reasons": {}, "score": 0.0})
        for r in self.records:
            for v in r.verdicts:
                row = out[v.trainer]
                if v.accepted:
                    row["accepted"] += 1
                else:
                    row["rejected"] += 1
                    code = (v.reason or "?").split(":")[0]
                    row["reasons"][code] = row["reasons"].get(code, 0) + 1
            for t, s in r.scores.items():
                out[t]["score"] += s
        return dict(out)

    def epsilon_spent(self) -> dict[str, float]:
        """Per trainer, the epsilon its DP cost under the project's policy: one accountant step per
        round it has an input in (a reveal: chain data, recomputable by anyone); {} without DP."""
        if self.spec is None or self.spec.privacy is None:
            return {}
        taken: dict[str, int] = defaultdict(int)
        for r in self.records:
            for u in r.inputs:
                taken[u.trainer] += 1
        return {t: epsilon_spent(self.spec.privacy, n) for t, n in taken.items()}

    def honest_share(self) -> float | None:
        """Share of all rewards that went to trainers `truth` marks as honest."""
        if not self.truth:
            return None
        cum = self.final_cumulative()
        total = sum(cum.values())
        if total == 0:
            return None
        honest = sum(v for t, v in cum.items() if not self.truth.get(t, {}).get("malicious", False))
        return honest / total

    def to_json(self) -> dict[str, Any]:
        return {
            "project_id": self.project_id,
            "accuracy": self.accuracy(),
            "verdicts": self.verdict_summary(),
            "cumulative_rewards": self.final_cumulative(),
            "paid": self.paid,
            "gas_by_role": self.gas_by_role,
            "honest_share": self.honest_share(),
            "voided_rounds": sorted(self.voided),
            "encrypted": bool(self.spec and self.spec.encrypted),
            "recipients": {n: r.role for n, r in self.spec.recipients.items()} if self.spec else {},
            "privacy": self.spec.privacy.model_dump(mode="json") if self.spec and self.spec.privacy else None,
            "epsilon_spent": self.epsilon_spent(),
        }


def collect(client: MarketClient, store: ReadableStore, project_id: int, roles: dict[str, str] | None = None,
            truth: dict[str, dict[str, Any]] | None = None) -> ProjectReport:
    """Read every finalized round's record, the claims, and the gas each role spent.

    `roles` maps address -> role name for the gas table; unknown senders count as "trainer".
    """
    from market.chain import RoundStatus

    records, voided = [], set()
    for f in sorted(client.finalized(project_id), key=lambda f: f.round):
        records.append(load_record(store, f.record_cid))
        if client.round(project_id, f.round).status == RoundStatus.VOIDED:
            voided.add(f.round)
    paid: dict[str, int] = defaultdict(int)
    for e in client.events("RewardClaimed", project_id):
        paid[e["trainer"]] += int(e["paid"])
    gas: dict[str, int] = defaultdict(int)
    roles = {k.lower(): v for k, v in (roles or {}).items()}
    seen: set[str] = set()
    for name in ("ProjectCreated", "TrainerRegistered", "UpdateCommitted", "UpdateRevealed", "RoundFinalized",
                 "RewardClaimed", "RoundDisputed", "DisputeResolved", "ProjectEnded", "StakeWithdrawn"):
        for log in client.events(name, project_id):
            h = log["transactionHash"]
            if h in seen:
                continue
            seen.add(h)
            rc = client.w3.eth.get_transaction_receipt(h)
            sender = str(rc["from"]).lower()
            gas[roles.get(sender, "trainer")] += int(rc["gasUsed"])
    return ProjectReport(project_id, records, voided, dict(paid), dict(gas), truth or {},
                         load_spec(client, store, project_id))


def write_html(report: ProjectReport, out_dir: Path) -> Path:
    """report.html with PNG plots (accuracy per round, rewards per trainer, reward vs quality)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report.to_json(), indent=2, default=str))
    labels = {t: report.truth.get(t, {}).get("label", t[:8]) for t in report.trainers}

    acc = report.accuracy()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r for r, _ in acc], [a * 100 for _, a in acc], marker="o")
    ax.set_xlabel("round")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("Global model accuracy per round")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=110)
    plt.close(fig)

    cum = report.final_cumulative()
    order = sorted(report.trainers, key=lambda t: labels[t])
    fig, ax = plt.subplots(figsize=(7, 3.5))
    colors = ["tab:red" if report.truth.get(t, {}).get("malicious") else "tab:blue" for t in order]
    ax.bar([labels[t] for t in order], [cum.get(t, 0) / 1e18 for t in order], color=colors)
    ax.set_ylabel("cumulative reward (ETH)")
    ax.set_title("Rewards per trainer (red: malicious)")
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(out_dir / "rewards.png", dpi=110)
    plt.close(fig)

    plots = ["accuracy.png", "rewards.png"]
    q = [(report.truth[t]["quality"], cum.get(t, 0) / 1e18, t) for t in order if "quality" in report.truth.get(t, {})]
    if q:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.scatter([a for a, _, _ in q], [b for _, b, _ in q],
                   c=["tab:red" if report.truth[t].get("malicious") else "tab:blue" for _, _, t in q])
        for a, b, t in q:
            ax.annotate(labels[t], (a, b), fontsize=7)
        ax.set_xlabel("true data quality")
        ax.set_ylabel("cumulative reward (ETH)")
        ax.set_title("Reward against true data quality")
        fig.tight_layout()
        fig.savefig(out_dir / "reward_vs_quality.png", dpi=110)
        plt.close(fig)
        plots.append("reward_vs_quality.png")

    summary = report.verdict_summary()
    eps = report.epsilon_spent()
    rows = "".join(
        f"<tr><td>{html.escape(labels[t])}</td><td><code>{t}</code></td><td>{summary[t]['accepted']}</td>"
        f"<td>{summary[t]['rejected']}</td><td>{html.escape(', '.join(f'{k} x{v}' for k, v in summary[t]['reasons'].items()))}</td>"
        f"<td>{summary[t]['score']:.4f}</td><td>{cum.get(t, 0) / 1e18:.4f}</td><td>{report.paid.get(t, 0) / 1e18:.4f}</td>"
        + (f"<td>{eps.get(t, 0.0):.2f}</td>" if eps else "") + "</tr>"
        for t in order
    )
    spec = report.spec
    privacy = "Updates were plaintext on IPFS."
    if spec is not None and spec.encrypted:
        names = ", ".join(f"{html.escape(n)} ({r.role})" for n, r in sorted(spec.recipients.items()))
        privacy = f"Updates were encrypted on IPFS, readable only by: {names}."
    if spec is not None and spec.privacy is not None:
        dp = spec.privacy
        privacy += (f" Client-level DP: noise multiplier {dp.noise_multiplier:g}, clip {dp.clip_norm:g}, budget epsilon"
                    f" {dp.max_epsilon:g} at delta {dp.delta:g} (spent per trainer in the table).")
    acc_rows = "".join(f"<tr><td>{r}</td><td>{a * 100:.2f}%</td></tr>" for r, a in acc)
    gas_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:,}</td></tr>" for k, v in sorted(report.gas_by_role.items()))
    share = report.honest_share()
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>Project {report.project_id}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Project {report.project_id}: marketplace report</h1>
<p>Built from chain events and IPFS round records alone. Voided rounds: {sorted(report.voided) or 'none'}.
{'' if share is None else f'Share of rewards paid to honest trainers: <b>{share * 100:.1f}%</b>.'}</p>
{''.join(f'<img src="{p}">' for p in plots)}
<p>{privacy}</p>
<h2>Accuracy per round</h2><table><tr><th>round</th><th>accuracy</th></tr>{acc_rows}</table>
<h2>Trainers</h2><table><tr><th>trainer</th><th>address</th><th>accepted</th><th>rejected</th><th>reasons</th>
<th>total score</th><th>entitled (ETH)</th><th>claimed (ETH)</th>{'<th>epsilon spent</th>' if eps else ''}</tr>{rows}</table>
<h2>Gas per role</h2><table><tr><th>role</th><th>gas</th></tr>{gas_rows}</table>
</body></html>"""
    path = out_dir / "report.html"
    path.write_text(page)
    return path
