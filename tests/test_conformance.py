"""The Runway and fal plugins against the conformance kit (runner/testing.py), as any plugin runs it:
over real HTTP to their simulators, for every model and every mode their manifests declare; then
the provider-specific parts the kit cannot know: Runway's upload flow, organization limits and
THROTTLED status, fal's key pair, fallback header and queue position."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from runner import plugins
from runner.app import plan
from runner.providers import Job, Provider, ProviderError, make_job, offers_watch
from runner.sim import SimConfig, Simulator, payload_sha256
from runner.sim.media import make_image
from runner.testing import FailureCase, ProviderConformance, settings
from runner_plugins.fal import Fal
from runner_plugins.runway import Runway
from tests.conftest import run_cli
from tests.helpers import wait_until


class TestRunwayConformance(ProviderConformance):
    provider_class = Runway
    # Runway's task-failure guide: moderation, bad assets and bad outputs are not worth a new
    # (paid) generation; its own and third-party faults may pass on a retry.
    failure_cases = (
        FailureCase("SAFETY.INPUT.TEXT", "permanent", "Input did not pass moderation"),
        FailureCase("SAFETY.OUTPUT.VIDEO", "permanent"),
        FailureCase("INTERNAL.BAD_OUTPUT.CODE01", "permanent"),
        FailureCase("INTERNAL", "retryable"),
        FailureCase("THIRD_PARTY.UNAVAILABLE", "retryable"),
    )


class TestFalConformance(ProviderConformance):
    provider_class = Fal
    # fal: a model's error (content policy) is final; its platform's (5xx, X-Fal-Retryable) may pass.
    failure_cases = (
        FailureCase("SAFETY.INPUT.TEXT", "permanent", "content_policy_violation"),
        FailureCase("INTERNAL", "retryable"),
        FailureCase("THIRD_PARTY.UNAVAILABLE", "retryable"),
    )


@pytest.mark.parametrize("provider, modes", [
    ("runway", {"text-to-video", "image-to-video", "video-to-video", "character-performance", "text-to-image",
                "text-to-speech", "sound-effect", "voice-isolation", "voice-dubbing", "speech-to-speech"}),
    ("fal", {"text-to-video", "image-to-video", "reference-to-video"}),
])
def test_the_manifests_keep_declaring_the_modes_the_suite_exercises(provider, modes):
    catalog = plugins.registry().catalog
    assert modes <= {mode for m in catalog.models.values() if m.provider == provider for mode in m.spec.modes}


# -- provider specifics -------------------------------------------------------------------------------


def run(body):
    async def main():
        async with httpx.AsyncClient(timeout=10) as client:
            return await body(client)

    return asyncio.run(main())


async def until_done(provider: Provider, handle, timeout: float = 10.0):
    for _ in range(int(timeout / 0.02)):
        status = await provider.poll(handle)
        if status.state not in ("queued", "running"):
            return status
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {handle.task_id} did not finish")


def one_job(overrides: list[str]) -> Job:
    catalog = plugins.registry().catalog
    job = plan(overrides).jobs[0]
    return make_job(job.key, catalog.models[job.model], job.endpoint, job.payload, job.inputs)


def test_runway_sends_a_large_local_image_through_the_upload_flow(sim, tmp_path, prompt_sets):
    """Over the 5 MB data-URI limit: POST /v1/uploads, the presigned form post, then the runway:// URI."""
    big = tmp_path / "big.png"
    big.write_bytes(make_image("big") + b"\0" * 4_000_000)  # PNG then padding: 4 MB, 5.3 MB as a data URI
    small = tmp_path / "small.png"
    small.write_bytes(make_image("small"))
    overrides = prompt_sets("upload", f"""
        name: upload
        prompts:
          - {{id: big, text: the beam turns, image: {big}}}
          - {{id: small, text: the beam turns, image: {small}}}
    """)
    catalog = plugins.registry().catalog
    jobs = [make_job(j.key, catalog.models[j.model], j.endpoint, j.payload, j.inputs) for j in plan(["model=gen4_turbo", *overrides]).jobs]

    async def body(client):
        provider = Runway(settings(sim.runway_url, sim.keys["runway"]), client)
        handles = [await provider.submit(job) for job in jobs]
        return handles, [await until_done(provider, h) for h in handles]

    handles, statuses = run(body)
    assert [s.state for s in statuses] == ["succeeded", "succeeded"]
    sent = [sim.app.board.get(h.task_id).body for h in handles]
    assert sent[0]["promptImage"].startswith("runway://") and sim.app.handlers["runway"].uploads.check_uri(sent[0]["promptImage"]) is None
    assert sent[0]["model"] == "gen4_turbo"
    assert sent[1]["promptImage"].startswith("data:image/png;base64,")
    ledger = {e["task_id"]: e for e in sim.ledger()}
    assert [ledger[h.task_id]["payload_sha256"] for h in handles] == [payload_sha256(b) for b in sent]
    assert sim.stats()["server"]["routes"]["runway.upload"]["requests"] == 2  # the ticket, then the form post


def test_fal_key_from_key_id_and_secret_and_the_no_fallback_header(sim):
    key = Fal.key_from_env({"FAL_KEY_ID": "sim-key-id", "FAL_KEY_SECRET": "sim-key-secret"}, "FAL_KEY")
    assert key == sim.keys["fal"] == "sim-key-id:sim-key-secret"
    assert Fal.key_from_env({"FAL_KEY": "k", "FAL_KEY_ID": "a", "FAL_KEY_SECRET": "b"}, "FAL_KEY") == "k"
    assert Fal.key_from_env({"FAL_KEY_ID": "a"}, "FAL_KEY") is None
    job = one_job(["model=pika", "prompt_set=nature"])

    async def body(client):
        provider = Fal(settings(sim.fal_url, key), client)
        handle = await provider.submit(job)
        return handle, await until_done(provider, handle)

    handle, status = run(body)
    assert status.state == "succeeded"
    entry = next(e for e in sim.ledger() if e["task_id"] == handle.task_id)
    assert entry["fallback_disabled"] is True and entry["model"] == "fal-pika-v2.2"


def test_runway_reads_its_limits_from_the_organization():
    config = SimConfig(concurrency={"runway": 3, "gen4_turbo": 1, "veo3.1": 2}, daily_limit={"gen4_turbo": 5})
    with Simulator(config) as sim:
        limits = run(lambda client: Runway(settings(sim.runway_url, sim.keys["runway"]), client).account_limits())
    assert limits.concurrency["gen4_turbo"] == 1 and limits.concurrency["veo3.1"] == 2 and limits.concurrency["gen4.5"] == 3
    assert set(limits.concurrency) == {m.model_id for m in plugins.registry().catalog.models.values() if m.provider == "runway"}
    assert limits.daily_left == {"gen4_turbo": 5}


def test_runway_throttled_is_queued_not_an_error():
    config = SimConfig(latency={"default": 0.25}, pending_s=0.01, concurrency={"runway": 1})
    job = one_job(["model=gen4_turbo", "prompt_set=animate"])
    with Simulator(config) as sim:
        async def body(client):
            provider = Runway(settings(sim.runway_url, sim.keys["runway"]), client)
            first, second = await provider.submit(job), await provider.submit(job)
            waiting = await provider.poll(second)
            return waiting, await until_done(provider, second)

        waiting, final = run(body)
    assert waiting.detail == "THROTTLED" and waiting.state == "queued" and waiting.error is None
    assert final.state == "succeeded"


def test_fal_queue_position_surfaces():
    config = SimConfig(latency={"default": 0.25}, pending_s=0.01, concurrency={"fal": 1})
    job = one_job(["model=pika", "prompt_set=nature"])
    with Simulator(config) as sim:
        async def body(client):
            provider = Fal(settings(sim.fal_url, sim.keys["fal"]), client)
            handles = [await provider.submit(job) for _ in range(3)]
            return await provider.poll(handles[2]), await provider.poll(handles[1])

        third, second = run(body)
    assert third.state == "queued" and third.detail == "IN_QUEUE" and third.queue_position == 1
    assert second.state == "queued" and second.queue_position == 0


def test_fal_key_pair_works_through_the_command_line(sim, tmp_path):
    result = run_cli(
        "model=pika", "prompt_set=nature", f"providers.fal.base_url={sim.fal_url}", "providers.fal.min_poll_interval_s=0.05",
        cwd=tmp_path, env={"FAL_KEY_ID": "sim-key-id", "FAL_KEY_SECRET": "sim-key-secret"}, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 jobs: 3 downloaded" in result.stdout
    assert [e["fallback_disabled"] for e in sim.ledger()] == [True, True, True]


def test_the_suite_notices_an_input_file_that_was_not_sent():
    job = one_job(["model=gen4_turbo", "prompt_set=animate"])
    (file,) = job.inputs
    suite = ProviderConformance()
    good = {**job.payload, "promptImage": file.data_uri()}
    suite.check_sent("ok", job, {"model": "gen4_turbo", **good})
    suite.check_sent("uploaded", job, {**job.payload, "promptImage": "runway://6f0c1d2e"})
    for wrong in (job.payload["promptImage"], file.source, "data:image/png;base64,iVBORw0KGgo=", file.data_uri().replace("image/", "image/x-")):
        with pytest.raises(AssertionError):
            suite.check_sent("wrong", job, {**job.payload, "promptImage": wrong})
    with pytest.raises(AssertionError):
        suite.check_sent("changed", job, {**good, "duration": 10})


def test_fal_watch_returns_the_final_state_over_one_stream(sim):
    job = one_job(["model=pika", "prompt_set=nature"])

    async def body(client):
        provider = Fal(settings(sim.fal_url, sim.keys["fal"]), client)
        assert offers_watch(provider) and not offers_watch(Runway)
        return await provider.watch(await provider.submit(job), 30)

    assert run(body).state == "succeeded"
    # The simulator counts a stream once it has finished sending it, which the client need not wait for.
    wait_until(lambda: sim.stats()["providers"]["fal"]["requests"].get("fal.stream"), timeout=30)
    requests = sim.stats()["providers"]["fal"]["requests"]
    assert requests.get("fal.stream") == 1 and not requests.get("fal.status")


def test_fal_watch_explains_a_failed_request(sim):
    job = one_job(["model=pika", "prompt_set=nature"])
    sim.inject("task_failed", on="fal.submit", failure_code="SAFETY.INPUT.TEXT")

    async def body(client):
        provider = Fal(settings(sim.fal_url, sim.keys["fal"]), client)
        return await provider.watch(await provider.submit(job), 30)

    status = run(body)
    assert (status.state, status.error_kind) == ("failed", "permanent") and "content_policy_violation" in status.error


def test_fal_watch_gives_the_last_status_when_its_time_is_up():
    job = one_job(["model=pika", "prompt_set=nature"])
    with Simulator(SimConfig(latency={"default": {"min": 60, "max": 60}}, pending_s=0.01)) as slow:
        async def body(client):
            provider = Fal(settings(slow.fal_url, slow.keys["fal"]), client)
            return await provider.watch(await provider.submit(job), 0.5, seen=seen.append)

        seen: list = []
        last = run(body)
        assert last.state in ("queued", "running") and seen[-1] == last  # what it saw on the way, for the display


@pytest.mark.parametrize("kind", ["reset", "http_500", "malformed_json", "not_object", "redirect"])
def test_a_spoiled_fal_status_stream_is_a_provider_error(sim, kind):
    job = one_job(["model=pika", "prompt_set=nature"])
    sim.inject(kind, on="fal.stream")

    async def body(client):
        provider = Fal(settings(sim.fal_url, sim.keys["fal"]), client)
        with pytest.raises(ProviderError):
            await provider.watch(await provider.submit(job), 30)

    run(body)
