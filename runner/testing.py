"""The conformance kit: the tests every provider plugin must pass, ready to run against its simulator.

    from runner.testing import FailureCase, ProviderConformance
    from runner_acme import Acme

    class TestAcmeConformance(ProviderConformance):
        provider_class = Acme
        failure_cases = [FailureCase("SAFETY.INPUT.TEXT", "permanent"), FailureCase("INTERNAL", "retryable")]

pytest collects the tests below for the class. By default the kit starts a provider simulator
hosting the simulator the plugin registers (`register_simulators`), plans one job for every model
and mode of the provider's manifests (once per class), scripts faults through the simulator's
shared fault machinery and reads what the provider received from it. A plugin without a simulator
overrides `provider()` (pointing at its own server, recorded fixtures or the real API) and, for the
fault and payload tests, `inject()` and `received()`; they are skipped otherwise. docs/plugins.md
walks through it, and tests/test_conformance.py runs it for Runway and fal.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import httpx
import pytest

from runner import connections, plugins
from runner.inputs import PLACEHOLDER, InputFile
from runner.outputs import download
from runner.providers import ErrorClass, GenerationFailed, Handle, Job, Provider, ProviderError, Settings, Status
from runner.testjobs import catalogue_jobs, models_and_modes, provided

if TYPE_CHECKING:
    from runner.sim import ProviderSim, SimConfig, Simulator

T = TypeVar("T")


@dataclass(frozen=True)
class FailureCase:
    """A generation the provider fails, and how the plugin must report it. The kit fates a task to
    fail with `failure_code` (the simulator's `task_failed` fault: its families are SAFETY.INPUT,
    SAFETY.OUTPUT, INTERNAL, INTERNAL.BAD_OUTPUT, THIRD_PARTY, ...; the provider simulator shows each
    its provider's way) and expects a failed status, or a GenerationFailed from `result`, of `kind`
    whose message contains `message` when given."""

    failure_code: str
    kind: ErrorClass
    message: str | None = None


class ProviderConformance:
    """Subclass it in a test module and set `provider_class`; see the module's docstring."""

    #: The plugin's Provider subclass.
    provider_class: ClassVar[type[Provider]]
    #: The provider simulator to run against; None: the one a plugin registers for the provider.
    simulator: ClassVar[type["ProviderSim"] | None] = None
    #: Generations the provider fails, each with the outcome the plugin must report.
    failure_cases: ClassVar[Sequence[FailureCase]] = ()
    #: Seconds between polls, and the longest a generation may take in the suite.
    poll_interval: ClassVar[float] = 0.05
    timeout: ClassVar[float] = 30.0

    sim: ClassVar["Simulator | None"] = None
    workdir: ClassVar[Path]

    # -- what a plugin's test may change ----------------------------------------------------------

    def sim_config(self) -> "SimConfig":
        """The simulator's behaviour: generations of a few tens of milliseconds."""
        from runner.sim import SimConfig

        return SimConfig(latency={"default": {"min": 0.02, "max": 0.05}}, pending_s=0.01)

    def provider(self, client: httpx.AsyncClient, key: str | None = None) -> Provider:
        """The provider under test, pointed at the simulator; `key` replaces the valid key (to test
        a wrong one). Override it to test against another server."""
        sim = self._simulator()
        name = self.provider_class.name
        return self.provider_class(settings(sim.url(name), key or sim.keys[name], sim.endpoints(name)), client)

    def jobs(self) -> list[tuple[str, Job]]:
        """(name, job) for every model and mode of the provider's manifests: by default one each,
        planned as a user's prompt set would be (`runner.testjobs.catalogue_jobs`). The kit asks
        once per class."""
        return catalogue_jobs(self.provider_class.name, self.workdir)

    def inject(self, kind: str, point: str, **detail: Any) -> bool:
        """Make the server fail the next call at `point` (submit, poll, result, cancel, download) with
        `kind` (the simulator's fault kinds: http_429 with retry_after=..., http_503, reset,
        malformed_json, task_failed with failure_code=..., expired_url); False when the server cannot
        (those tests are skipped). With a simulator: its fault at the provider's point serving `point`."""
        if self.sim is None:
            return False
        self.sim.inject(kind, on=self.fault_point(point), **detail)
        return True

    def received(self, handle: Handle) -> Any:
        """What the provider received for this task, at the level of the job's payload: its native
        fields (the body without what is not a model parameter, such as a `model` name, or the
        object a body wraps them in). None when the server cannot tell (that test is skipped).
        With a simulator: what its provider simulator read from the request."""
        return None if self.sim is None else self.sim.received(handle.task_id)

    # -- the kit's own machinery ------------------------------------------------------------------

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def conformance_simulator(cls, tmp_path_factory: pytest.TempPathFactory):
        """One simulator per class, hosting only the provider under test."""
        cls.workdir = tmp_path_factory.mktemp(cls.provider_class.name)
        simulator = cls.simulator or plugins.simulators().classes.get(cls.provider_class.name)
        if simulator is None:
            yield None
            return
        from runner.sim import Simulator

        with Simulator(cls().sim_config(), simulators=[simulator]) as sim:
            cls.sim = sim
            yield sim
        cls.sim = None

    @pytest.fixture(autouse=True)
    def no_leftover_faults(self, conformance_simulator: "Simulator | None"):
        yield
        if conformance_simulator is not None:
            conformance_simulator.clear_faults()

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if "failure_case" in metafunc.fixturenames:
            cases = list(metafunc.cls.failure_cases)
            metafunc.parametrize("failure_case", cases, ids=[case.failure_code for case in cases])

    def fault_point(self, point: str) -> str:
        """The simulator's point of the provider that serves a call of the contract (`submit`, ...)."""
        if point == "download":
            return point
        assert self.sim is not None
        handler = self.sim.app.handlers[self.provider_class.name]
        serving = [name for name, roles in handler.points.items() if point in roles]
        if not serving:
            pytest.skip(f"the {handler.provider} simulator has no fault point serving {point}")
        return handler.point(point if point in serving else serving[0])

    def planned(self) -> list[tuple[str, Job]]:
        """`jobs()`, asked once per class: planning takes Hydra a while."""
        cls = type(self)
        if "_planned" not in cls.__dict__:
            cls._planned = list(self.jobs())
            name = self.provider_class.name
            why = "" if provided(name) else (f": the catalogue has no model of {name}; is its plugin installed, and loaded "
                                             f"(RUNNER_LOAD_PLUGINS={os.environ.get('RUNNER_LOAD_PLUGINS')!r})?")
            assert cls._planned, "jobs() returned no job" + why
        return cls._planned  # type: ignore[attr-defined]

    def first_job(self) -> Job:
        return self.planned()[0][1]

    def _simulator(self) -> "Simulator":
        if self.sim is None:
            raise AssertionError(f"no simulator is registered for provider {self.provider_class.name!r}: register one "
                                 f"(register_simulators) or override provider() to point at your own server")
        return self.sim

    def run(self, body: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
        async def main() -> T:
            async with connections.client(8, 10.0, follow_redirects=False) as client:  # the client the runner gives plugins
                return await body(client)

        return asyncio.run(main())

    @contextlib.contextmanager
    def long_generations(self) -> Iterator[None]:
        """Generations submitted inside wait a minute in the queue, then run a minute: a test that
        acts on a task before it ends (a cancel) must not race the suite's quick ones on a busy
        machine. Queued, not just long: fal lets a running request ignore a cancel and complete.
        A real API's take that long anyway."""
        if self.sim is None:
            yield
            return
        from runner.sim import Latency

        kept = self.sim.config.latency, self.sim.config.pending_s
        self.sim.config.latency, self.sim.config.pending_s = {"default": Latency(60.0, 60.0)}, 60.0
        try:
            yield
        finally:
            self.sim.config.latency, self.sim.config.pending_s = kept

    async def until_done(self, provider: Provider, handle: Handle) -> Status:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            status = await provider.poll(handle)
            if status.state not in ("queued", "running"):
                return status
            await asyncio.sleep(self.poll_interval)
        raise AssertionError(f"task {handle.task_id} did not finish within {self.timeout} s")

    def check_sent(self, name: str, job: Job, sent: Any) -> None:
        """Assert the provider got the job's payload, each input file in place of its placeholder:
        as a data URI holding exactly the file's bytes, or as a URL or upload URI (never a local path)."""
        _compare(name, job.payload, sent, {f.sha256: f for f in job.inputs}, "payload")

    # -- the suite ----------------------------------------------------------------------------------

    def test_jobs_cover_every_model_and_mode(self) -> None:
        models = provided(self.provider_class.name)
        declared = {(m.name, mode) for m in models for mode in m.spec.modes}
        covered = {pair for _, job in self.planned() for pair in models_and_modes(job, models)}
        missing = sorted(declared - covered)
        assert not missing, f"jobs() has no job for {', '.join(f'{m} {mode}' for m, mode in missing)}"

    def test_every_job_submits_polls_and_downloads(self) -> None:
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
            with tempfile.TemporaryDirectory() as folder:
                await asyncio.gather(*(one(client, provider, name, job, Path(folder) / str(i))
                                       for i, (name, job) in enumerate(self.planned())))

        self.run(body)

    def test_input_files_reach_the_provider(self) -> None:
        with_inputs = [(name, job) for name, job in self.planned() if job.inputs]
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
        async def body(client: httpx.AsyncClient) -> Status:
            provider = self.provider(client)
            handle = await provider.submit(self.first_job())
            await provider.cancel(handle)
            return await self.until_done(provider, handle)

        with self.long_generations():
            status = self.run(body)
        assert status.state in ("canceled", "failed"), status

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
        assert error.kind == "permanent" and "no_such_field_xyz" in error.message, error.message

    def test_wrong_key_is_permanent(self) -> None:
        async def body(client: httpx.AsyncClient) -> ProviderError:
            with pytest.raises(ProviderError) as err:
                await self.provider(client, key="wrong-key").submit(self.first_job())
            return err.value

        error = self.run(body)
        assert error.kind == "permanent" and error.status == 401, error.message

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
        assert error.kind == "rate_limited" and error.retry_after == 7, error.message

    def test_server_error_is_retryable(self) -> None:
        error = self._submit_error("http_503")
        assert error.kind == "retryable" and error.status == 503, error.message

    def test_dropped_connection_is_retryable_and_ambiguous(self) -> None:
        error = self._submit_error("reset")
        assert error.kind == "retryable" and error.maybe_accepted, error.message

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

    def test_an_expired_output_url_is_renewed_by_result(self) -> None:
        job = self.first_job()

        async def body(client: httpx.AsyncClient) -> tuple[int, int]:
            provider = self.provider(client)
            handle = await provider.submit(job)
            if not self.inject("expired_url", "result"):
                pytest.skip("the server cannot inject faults")
            status = await self.until_done(provider, handle)
            assert status.state == "succeeded", status
            stale = list(status.outputs) or list((await provider.result(handle, job)).outputs)
            fresh = list((await provider.result(handle, job)).outputs)
            return (await client.get(stale[0])).status_code, (await client.get(fresh[0])).status_code

        stale, fresh = self.run(body)
        assert stale >= 400 and fresh == 200, (stale, fresh)

    def test_a_failed_generation_is_reported_as_declared(self, failure_case: FailureCase) -> None:
        if not self.inject("task_failed", "submit", failure_code=failure_case.failure_code):
            pytest.skip("the server cannot inject faults")

        async def body(client: httpx.AsyncClient) -> tuple[str | None, str]:
            provider = self.provider(client)
            job = self.first_job()
            handle = await provider.submit(job)
            status = await self.until_done(provider, handle)
            if status.state == "failed":
                return status.error_kind, status.error or ""
            assert status.state == "succeeded", status
            try:
                await provider.result(handle, job)
            except GenerationFailed as exc:
                return exc.kind, exc.message
            raise AssertionError(f"{failure_case.failure_code}: a failed generation was reported as a success")

        kind, message = self.run(body)
        assert kind == failure_case.kind, (failure_case, message)
        assert failure_case.message is None or failure_case.message in message, (failure_case, message)


def settings(base_url: str, key: str, endpoints: dict[str, str] | None = None) -> Settings:
    """A provider's settings for a test: its base URL and key (and other services, as fal's)."""
    return Settings(base_url=base_url, key=key, request_timeout_s=10, endpoints=endpoints or {})


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
