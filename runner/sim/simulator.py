"""`Simulator`: the Python handle on a running simulator (start, stop, read, script faults)."""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.catalog import Catalog
from runner.sim.app import SimApp
from runner.sim.config import SimConfig
from runner.sim.provider import ProviderSim
from runner.sim.server import SimHTTPServer
from runner.sim.state import StateFile, preferred_ports

log = logging.getLogger("runner.sim")
#: bind() errors that mean "this port is not ours to take": try another.
_TAKEN = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


class Simulator:
    """Every provider simulator installed (Runway, fal.ai, and those plugins register) on one
    loopback port, served from background threads.

    >>> with Simulator() as sim:
    ...     sim.url("runway"), sim.keys["runway"]   # point clients here

    `simulators=` hosts only the provider simulators given (`ProviderSim` subclasses) instead.

    With a state file (`state_path=`, or `SimConfig.state_path`) it survives its process as a
    real provider does: everything it accepts is appended to the file, and a simulator started
    on the same file restores it (task and request ids, statuses, outputs, uploads, the ledger).
    Clients keep absolute URLs (fal's status/response/cancel URLs, output URLs), so it serves on
    the port(s) earlier simulators on the file used; see `start`.
    """

    #: Seconds to wait for a state file another simulator holds (one that is exiting lets go at once).
    lock_wait_s: float = 3.0

    def __init__(self, config: SimConfig | None = None, port: int = 0, catalog: Catalog | None = None,
                 *, state_path: str | os.PathLike[str] | None = None, simulators: Sequence[type[ProviderSim]] | None = None):
        if catalog is None or simulators is None:
            from runner import plugins

            catalog = catalog or plugins.registry().catalog
            simulators = list(plugins.simulators().values()) if simulators is None else simulators
        self.config = config or SimConfig()
        self.app = SimApp(self.config, catalog, simulators)
        self._port = port
        chosen = state_path if state_path is not None else self.config.state_path
        self.state_path = Path(chosen) if chosen else None
        self._servers: list[SimHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._state: StateFile | None = None
        self._restored = False
        self._closed_size: int | None = None
        #: What went differently from a plain restart (a port taken, unreadable lines), as messages.
        self.warnings: list[str] = []

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> "Simulator":
        """Bind 127.0.0.1 and serve in daemon threads.

        Without a state file: the port given (0 picks a free one). With one, unless a port is
        given: the port the last simulator on the file served on (its clients hold URLs naming
        it), else a port derived from the file's path (below the OS's ephemeral range), else any
        free one. Every other port an earlier simulator on the file served on is bound as well
        when free, so URLs from every earlier run keep working. A port that is taken is skipped
        with a warning (logged on `runner.sim` and kept in `warnings`) naming what stops working.
        """
        if self._servers:
            return self
        self.app.stopping.clear()
        history = self._open_state() if self.state_path is not None else []
        try:
            servers = self._bind(history)
        except BaseException:
            self._close_state()
            raise
        self._servers = servers
        self.app.ports = [server.server_address[1] for server in servers]
        self.app.base_url = f"http://127.0.0.1:{self.app.ports[0]}"
        if self._state is not None:
            self._state.append({"event": "serve", "port": self.app.ports[0], "ports": self.app.ports,
                                "pid": os.getpid(), "at": round(time.time(), 6)})
        for server in servers:
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                      name=f"runner-sim-{server.server_address[1]}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving; held connections (hang faults, event streams) are released at once.

        The state file (if any) is released, so another simulator may take it over.
        """
        if not self._servers:
            return
        self.app.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
            server.close_connections()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        self._close_state()

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state file and ports ---------------------------------------------------------------------

    def _open_state(self) -> list[int]:
        """Lock and read the state file; restore it on the first start. The ports it names."""
        assert self.state_path is not None
        state = StateFile(self.state_path)
        snap = state.open(wait_s=self.lock_wait_s)
        try:
            if self._restored:
                if state.size != self._closed_size:
                    raise RuntimeError(f"simulator state {self.state_path} was written by another simulator since this one "
                                       f"stopped; start a new Simulator on it to take over its state")
                self.app.persist = state.append
            else:
                self.app.persist = state.append
                self.app.state_path = str(self.state_path)
                if snap.torn:
                    log.info("simulator state %s: cut an unfinished last line (%d bytes) left by a crash mid-write",
                             self.state_path, snap.torn)
                for message in self.app.restore(snap):
                    self._warn(f"simulator state {self.state_path}: {message}")
                self._restored = True
        except BaseException:
            self.app.persist = lambda record: None
            state.close()
            raise
        self._state = state
        return snap.ports[:16]

    def _close_state(self) -> None:
        if self._state is not None:
            self.app.persist = lambda record: None
            self._closed_size = self._state.close()
            self._state = None

    def _bind(self, history: list[int]) -> list[SimHTTPServer]:
        """The primary server first, then one per other earlier port that is free."""
        primary: SimHTTPServer | None = None
        if self._port or self.state_path is None:
            primary = self._server(self._port)  # an explicit port must be had: OSError when taken
        else:
            for port in history:
                primary = self._try(port)
                if primary is not None:
                    break
            if primary is None:
                for port in (*preferred_ports(self.state_path), 0):
                    primary = self._try(port)
                    if primary is not None:
                        break
        assert primary is not None  # port 0 cannot be taken
        servers = [primary]
        port = primary.server_address[1]
        for old in history:
            if old == port:
                continue
            extra = self._try(old)
            if extra is not None:
                servers.append(extra)
                continue
            self._warn(
                f"simulator state {self.state_path}: port {old}, where an earlier run was served, is in use by "
                f"another program, so URLs issued there (fal status/response/cancel URLs, output file URLs) "
                f"do not reach this simulator, now on port {port}; Runway tasks, polled by id under the new "
                f"URL, are unaffected. Free port {old} and start again to serve them."
            )
        return servers

    def _server(self, port: int) -> SimHTTPServer:
        return SimHTTPServer(port, self.app, self.app.record, self.app.stopping)

    def _try(self, port: int) -> SimHTTPServer | None:
        try:
            return self._server(port)
        except OSError as exc:
            if exc.errno in _TAKEN:
                return None
            raise

    def _warn(self, message: str) -> None:
        self.warnings.append(message)
        log.warning("%s", message)

    # -- where to point clients -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if not self._servers:
            raise RuntimeError("the simulator is not started")
        return self._servers[0].server_address[1]

    @property
    def ports(self) -> list[int]:
        """Every port served: the primary one first, then earlier runs' ports (with a state file)."""
        if not self._servers:
            raise RuntimeError("the simulator is not started")
        return [server.server_address[1] for server in self._servers]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers it simulates."""
        return self.app.providers

    def url(self, provider: str) -> str:
        """A provider's base URL (`providers.<name>.base_url`; Runway's SDK `base_url`)."""
        return f"{self.base_url}/{self._hosted(provider)}"

    def endpoints(self, provider: str) -> dict[str, str]:
        """A provider's other services, as its plugin's `providers.<name>.endpoints` names them."""
        return self.app.handlers[self._hosted(provider)].endpoints()

    @property
    def keys(self) -> dict[str, str]:
        """The API keys the simulator accepts, by provider."""
        return dict(self.app.keys)

    def _hosted(self, provider: str) -> str:
        if provider not in self.app.handlers:
            raise KeyError(f"no simulator for provider {provider!r} here; simulated: {', '.join(self.providers) or 'none'}")
        return provider

    @property
    def runway_url(self) -> str:
        """Runway's base URL (the official SDK's `base_url`; API paths are `/v1/...` under it)."""
        return self.url("runway")

    @property
    def fal_url(self) -> str:
        """fal's queue base URL (submit is `POST {fal_url}/{model id}`)."""
        return self.url("fal")

    @property
    def fal_endpoints(self) -> dict[str, str]:
        """fal's other services as the fal plugin's `providers.fal.endpoints` names them."""
        return self.endpoints("fal")

    # -- observing and steering -------------------------------------------------------------------

    def ledger(self) -> list[dict[str, Any]]:
        """Every accepted submission, in order, with its final status and bill once known.

        With a state file this includes what earlier simulators on the file accepted.
        """
        self.app.board.advance(self.app.board.now())
        return self.app.ledger.entries()

    def received(self, task_id: str) -> dict[str, Any] | None:
        """The native fields a task's request carried, as its provider simulator read them (the
        request body without what is not a model parameter, such as Runway's `model`); None for
        an unknown task."""
        return self.app.received(task_id)

    def stats(self) -> dict[str, Any]:
        """Per provider and model: in-flight / running counts and maxima, request counts; server time."""
        return self.app.control.snapshot()

    def inject(self, kind: str, *, on: str, count: int = 1, model: str | None = None,
               after_accept: bool = False, **detail: Any) -> None:
        """Script a fault for the next `count` requests at point `on` (optionally for one model).

        Points are `download` and each provider's own (`runway.create`, `fal.status`, ...: its
        simulator's `points`). Settings by kind (`runner.sim.faults.DETAILS`): http_* `retry_after`, `retry_after_ms`,
        `should_retry` (sent verbatim as headers), `message`, on fal `ingress=True` for an
        nginx-style answer; hang `seconds`; not_object `value`; redirect `status`, `location`;
        task_failed `failure_code` (and `failure`, the message); truncated `fraction`.
        `after_accept=True` (create/submit only) accepts the task first. ValueError for a kind,
        point or setting that cannot be.
        """
        self.app.faults.add(kind, on=on, count=count, model=model, after_accept=after_accept, **detail)

    def clear_faults(self) -> None:
        """Drop scripted faults that have not fired yet."""
        self.app.faults.clear()
