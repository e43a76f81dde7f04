"""A live web dashboard of the market for owners, trainers and auditors, read from chain + IPFS
alone: `market dashboard` (see docs/dashboard.md)."""

from dashboard.app import create_app
from dashboard.server import DashboardServer
from dashboard.service import Dashboard, DashboardConfig

__all__ = ["Dashboard", "DashboardConfig", "DashboardServer", "create_app"]
