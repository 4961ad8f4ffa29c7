"""A conformance suite any provider plugin can run (as Hydra ships LauncherTestSuite).

Subclass `ProviderConformance` in a test module and implement `provider()` (a Provider bound to a
server: the bundled simulator, a recorded fixture server, or the real API) and `jobs()` (at least one
job for every mode the plugin's manifests declare); pytest then collects the tests below. Implement
`inject()` to let the suite make the server fail the next call, and the error-classification tests
run too; implement `received()` to let it check that input files really reach the server.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from runner import plugins
from runner.catalog import CatalogModel, check_payload
from runner.inputs import PLACEHOLDER, InputFile, replace_inputs
from runner.outputs import download
from runner.providers import Handle, Job, Provider, ProviderError, Settings, Status

T = TypeVar("T")


class ProviderConformance:
    #: Seconds between polls and the longest a generation may take in the suite.
    poll_interval: float = 0.05
    timeout: float = 30.0

    # -- what a plugin's test provides -------------------------------------------------------------

    def provider(self, client: httpx.AsyncClient, key: str | None = None) -> Provider:
        """The provider under test; `key` replaces the valid key (to test a wrong one)."""
        raise NotImplementedError

    def jobs(self) -> list[tuple[str, Job]]:
        """(name, job) for every mode the plugin's manifests declare; jobs with local input files
        (placeholders in the payload, `job.inputs`) for the modes that take them."""
        raise NotImplementedError

    def inject(self, kind: str, point: str, **detail: Any) -> bool:
        """Make the server fail the next `point` call (submit, poll, result, cancel, download) with
        `kind` (http_429 with retry_after=..., http_503, reset, malformed_json, task_failed with
        failure_code=...). False: not supported (those tests are skipped)."""
        return False

    def received(self, handle: Handle) -> Any:
        """The request body the server received for this task, or None when it cannot tell (the
        input-file test is then skipped)."""
        return None

    # -- helpers -------------------------------------------------------------------------------------

    def run(self, body: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with httpx.AsyncClient(timeout=10) as client:
                return await body(client)

        return asyncio.run(main())

    async def until_done(self, provider: Provider, handle: Handle) -> Status:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status = await provider.poll(handle)
            if status.state not in ("queued", "running"):
                return status
            await asyncio.sleep(self.poll_interval)
        raise AssertionError(f"task {handle.task_id} did not finish within {self.timeout} s")

    def first_job(self) -> Job:
        return self.jobs()[0][1]

    def check_sent(self, name: str, job: Job, sent: Any) -> None:
        """Assert the server got the job's payload, each input file in place of its placeholder:
        as a data URI holding exactly the file's bytes, or as a URL or upload URI (never a local path)."""
        files = {f.sha256: f for f in job.inputs}
        _compare(name, job.payload, sent, files, "payload")

    # -- the suite -----------------------------------------------------------------------------------

    def test_jobs_cover_every_mode_the_manifests_declare(self) -> None:
        catalog = plugins.registry().catalog

        async def name(client: httpx.AsyncClient) -> str:
            return self.provider(client).name

        provider_name = self.run(name)
        models = [m for m in catalog.models.values() if m.provider == provider_name]
        declared = {mode for m in models for mode in m.spec.modes}
        covered: set[str] = set()
        for _, job in self.jobs():
            covered |= _modes_of(job, models)
        assert declared <= covered, f"jobs() has no job for mode(s) {sorted(declared - covered)} of {provider_name}"

    def test_every_mode_submits_polls_and_downloads(self) -> None:
        async def one(client: httpx.AsyncClient, provider: Provider, name: str, job: Job, target: Path) -> None:
            handle = await provider.submit(job)
            assert handle.task_id, name
            status = await self.until_done(provider, handle)
            assert status.state == "succeeded", (name, status)
            urls = list(status.outputs) or list((await provider.result(handle, job)).outputs)
            assert urls, name
            got = await download(client, urls[0], target, tag="conformance")
            assert got.size > 0 and len(got.sha256) == 64, name

        async def body(client: httpx.AsyncClient) -> None:
            provider = self.provider(client)
            jobs = self.jobs()
            assert jobs, "jobs() returned no job"
            with tempfile.TemporaryDirectory() as folder:
                await asyncio.gather(*(one(client, provider, name, job, Path(folder) / str(i)) for i, (name, job) in enumerate(jobs)))

        self.run(body)

    def test_input_files_reach_the_provider(self) -> None:
        with_inputs = [(name, job) for name, job in self.jobs() if job.inputs]
        if not with_inputs:
            pytest.skip("no job has input files")

        async def body(client: httpx.AsyncClient) -> list[tuple[str, Job, Handle]]:
            provider = self.provider(client)
            return [(name, job, await provider.submit(job)) for name, job in with_inputs]

        for name, job, handle in self.run(body):
            sent = self.received(handle)
            if sent is None:
                pytest.skip("the server cannot show what it received")
            self.check_sent(name, job, sent)

    def test_cancel_stops_a_task(self) -> None:
        async def body(client: httpx.AsyncClient) -> None:
            provider = self.provider(client)
            handle = await provider.submit(self.first_job())
            await provider.cancel(handle)
            status = await self.until_done(provider, handle)
            assert status.state in ("canceled", "failed"), status

        self.run(body)

    def test_invalid_input_is_a_permanent_error_with_the_providers_message(self) -> None:
        job = self.first_job()
        bad = Job(**{**job.__dict__, "payload": {**job.payload, "no_such_field_xyz": 1}})

        async def body(client: httpx.AsyncClient) -> ProviderError:
            provider = self.provider(client)
            try:
                handle = await provider.submit(bad)
                status = await self.until_done(provider, handle)
                if status.state == "failed":
                    return ProviderError(status.error or "", kind=status.error_kind or "retryable")
                await provider.result(handle, bad)
            except ProviderError as exc:
                return exc
            raise AssertionError("an invalid request was accepted and produced an output")

        error = self.run(body)
        assert error.kind == "permanent"
        assert "no_such_field_xyz" in error.message

    def test_wrong_key_is_permanent(self) -> None:
        async def body(client: httpx.AsyncClient) -> None:
            with pytest.raises(ProviderError) as err:
                await self.provider(client, key="wrong-key").submit(self.first_job())
            assert err.value.kind == "permanent" and err.value.status == 401

        self.run(body)

    def _submit_error(self, kind: str, **detail: Any) -> ProviderError:
        if not self.inject(kind, "submit", **detail):
            pytest.skip("the server cannot inject faults")

        async def body(client: httpx.AsyncClient) -> ProviderError:
            with pytest.raises(ProviderError) as err:
                await self.provider(client).submit(self.first_job())
            return err.value

        return self.run(body)

    def test_rate_limit_is_classified_with_retry_after(self) -> None:
        error = self._submit_error("http_429", retry_after=7)
        assert error.kind == "rate_limited" and error.retry_after == 7

    def test_server_error_is_retryable(self) -> None:
        error = self._submit_error("http_503")
        assert error.kind == "retryable" and error.status == 503

    def test_dropped_connection_is_retryable_and_ambiguous(self) -> None:
        error = self._submit_error("reset")
        assert error.kind == "retryable" and error.maybe_accepted

    def test_malformed_answer_to_a_submit_is_retryable_and_ambiguous(self) -> None:
        error = self._submit_error("malformed_json")
        assert error.kind == "retryable" and error.maybe_accepted, error.message

    @pytest.mark.parametrize("kind, expected", [("http_503", "retryable"), ("http_429", "rate_limited"), ("reset", "retryable")])
    def test_poll_errors_are_classified_and_the_task_survives_them(self, kind: str, expected: str) -> None:
        async def body(client: httpx.AsyncClient) -> tuple[ProviderError, Status]:
            provider = self.provider(client)
            handle = await provider.submit(self.first_job())
            if not self.inject(kind, "poll", **({"retry_after": 3} if kind == "http_429" else {})):
                pytest.skip("the server cannot inject faults")
            with pytest.raises(ProviderError) as err:
                await provider.poll(handle)
            return err.value, await self.until_done(provider, handle)

        error, status = self.run(body)
        assert error.kind == expected and not error.maybe_accepted, error.message
        if kind == "http_429":
            assert error.retry_after == 3
        assert status.state == "succeeded", status

    @pytest.mark.parametrize("code, kind", [("SAFETY.INPUT.TEXT", "permanent"), ("INTERNAL", "retryable")])
    def test_failed_generation_is_classified(self, code: str, kind: str) -> None:
        if not self.inject("task_failed", "submit", failure_code=code):
            pytest.skip("the server cannot inject faults")

        async def body(client: httpx.AsyncClient) -> Status:
            provider = self.provider(client)
            return await self.until_done(provider, await provider.submit(self.first_job()))

        status = self.run(body)
        assert status.state == "failed" and status.error_kind == kind, status


def settings(base_url: str, key: str) -> Settings:
    return Settings(base_url=base_url, key=key, request_timeout_s=10)


def _modes_of(job: Job, models: list[CatalogModel]) -> set[str]:
    """The mode a job is for: the one of its model and endpoint that its payload fits (modes may
    share an endpoint, as an image-to-video that is text-to-video plus an image)."""
    payload = replace_inputs(job.payload, {f.sha256: f.data_uri() for f in job.inputs})
    candidates = [(m, name) for m in models if m.model_id == job.model_id
                  for name, mode in m.spec.modes.items() if mode.endpoint == job.endpoint]
    fitting = {name for m, name in candidates if not check_payload(m.mode(name), payload)}
    return fitting or {name for _, name in candidates[:1]}


def _compare(name: str, expected: Any, sent: Any, files: dict[str, InputFile], where: str) -> None:
    if isinstance(expected, dict) and set(expected) == {PLACEHOLDER}:
        file = files[expected[PLACEHOLDER]]
        assert isinstance(sent, str), f"{name}: {where} should carry the input file, got {sent!r:.100}"
        if sent.startswith("data:"):
            head, _, data = sent.partition(",")
            assert head == f"data:{file.mime};base64", f"{name}: {where} is a data URI of the wrong type: {head}"
            digest = hashlib.sha256(base64.b64decode(data)).hexdigest()
            assert digest == file.sha256, f"{name}: {where} is a data URI whose bytes are not the input file's"
        else:
            assert "://" in sent, f"{name}: {where} should be a data URI, a URL or an upload URI, got {sent[:100]!r}"
        return
    if isinstance(expected, dict):
        assert isinstance(sent, dict), f"{name}: {where} should be an object, got {sent!r:.100}"
        for key, value in expected.items():
            assert key in sent, f"{name}: {where}.{key} was not sent"
            _compare(name, value, sent[key], files, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(sent, list) and len(sent) == len(expected), f"{name}: {where} should be a list of {len(expected)}"
        for index, (a, b) in enumerate(zip(expected, sent)):
            _compare(name, a, b, files, f"{where}[{index}]")
    else:
        assert sent == expected, f"{name}: {where} is {sent!r:.100}, expected {expected!r:.100}"
