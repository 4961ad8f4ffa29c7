"""The work every client is given: a prompt file for the runner, and the very same native requests,
taken from the runner's own plan, for the SDK loops, so that every client sends identical bodies
and the simulator bills and times them alike."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: One text-to-video model per provider, priced in the catalogue: the simulator bills them.
RUNWAY_MODEL = ("gen4.5", "duration=5")
FAL_MODEL = ("pika", "duration=5")
#: The mixed sweep: two models of each provider in one command.
MIXED_MODELS = ("gen4.5", "veo3.1_fast", "pika", "fal-sora-2")


def prompt_file(folder: Path, count: int, name: str = "bench") -> Path:
    """`count` text prompts, one JSON object per line."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.jsonl"
    with path.open("w") as out:
        for i in range(count):
            out.write(json.dumps({"id": f"s{i:06d}", "text": f"A slow aerial shot along a rocky coastline at dusk, take {i}"}) + "\n")
    return path


def peer_jobs(prompts: Path, model: tuple[str, str], folder: Path) -> Path:
    """The requests the runner plans for these prompts, as the SDK loops send them."""
    from runner.app import plan

    jobs: list[dict[str, Any]] = []
    for job in plan([f"model={model[0]}", f"prompt_set.file={prompts}", model[1]]).jobs:
        jobs.append({"id": job.prompt_id, "endpoint": job.endpoint, "model": job.model_id, "body": job.payload})
    path = folder / f"jobs-{model[0]}.json"
    path.write_text(json.dumps(jobs))
    return path


def outputs_done(folder: Path) -> tuple[int, float | None]:
    """How many clips are in a folder (any depth), and when the last was written."""
    files = [p for p in folder.rglob("*.mp4") if p.is_file()]
    return len(files), max((p.stat().st_mtime for p in files), default=None)
