"""A conformance suite any provider plugin can run (as Hydra ships LauncherTestSuite).

Subclass `ProviderConformance` in a test module and implement `provider()` (a Provider bound to a
server: the bundled simulator, a recorded fixture server, or the real API) and `jobs()` (one job per
mode to exercise); pytest then collects the tests below. Implement `inject()` to let the suite make
the server fail the next call, and the error-classification tests run too.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

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
        """(name, job) for every mode the plugin's manifests declare."""
        raise NotImplementedError

    def inject(self, kind: str, point: str, **detail: Any) -> bool:
        """Make the server fail the next `point` call (submit, poll, result, download) with `kind`
        (http_429, http_503, reset, task_failed with failure_code=...). False: not supported."""
        return False

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

    # -- the suite -----------------------------------------------------------------------------------

    def test_every_mode_submits_polls_and_downloads(self) -> None:
        async def body(client: httpx.AsyncClient) -> None:
            provider = self.provider(client)
            for name, job in self.jobs():
                handle = await provider.submit(job)
                assert handle.task_id, name
                status = await self.until_done(provider, handle)
                assert status.state == "succeeded", (name, status)
                urls = list(status.outputs) or await provider.result(handle, job)
                assert urls, name
                with tempfile.TemporaryDirectory() as folder:
                    got = await download(client, urls[0], Path(folder) / "out")
                    assert got.size > 0 and len(got.sha256) == 64, name

        self.run(body)

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

    @pytest.mark.parametrize("code, kind", [("SAFETY.INPUT.TEXT", "permanent"), ("INTERNAL.BAD_OUTPUT.CODE01", "retryable")])
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
