"""The Starlette app: server-rendered Jinja pages, refreshed in place by htmx polling.

Every page is a layout plus a `content` block. A request from htmx (`HX-Request` header) gets
the block alone, always with status 200 so htmx swaps it in (htmx ignores error responses):
an outage then replaces the content with its message, and the next poll after recovery brings
the page back. A plain request gets the whole page with a meaningful status (404 for an unknown
project, 503 while the chain is away).
"""

from __future__ import annotations

import contextlib
import json
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from dashboard import plots
from dashboard.audits import CHECKS, AuditJobs
from dashboard.pages import (
    NotFound,
    ProjectPage,
    RoundPage,
    TrainerRow,
    ether,
    project_page,
    projects_page,
    round_page,
    trainer_page,
)
from dashboard.service import Dashboard
from market.errors import ConfigError, ContentNotFound, MarketError

__all__ = ["create_app"]

_HERE = Path(__file__).parent
CID_MAX_BYTES = 50_000_000
CID_SHOW_BYTES = 2_000_000


def _color(t: TrainerRow) -> str:
    return "#c53030" if t.rejected else "#2b6cb0"


def _rewards_bars(page: ProjectPage) -> list[plots.Bar]:
    return [plots.Bar(t.address[:8], t.earned_wei / 1e18, _color(t), f"/p/{page.project_id}/t/{t.address}")
            for t in page.trainers]


def _contribution_points(page: ProjectPage) -> list[plots.Point]:
    return [plots.Point(page.scores.get(t.address, 0.0), t.earned_wei / 1e18, t.address, _color(t))
            for t in page.trainers if t.revealed]


def _round_points(page: RoundPage) -> list[plots.Point]:
    return [plots.Point(v.score or 0.0, v.reward_wei / 1e18, v.trainer, "#2b6cb0" if v.accepted else "#c53030")
            for v in page.verdicts if v.score is not None]


def create_app(dashboard: Dashboard, *, follow: bool = True) -> Starlette:
    """The web app over `dashboard`; `follow` starts (and on shutdown stops) the chain follower."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.globals.update(ether=ether, plots=plots, checks=CHECKS, rewards_bars=_rewards_bars,
                       contribution_points=_contribution_points, round_points=_round_points)
    env.filters["short"] = lambda s, n=10: s if s is None or len(str(s)) <= n + 2 else f"{str(s)[:n]}…"
    jobs = AuditJobs(dashboard)

    def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        ctx |= {"request": request, "health": dashboard.health, "poll": dashboard.config.poll}
        template = env.get_template(name)
        if request.headers.get("HX-Request"):
            body = "".join(template.blocks["content"](template.new_context(ctx)))
            return HTMLResponse(body, 200)
        return HTMLResponse(template.render(ctx), status)

    def failure(request: Request, exc: MarketError, status: int) -> HTMLResponse:
        return render(request, "error.html", status, message=str(exc), kind=type(exc).__name__)

    def unavailable_status() -> int:
        return 200 if dashboard.health.chain_ok else 503

    def projects(request: Request) -> Response:
        return render(request, "projects.html", unavailable_status(), rows=projects_page(dashboard))

    def project(request: Request) -> Response:
        pid = int(request.path_params["pid"])
        try:
            page = project_page(dashboard, pid)
        except NotFound as exc:
            return failure(request, exc, 404 if dashboard.health.chain_ok else 503)
        spans = [plots.Span(r.round, r.opened_at, r.commit_deadline or r.opened_at, r.reveal_deadline or r.opened_at,
                            r.finalized_at, r.challenge_ends, r.state)
                 for r in page.rounds[-30:] if r.opened_at is not None]
        return render(request, "project.html", unavailable_status(), page=page, spans=spans)

    def round_view(request: Request) -> Response:
        pid, r = int(request.path_params["pid"]), int(request.path_params["round"])
        try:
            page = round_page(dashboard, pid, r)
        except NotFound as exc:
            return failure(request, exc, 404 if dashboard.health.chain_ok else 503)
        return render(request, "round.html", unavailable_status(), page=page)

    def trainer_view(request: Request) -> Response:
        pid, addr = int(request.path_params["pid"]), str(request.path_params["address"])
        try:
            page = trainer_page(dashboard, pid, addr)
        except (NotFound, ConfigError) as exc:
            return failure(request, exc, 404)
        return render(request, "trainer.html", unavailable_status(), page=page)

    async def audit_view(request: Request) -> Response:
        pid = int(request.path_params["pid"])
        if request.method == "POST":
            # a urlencoded form of one field: parsed here rather than pulling in python-multipart
            form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
            raw = (form.get("round") or [""])[0].strip()
            rounds = [int(raw)] if raw.isdigit() else None
            jobs.start(pid, rounds)
            return RedirectResponse(f"/p/{pid}/audit", status_code=303)
        if pid not in dashboard.index.projects:
            return failure(request, NotFound(f"project {pid} does not exist on this market: check the project id"),
                           404)
        p = dashboard.index.projects[pid]
        finalized = sorted(r.round for r in p.rounds.values() if r.finalized is not None)
        return render(request, "audit.html", page_pid=pid, jobs=jobs.for_project(pid), finalized=finalized)

    def audit_json(request: Request) -> Response:
        pid = int(request.path_params["pid"])
        return JSONResponse([j.to_json() for j in jobs.for_project(pid)])

    def cid_view(request: Request) -> Response:
        cid = str(request.path_params["cid"])
        try:
            data = dashboard.cat(cid, CID_MAX_BYTES)
        except ContentNotFound as exc:
            return failure(request, exc, 404)
        except MarketError as exc:
            return failure(request, exc, 503)
        text = None
        try:
            text = json.dumps(json.loads(data), indent=2, sort_keys=True)[:CID_SHOW_BYTES]
        except ValueError:
            pass
        return render(request, "cid.html", live=False, cid=cid, size=len(data), text=text, head=data[:256].hex(" "))

    def cid_raw(request: Request) -> Response:
        cid = str(request.path_params["cid"])
        try:
            data = dashboard.cat(cid, CID_MAX_BYTES)
        except ContentNotFound as exc:
            return Response(str(exc) + "\n", 404, media_type="text/plain")
        except MarketError as exc:
            return Response(str(exc) + "\n", 503, media_type="text/plain")
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{cid}"'})

    def status(request: Request) -> Response:
        dashboard.check_ipfs()
        h = dashboard.health
        body = {"ok": h.ok, "chain": {"ok": h.chain_ok, "rpc": dashboard.config.rpc, "head": h.head,
                                      "error": h.chain_error},
                "ipfs": {"ok": h.ipfs_ok, "api": dashboard.config.ipfs, "error": h.ipfs_error},
                "projects": len(dashboard.index.projects), "events": dashboard.index.events}
        return JSONResponse(body, 200 if h.ok else 503)

    routes = [
        Route("/", projects),
        Route("/status", status),
        Route("/p/{pid:int}", project),
        Route("/p/{pid:int}/r/{round:int}", round_view),
        Route("/p/{pid:int}/t/{address:str}", trainer_view),
        Route("/p/{pid:int}/audit", audit_view, methods=["GET", "POST"]),
        Route("/p/{pid:int}/audit.json", audit_json),
        Route("/cid/{cid:str}", cid_view),
        Route("/cid/{cid:str}/raw", cid_raw),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if follow:
            dashboard.start()
        try:
            yield
        finally:
            if follow:
                dashboard.stop()

    return Starlette(routes=routes, lifespan=lifespan)
