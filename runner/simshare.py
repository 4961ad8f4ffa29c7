"""One provider simulator for every process of a multirun, for launchers that run sweep points in
other processes (Hydra's joblib launcher).

A simulator owns its state file (`.runner/simulator.jsonl`) while it runs, so each process of a
joblib multirun starting its own took the file from the others: the first worker ran, the others
stopped, and the first was killed with its jobs in flight. Instead, Hydra's multirun callback below
starts one simulator in the launching process before any point starts and stops it after the last
one; each point finds its accounts in the environment the workers inherit (`SHARED_ENV`) and uses
them when it simulates with the same state file and simulator config.

The runner's own launcher and Hydra's basic launcher run points in the launching process, which
starts the simulator only once the sweep is planned and checked, so they need none of this.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SHARED_ENV = "RUNNER_SHARED_SIMULATOR"
#: Launchers that run every point in the launching process, one after another.
_IN_PROCESS = ("hydra_plugins.runner_launcher.launcher.RunnerLauncher", "hydra._internal.core_plugins.basic_launcher.BasicLauncher")


class SharedSimulator(Callback):
    """`hydra.callbacks.shared_simulator` in conf/config.yaml."""

    def __init__(self) -> None:
        self._sim: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"_sim": None}  # workers get the callback without the simulator: they reach it over HTTP

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.launcher.get("_target_") in _IN_PROCESS or config.dry_run or config.simulate in (None, False):
            return
        from runner.run import new_simulator

        try:
            sim = new_simulator(config.sim_config, config.state_dir).start()
        except Exception:  # each point then tries its own, and reports the problem as a run does
            return
        self._sim = sim
        accounts = {name: {"url": sim.url(name), "key": sim.keys[name], "endpoints": sim.endpoints(name)} for name in sim.providers}
        os.environ[SHARED_ENV] = json.dumps({"state": str(Path(str(sim.state_path)).resolve()), "sim_config": config.sim_config,
                                             "accounts": accounts})

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sim is not None:
            self._sim.stop()
            self._sim = None
            os.environ.pop(SHARED_ENV, None)


def shared_accounts(state_path: Path, sim_config: str | None, environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]] | None:
    """The shared simulator's accounts by provider when one serves this state file and config, else None."""
    given = (os.environ if environ is None else environ).get(SHARED_ENV)
    if not given:
        return None
    shared = json.loads(given)
    if shared["state"] != str(state_path.resolve()) or shared["sim_config"] != sim_config:
        return None
    return dict(shared["accounts"])
