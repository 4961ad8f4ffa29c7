"""Shared fixtures and helpers of the simulator tests (tests/test_sim*.py); it holds no tests.

Every helper talks to a server on an ephemeral 127.0.0.1 port; every wait is bounded by a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from runner.sim import SimConfig, Simulator

ROOT = Path(__file__).resolve().parent.parent
RUNWAY_VERSION = "2024-11-06"
KLING = "fal-ai/kling-video/v2.1/standard/image-to-video"
PIKA = "fal-ai/pika/v2.2/text-to-video"
TURBO_BODY = {"model": "gen4_turbo", "promptImage": "https://example.com/a.jpg", "ratio": "1280:720",
              "duration": 5, "promptText": "a sneaker turning"}
FAST = {"latency": {"default": {"min": 0.03, "max": 0.08}}, "pending_s": 0.01}


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def make_sim():
    """Start simulators with a custom config (fast by default); all are stopped after the test."""
    started: list[Simulator] = []

    def start(**settings) -> Simulator:
        sim = Simulator(SimConfig(**{**FAST, **settings})).start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture
def client():
    with httpx.Client(timeout=5) as http:
        yield http


def rw(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {sim.keys['runway']}", "X-Runway-Version": RUNWAY_VERSION}


def fk(sim: Simulator) -> dict[str, str]:
    return {"Authorization": f"Key {sim.keys['fal']}"}


def create(client: httpx.Client, sim: Simulator, body: dict | None = None, endpoint: str = "image_to_video") -> httpx.Response:
    return client.post(f"{sim.runway_url}/v1/{endpoint}", headers=rw(sim), json=body or TURBO_BODY)


def wait_runway(client: httpx.Client, sim: Simulator, task_id: str, timeout: float = 5.0) -> tuple[dict, list[dict]]:
    """Poll a Runway task until it ends; (final task, every task object seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).json()
        seen.append(task)
        if task["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return task, seen
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} did not end within {timeout}s: {seen[-1]}")


def submit(client: httpx.Client, sim: Simulator, body: dict, model: str = KLING, **headers: str) -> dict:
    response = client.post(f"{sim.fal_url}/{model}", headers={**fk(sim), **headers}, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def wait_fal(client: httpx.Client, sim: Simulator, queued: dict, timeout: float = 5.0) -> tuple[httpx.Response, list[httpx.Response]]:
    """Poll a fal request's status URL until COMPLETED; (final response, every response seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(queued["status_url"], headers=fk(sim), params={"logs": "1"})
        seen.append(response)
        if response.json()["status"] == "COMPLETED":
            return response, seen
        time.sleep(0.01)
    raise AssertionError(f"request did not complete within {timeout}s: {seen[-1].text}")


def ledger_entry(sim: Simulator, task_id: str) -> dict:
    return next(entry for entry in sim.ledger() if entry["task_id"] == task_id)


def ok_kling(prompt: str = "a coffee cup") -> dict:
    return {"prompt": prompt, "image_url": "https://example.com/cup.png"}


GEN45 = {"model": "gen4.5", "promptText": "fog", "ratio": "1280:720", "duration": 3}
PICTURE = ROOT / "runner" / "assets" / "sneaker.png"


def settled(sim: Simulator, timeout: float = 10.0) -> list[dict]:
    """The ledger once every task in it has ended."""
    deadline = time.monotonic() + timeout
    while any(entry["status"] == "accepted" for entry in sim.ledger()):
        assert time.monotonic() < deadline, "tasks still running"
        time.sleep(0.02)
    return sim.ledger()


def status_of(client: httpx.Client, sim: Simulator, task_id: str) -> str:
    return client.get(f"{sim.runway_url}/v1/tasks/{task_id}", headers=rw(sim)).json()["status"]


def ticket_for(client: httpx.Client, sim: Simulator, name: str = "shoe.png") -> dict:
    return client.post(f"{sim.runway_url}/v1/uploads", headers=rw(sim), json={"filename": name, "type": "ephemeral"}).json()


def post_form(client: httpx.Client, ticket: dict) -> int:
    return client.post(ticket["uploadUrl"], data=ticket["fields"],
                       files={"file": ("shoe.png", PICTURE.read_bytes(), "image/png")}).status_code


def until(check, timeout: float = 5.0, what: str = "condition"):
    """Call `check` until it returns something truthy (returned); AssertionError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.01)
    return value
