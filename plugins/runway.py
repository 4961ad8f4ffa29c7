"""Runway's developer API (api.dev.runwayml.com): models from manifests/runway.yaml."""

from runner.hookspecs import hookimpl
from runner_manifests import path


@hookimpl
def register_manifests(register):
    register(path("runway.yaml"))
