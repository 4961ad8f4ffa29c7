"""`hydra/launcher=runner`: a multirun launcher that runs every sweep point's jobs in one engine.

Hydra's own launchers run sweep points one after another (or one process each). This one composes
every point first, validates all of them before anything is submitted, then runs all their jobs
together, so models on different providers generate at the same time. Hydra finds it by scanning
the `hydra_plugins` namespace; the work is imported only when a multirun launches.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RunnerLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.launcher.RunnerLauncher"


ConfigStore.instance().store(group="hydra/launcher", name="runner", node=RunnerLauncherConf, provider="video-runner")
