"""Jobs for the conformance kit (runner/testing.py): one for every model and mode of a provider,
planned through `runner.app.plan` from a prompt set written for the purpose, so each mode is
inferred from its prompt's inputs as in a user's sweep; and which model and mode a job is for.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from runner import plugins
from runner.catalog import CatalogModel, check_payload
from runner.inputs import replace_inputs
from runner.manifest import MEDIA_PARAMS
from runner.providers import Job, make_job

ASSETS = Path(__file__).resolve().parent / "assets"


def runnable(model: CatalogModel) -> bool:
    """Not retired: the provider's API refuses a retired model, so the plan refuses it too."""
    return model.spec.retired is None or not model.spec.retired.refused


def provided(provider: str) -> list[CatalogModel]:
    """The provider's models that can still run, by name."""
    models = plugins.registry().catalog.models.values()
    return sorted((m for m in models if m.provider == provider and runnable(m)), key=lambda m: m.name)


def media_files(folder: Path) -> dict[str, Any]:
    """Local input files for each canonical media parameter: images, an MP4 and a WAV."""
    from runner.sim.media import make_audio, make_video

    video = folder / "performance.mp4"
    video.write_bytes(make_video("conformance performance", 3.0))
    audio = folder / "speech.wav"
    audio.write_bytes(make_audio("conformance speech", 2.0))
    return {
        "image": str(ASSETS / "lighthouse.png"),
        "end_image": str(ASSETS / "portrait.jpg"),
        "reference_images": [str(ASSETS / "portrait.jpg"), str(ASSETS / "coffee.jpg")],
        "video": str(video),
        "audio_input": str(audio),
    }


def prompt_for(model: CatalogModel, mode_name: str, media: dict[str, Any]) -> dict[str, Any]:
    """A prompt that needs exactly this mode: text if it takes a prompt, every media input it takes,
    and the first allowed value of any required native field that has no default."""
    mode = model.mode(mode_name)
    by_canonical = {spec.canonical: spec for spec in mode.params.values() if spec.canonical}
    prompt: dict[str, Any] = {"id": re.sub(r"[^a-z0-9]+", "-", mode_name)}
    if "prompt" in by_canonical:
        prompt["text"] = f"A lighthouse at dusk, waves rolling in ({mode_name})"
    for name in MEDIA_PARAMS:
        if name in by_canonical:
            prompt[name] = media[name]
    if "reference_images" in prompt and "at most one" in by_canonical["reference_images"].description:
        prompt["reference_images"] = prompt["reference_images"][:1]  # gen4_aleph takes one reference
    native = {field: spec.enum[0] for field, spec in mode.params.items()
              if spec.required and spec.default is None and not spec.canonical and spec.enum}
    if native:
        prompt["native"] = native  # eleven_voice_dubbing's targetLang
    return prompt


def catalogue_jobs(provider: str, folder: Path) -> list[tuple[str, Job]]:
    """(`<model> <mode>`, job) for every mode of every model of a provider that can still run, each
    planned with a prompt file of its own written under `folder`."""
    from runner.app import plan  # Hydra and the planner: only when jobs are planned

    catalog = plugins.registry().catalog
    media = media_files(folder)
    found = []
    for model in provided(provider):
        set_name = "conformance_" + re.sub(r"[^A-Za-z0-9]+", "_", model.name)
        prompts = [prompt_for(model, mode, media) for mode in model.spec.modes]
        prompt_file = folder / f"{set_name}.yaml"
        prompt_file.write_text(yaml.safe_dump({"name": set_name, "prompts": prompts}))
        planned = plan([f"model={model.name}", f"prompt_set.file={prompt_file}"]).jobs
        for job in planned:
            found.append((f"{model.name} {job.mode}", make_job(job.key, catalog.models[job.model], job.endpoint, job.payload, job.inputs)))
    return found


def models_and_modes(job: Job, models: list[CatalogModel]) -> set[tuple[str, str]]:
    """(model, mode) a job is for: the modes of its model and endpoint that its payload fits
    (modes may share an endpoint, as an image-to-video that is text-to-video plus an image)."""
    payload = replace_inputs(job.payload, {f.sha256: f.data_uri() for f in job.inputs})
    candidates = [(m, name) for m in models if m.model_id == job.model_id
                  for name, mode in m.spec.modes.items() if mode.endpoint == job.endpoint]
    fitting = {(m.name, name) for m, name in candidates if not check_payload(m.mode(name), payload)}
    return fitting or {(m.name, name) for m, name in candidates[:1]}
