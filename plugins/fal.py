"""fal.ai's queue API (queue.fal.run): models from manifests/fal.yaml."""

from runner.hookspecs import hookimpl
from runner_manifests import path


@hookimpl
def register_manifests(register):
    register(path("fal.yaml"))
