"""Running the app under uvicorn on a socket bound here, so the real address (port 0 picks a free
one) is known before serving: the CLI prints it, tests and `market demo` read it."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from dashboard.app import create_app
from dashboard.service import Dashboard, DashboardConfig

__all__ = ["DashboardServer"]


class DashboardServer:
    def __init__(self, config: DashboardConfig, host: str = "127.0.0.1", port: int = 0):
        self.dashboard = Dashboard(config)
        self.host, self.port = host, port
        self._sock: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def bind(self) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = int(sock.getsockname()[1])
        self._sock = sock

    def _make(self) -> uvicorn.Server:
        app = create_app(self.dashboard)
        return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))

    def run(self) -> None:
        """Serve in this thread until interrupted."""
        if self._sock is None:
            self.bind()
        self._server = self._make()
        self._server.run(sockets=[self._sock])  # type: ignore[list-item]

    def start(self, timeout: float = 30.0) -> str:
        """Serve in a background thread; returns the URL once it answers."""
        if self._sock is None:
            self.bind()
        self._server = self._make()
        server = self._server
        # uvicorn installs signal handlers only in the main thread
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [self._sock]}, daemon=True,
                                        name="dashboard-http")
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the dashboard did not start on {self.url}")
            time.sleep(0.05)
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
