"""The official SDKs complete jobs on the simulator: `runwayml` and `fal-client`, installed from PyPI
into a throwaway virtualenv (cached under the system temp dir, keyed by Python and SDK versions),
each run as a script against a started simulator the way docs/simulator.md points them at it.

Skipped, saying why, only when PyPI cannot be reached. Bump the versions when new SDKs come out.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import pytest
from test_sim_helpers import PICTURE

from runner.sim import SimConfig, Simulator

RUNWAYML, FAL_CLIENT = "5.24.0", "1.0.3"
#: What pip says when it cannot reach the index (as opposed to a real installation problem).
_OFFLINE = ("NewConnectionError", "Network is unreachable", "Temporary failure in name resolution",
            "Name or service not known", "ConnectTimeout", "Read timed out", "ProxyError")

RUNWAY_SCRIPT = """
import json, os, sys
import runwayml.lib.polling as polling
from runwayml import RunwayML

polling.POLL_TIME, polling.POLL_JITTER = 0.05, 0.0  # the SDK waits about 6 s between polls otherwise
client = RunwayML(base_url=sys.argv[1], api_key=os.environ["RUNWAYML_API_SECRET"], max_retries=0)
task = client.image_to_video.create(model="gen4_turbo", prompt_image="https://example.com/cup.png",
                                    prompt_text="steam rising", ratio="1280:720", duration=5)
done = task.wait_for_task_output(timeout=60)
org = client.organization.retrieve()
print(json.dumps({"id": task.id, "status": done.status, "output": done.output, "credits": org.credit_balance}))
"""

FAL_SCRIPT = """
import asyncio, json, os, sys
import fal_client
import fal_client.client as fc

base = sys.argv[1]
fc.QUEUE_URL_FORMAT = base + "/fal/"  # the module's host names are HTTPS-only; these are read at call time
fc.REST_URL, fc.CDN_URL = base + "/fal-rest", base + "/fal-cdn"
model = "fal-ai/kling-video/v2.1/standard/image-to-video"
client = fal_client.SyncClient(key=os.environ["FAL_KEY"])
cdn_url = client.upload_file(sys.argv[2])  # fal's CDN: token, then the upload
stored_url = client.upload(open(sys.argv[2], "rb").read(), "image/png", "again.png", repository="fal")  # initiate + PUT
subscribed = client.subscribe(model, arguments={"prompt": "a sneaker", "image_url": cdn_url})


async def submitted():
    handle = await fal_client.AsyncClient(key=os.environ["FAL_KEY"]).submit(
        model, arguments={"prompt": "a sneaker again", "image_url": stored_url})
    return handle.request_id, await handle.get()

request_id, result = asyncio.run(submitted())
print(json.dumps({"cdn_url": cdn_url, "stored_url": stored_url, "videos": [subscribed["video"]["url"], result["video"]["url"]],
                  "request_id": request_id}))
"""


@pytest.fixture(scope="module")
def sdk_python() -> Path:
    """The python of a virtualenv with both SDKs, built once per version pair and reused."""
    key = f"py{sys.version_info.major}{sys.version_info.minor}-runwayml{RUNWAYML}-falclient{FAL_CLIENT}"
    root = Path(tempfile.gettempdir()) / f"video-runner-sdks-{key}"
    python = root / "bin" / "python"
    if (root / ".complete").exists():
        return python
    building = root.with_name(f"{root.name}.building-{os.getpid()}")  # another run may be building too
    shutil.rmtree(building, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(building)], check=True, capture_output=True, timeout=120)
    pip = subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          f"runwayml=={RUNWAYML}", f"fal-client=={FAL_CLIENT}"], capture_output=True, text=True, timeout=600)
    if pip.returncode != 0:
        shutil.rmtree(building, ignore_errors=True)
        if any(marker in pip.stderr for marker in _OFFLINE):
            pytest.skip(f"PyPI is unreachable, so the official SDKs cannot be installed: {pip.stderr.strip()[-300:]}")
        raise AssertionError(f"pip could not install the SDKs:\n{pip.stderr}")
    (building / ".complete").touch()
    try:
        building.rename(root)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(building, ignore_errors=True)
    return python


def run_script(python: Path, script: str, *args: str, env: dict[str, str]) -> dict:
    done = subprocess.run([str(python), "-c", textwrap.dedent(script), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_runway_sdk_creates_and_waits_for_a_task(sdk_python):
    with Simulator(SimConfig(latency={"default": 0.2}, pending_s=0.05)) as sim:
        out = run_script(sdk_python, RUNWAY_SCRIPT, sim.runway_url, env={"RUNWAYML_API_SECRET": sim.keys["runway"]})
        assert out["status"] == "SUCCEEDED" and httpx.get(out["output"][0]).content[4:8] == b"ftyp"
        (entry,) = sim.ledger()
        assert entry["task_id"] == out["id"] and entry["status"] == "succeeded"
        assert out["credits"] == sim.config.credit_balance - 25


def test_fal_client_uploads_subscribes_and_submits(sdk_python):
    with Simulator(SimConfig(latency={"default": 0.2}, pending_s=0.05)) as sim:
        out = run_script(sdk_python, FAL_SCRIPT, sim.base_url, str(PICTURE), env={"FAL_KEY": sim.keys["fal"]})
        for url in (out["cdn_url"], out["stored_url"]):
            assert httpx.get(url).content == PICTURE.read_bytes()
        for video in out["videos"]:
            assert httpx.get(video).content[4:8] == b"ftyp"
        entries = sim.ledger()
        assert [e["status"] for e in entries] == ["succeeded", "succeeded"] and entries[1]["task_id"] == out["request_id"]
        routes = sim.stats()["server"]["routes"]
        assert routes["fal.upload"]["requests"] >= 4  # token + CDN upload, then initiate + PUT
