"""The Acme plugin against video-runner's provider conformance suite."""

from __future__ import annotations

import pytest

from runner import plugins
from runner.app import plan
from runner.providers import make_job
from runner.testing import ProviderConformance, settings
from runner_acme import Acme

from acme_server import KEY, AcmeServer


@pytest.fixture(scope="class", autouse=True)
def acme_server(request):
    with AcmeServer() as server:
        request.cls.server = server
        yield server


class TestAcmeConformance(ProviderConformance):
    def provider(self, client, key=None):
        return Acme(settings(self.server.url, key or KEY), client)

    def jobs(self):
        catalog = plugins.registry().catalog
        found = []
        for prompt_set in ("nature", "animate"):
            job = plan(["model=acme", f"prompt_set={prompt_set}", "duration=4"]).jobs[0]
            found.append((job.mode, make_job(job.key, catalog.models[job.model], job.endpoint, job.payload, job.inputs)))
        return found
