"""`Simulator`: the Python handle on a running simulator (start, stop, read, script faults)."""

from __future__ import annotations

import threading
from typing import Any

from runner.catalog import Catalog
from runner.sim.app import SimApp
from runner.sim.config import SimConfig
from runner.sim.server import SimHTTPServer


class Simulator:
    """Runway and fal.ai on one loopback port, served from a background thread.

    >>> with Simulator() as sim:
    ...     sim.runway_url, sim.fal_url, sim.keys   # point clients here
    """

    def __init__(self, config: SimConfig | None = None, port: int = 0, catalog: Catalog | None = None):
        if catalog is None:
            from runner import plugins

            catalog = plugins.registry().catalog
        self.config = config or SimConfig()
        self.app = SimApp(self.config, catalog)
        self._port = port
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "Simulator":
        """Bind 127.0.0.1 (port 0 picks a free one) and serve in a daemon thread."""
        if self._server is not None:
            return self
        self._server = SimHTTPServer(self._port, self.app, self.app.record, self.app.stopping)
        self.app.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="runner-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; held connections (hang faults, event streams) are released at once."""
        if self._server is None:
            return
        self.app.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- where to point clients -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def runway_url(self) -> str:
        """Runway's base URL (the official SDK's `base_url`; API paths are `/v1/...` under it)."""
        return f"{self.base_url}/runway"

    @property
    def fal_url(self) -> str:
        """fal's queue base URL (submit is `POST {fal_url}/{model id}`)."""
        return f"{self.base_url}/fal"

    @property
    def keys(self) -> dict[str, str]:
        """The API keys the simulator accepts, by provider."""
        return dict(self.config.keys)

    # -- observing and steering -------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        """Every accepted submission, in order, with its final status and bill once known."""
        self.app.board.advance(self.app.board.now())
        return self.app.ledger.entries()

    def stats(self) -> dict[str, Any]:
        """Per provider and model: in-flight / running counts and maxima, request counts; server time."""
        return self.app.snapshot()

    def inject(self, kind: str, *, on: str, count: int = 1, model: str | None = None,
               after_accept: bool = False, **detail: Any) -> None:
        """Script a fault for the next `count` requests at point `on` (optionally for one model).

        Details by kind: http_429 `retry_after`; hang `seconds`; task_failed `failure_code`
        (and `failure`, the message); truncated `fraction`; http_5xx on fal `ingress=True` for
        an nginx-style answer. `after_accept=True` (create/submit only) accepts the task first.
        """
        self.app.faults.add(kind, on=on, count=count, model=model, after_accept=after_accept, **detail)

    def clear_faults(self) -> None:
        """Drop scripted faults that have not fired yet."""
        self.app.faults.clear()
