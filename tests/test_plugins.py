"""Plugin discovery through real entry points: throwaway plugin packages are pip-installed into a
temporary folder and the real commands run with it on PYTHONPATH. A broken plugin is named and left
out without hiding the others; the allowlist and the trace switch work; the listing shows plugins
and models; lifecycle hooks see every job of a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points, version
from pathlib import Path

import pytest

from tests.conftest import run_cli

RUNNER_VERSION = version("video-runner")
#: Every plugin installed in this environment: the project's, and any a user installed beside them,
#: which messages about the allowlist name too.
INSTALLED = sorted(ep.name for ep in entry_points(group="video_runner"))


def left_out(*loaded: str) -> str:
    return ", ".join(name for name in INSTALLED if name not in loaded)

TEMPLATE = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.3.0"
dependencies = ["video-runner"]

[project.entry-points.video_runner]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]

[tool.setuptools.package-data]
{module} = ["*.yaml"]
"""

MANIFEST_HOOK = """\
from importlib.resources import files
from runner.hookspecs import hookimpl


@hookimpl
def register_manifests(register):
    register(files(__name__) / "models.yaml")
"""

MODEL = """\
provider: {provider}
models:
  - name: {model}
    sources: [api.md]
    aliases: [{alias}]
    output: {{url: [video_url]}}
    pricing: {{unit: clip, rates: [{{usd: 0.1}}]}}
    modes:
      text-to-video:
        endpoint: generate
        params:
          prompt: {{type: string, canonical: prompt, required: true}}
          duration: {{type: {duration_type}, canonical: duration}}
"""

OBSERVER = """\
import json
import os

from runner.hookspecs import hookimpl


def _log(event, job, detail, run):
    with open(os.environ["OBSERVER_LOG"], "a", encoding="utf-8") as out:
        out.write(json.dumps({"event": event, "key": job.key, "detail": str(detail), "spent": str(job.spent_usd),
                              "duration": job.params.get("duration"), "sweep": run and run.sweep_id}) + "\\n")


@hookimpl
def job_submitted(job, task_id, run):
    _log("submitted", job, task_id, run)


@hookimpl
def job_finished(job, path, run):
    _log("finished", job, path, run)


@hookimpl
def job_failed(job, error):
    _log("failed", job, error, None)
"""

NOSIM = """\
from importlib.resources import files

from runner.config import ProviderConf
from runner.hookspecs import hookimpl
from runner.providers import Provider


class NoSim(Provider):
    name = "nosim"
    key_env = ("NOSIM_KEY",)
    default_conf = ProviderConf(base_url="https://api.nosim.example", key_env="NOSIM_KEY")


@hookimpl
def register_providers(register):
    register(NoSim)


@hookimpl
def register_manifests(register):
    register(files(__name__) / "models.yaml")


@hookimpl
def register_simulators(register):
    register(object)  # not a simulator: left out, with a warning
"""

#: entry-point name -> (distribution, module, {file: text})
PLUGINS = {
    "broken": ("runner-broken", "runner_broken", {"__init__.py": "import no_such_module_xyz\n"}),
    "badmanifest": ("runner-badmanifest", "runner_badmanifest", {
        "__init__.py": MANIFEST_HOOK,
        "models.yaml": MODEL.format(provider="badco", model="badco-v1", alias="badco", duration_type="integr"),
    }),
    "dup": ("runner-dup", "runner_dup", {
        "__init__.py": MANIFEST_HOOK,
        "models.yaml": MODEL.format(provider="dupco", model="dupco-v1", alias="kling", duration_type="integer"),
    }),
    "typo": ("runner-typo", "runner_typo", {
        "__init__.py": "from runner.hookspecs import hookimpl\n\n\n@hookimpl\ndef register_provider(register):\n    pass\n",
    }),
    "observer": ("runner-observer", "runner_observer", {"__init__.py": OBSERVER}),
    "nosim": ("runner-nosim", "runner_nosim", {
        "__init__.py": NOSIM,
        "models.yaml": MODEL.format(provider="nosim", model="nosim-v1", alias="nosim", duration_type="integer"),
    }),
    "crasher": ("runner-crasher", "runner_crasher", {
        "__init__.py": "from runner.hookspecs import hookimpl\n\n\n@hookimpl\ndef job_submitted(job, task_id):\n    raise RuntimeError('observer bug')\n",
    }),
}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """Every throwaway plugin, built from its pyproject and installed into one folder (not the venv)."""
    src = tmp_path_factory.mktemp("plugins")
    target = tmp_path_factory.mktemp("site")
    for name, (dist, module, files) in PLUGINS.items():
        (src / dist / module).mkdir(parents=True)
        (src / dist / "pyproject.toml").write_text(TEMPLATE.format(dist=dist, name=name, module=module))
        for file, text in files.items():
            (src / dist / module / file).write_text(text)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target),
         *(str(src / dist) for dist, _, _ in PLUGINS.values())],
        check=True, cwd=src, env={**os.environ, "PIP_NO_INPUT": "1"}, timeout=120,
    )
    return target


def env_for(site: Path | None, load: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_LOAD_PLUGINS", "RUNNER_TRACE_PLUGINS")}
    if site is not None:
        env["PYTHONPATH"] = str(site)
    if load is not None:
        env["RUNNER_LOAD_PLUGINS"] = load
    return {**env, **extra}


def models(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner.models", *args], env=env, capture_output=True, text=True, timeout=60)


def dry_run(tmp_path: Path, env: dict[str, str], model: str, prompt_set: str = "animate") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runner", f"model={model}", f"prompt_set={prompt_set}", "dry_run=true"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )


# -- broken plugins -----------------------------------------------------------------------------------


def test_a_plugin_that_fails_to_import_is_named_and_the_others_still_work(site, tmp_path):
    env = env_for(site, "runway,fal,broken")
    result = dry_run(tmp_path, env, "kling")
    assert result.returncode == 0, result.stderr
    assert ("warning: plugin 'broken' (runner-broken 0.3.0) left out: cannot import runner_broken: "
            "ModuleNotFoundError: No module named 'no_such_module_xyz'") in result.stderr
    assert "fal-kling-v2.1-standard" in result.stdout and "2 jobs" in result.stdout
    listing = models(env).stdout
    assert "  broken BROKEN: cannot import runner_broken" in listing
    assert f"  fal {RUNNER_VERSION}  hooks: register_manifests, register_providers, register_simulators" in listing


def test_a_malformed_manifest_names_plugin_file_entry_and_field(site, tmp_path):
    env = env_for(site, "runway,fal,badmanifest")
    result = dry_run(tmp_path, env, "gen4_turbo")
    assert result.returncode == 0, result.stderr
    warning = result.stderr
    assert "warning: plugin 'badmanifest' (runner-badmanifest 0.3.0) left out: manifest " in warning
    assert str(site / "runner_badmanifest" / "models.yaml") in warning
    assert "model 'badco-v1', field modes.text-to-video.params.duration.type: Input should be 'string'" in warning
    assert "gen4_turbo" in result.stdout
    left_out = dry_run(tmp_path, env, "badco-v1", "nature")
    assert left_out.returncode == 2 and "unknown model 'badco-v1'" in left_out.stderr
    assert "Plugins that failed to load: badmanifest." in left_out.stderr
    listing = models(env).stdout
    assert "badco-v1" not in listing.split("models:")[1] and "badmanifest 0.3.0" not in listing


def test_a_duplicate_alias_names_both_sources_and_never_displaces_a_builtin(site, tmp_path):
    env = env_for(site, "runway,fal,dup")
    result = dry_run(tmp_path, env, "kling")
    assert result.returncode == 0, result.stderr
    fal_manifest = Path(__file__).resolve().parent.parent / "manifests" / "fal.yaml"
    assert (f"warning: plugin 'dup' (runner-dup 0.3.0) left out: model name 'kling' is declared twice: "
            f"in {fal_manifest} (plugin fal) and in {site / 'runner_dup' / 'models.yaml'} (plugin dup)") in result.stderr
    assert "fal-kling-v2.1-standard" in result.stdout  # `kling` still means fal's model
    assert "dupco" not in result.stdout
    listing = models(env).stdout
    assert "fal-kling-v2.1-standard (fal; aliases kling," in listing and "dupco-v1" not in listing


def test_every_broken_plugin_is_reported_at_once_and_the_builtins_load(site, tmp_path):
    result = dry_run(tmp_path, env_for(site), "gen4_turbo")
    assert result.returncode == 0, result.stderr
    for name in ("broken", "badmanifest", "dup", "typo"):
        assert f"warning: plugin '{name}' (runner-{name} 0.3.0) left out:" in result.stderr
    assert ("left out: runner_typo does not fit the plugin contract (runner/hookspecs.py): it implements "
            "'register_provider', which is not a hook (did you mean 'register_providers'?)") in result.stderr
    listing = models(env_for(site)).stdout
    assert "  observer 0.3.0  hooks: job_failed, job_finished, job_submitted" in listing
    assert "gen4_turbo (runway" in listing and "fal-pika-v2.2 (fal" in listing


def test_simulate_true_stops_at_a_provider_with_no_simulator_and_says_how_to_go_on(site, tmp_path):
    env = env_for(site, "runway,fal,nosim")
    result = subprocess.run([sys.executable, "-m", "runner", "-m", "model=nosim-v1,pika", "prompt_set=nature", "simulate=true"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert ("warning: plugin 'nosim': its simulator is left out: register_simulators: <class 'object'> is not a "
            "subclass of runner.sim.ProviderSim") in result.stderr
    assert ("error: simulate=true: no simulator is installed for provider(s) nosim (models nosim-v1): their plugins "
            "register none. simulate only the others with simulate=[fal] and give it its key (export NOSIM_KEY=...), "
            "or leave those models out of the sweep") in result.stderr
    assert not (tmp_path / ".runner" / "ledger.db").exists()
    assert "  nosim (plugin nosim)  key NOSIM_KEY  simulator: none" in models(env).stdout


# -- the allowlist and the trace switch ----------------------------------------------------------------


def test_the_allowlist_leaves_out_a_plugins_models_and_says_why(tmp_path):
    env = env_for(None, "runway")
    result = dry_run(tmp_path, env, "kling")
    assert result.returncode == 2
    assert "error: unknown model 'kling'" in result.stderr
    assert f"Plugins not loaded because RUNNER_LOAD_PLUGINS='runway': {left_out('runway')}." in result.stderr
    assert dry_run(tmp_path, env, "gen4_turbo").returncode == 0
    listing = models(env).stdout
    assert "  runway " in listing and "  fal not loaded (not in RUNNER_LOAD_PLUGINS)" in listing and "fal-pika-v2.2" not in listing


def test_an_empty_allowlist_loads_no_plugin(tmp_path):
    env = env_for(None, "")
    result = dry_run(tmp_path, env, "gen4_turbo")
    assert result.returncode == 2
    assert f"Plugins not loaded because RUNNER_LOAD_PLUGINS='': {left_out()}." in result.stderr
    assert models(env).stdout.splitlines() == [
        "plugins:", *(f"  {name} not loaded (not in RUNNER_LOAD_PLUGINS)" for name in INSTALLED), "providers:", "models:",
    ]


def test_an_allowlist_naming_no_installed_plugin_warns(tmp_path):
    result = models(env_for(None, "runwya,fal"))
    assert ("warning: RUNNER_LOAD_PLUGINS names 'runwya', which no installed plugin provides; installed plugins: "
            f"{', '.join(INSTALLED)}") in result.stderr


def test_trace_prints_each_hook_call(tmp_path):
    result = dry_run(tmp_path, env_for(None, RUNNER_TRACE_PLUGINS="1"), "gen4_turbo")
    assert result.returncode == 0, result.stderr
    for plugin in ("runway", "fal"):
        assert f"plugin {plugin}: loading runner_plugins.{plugin} (video-runner {RUNNER_VERSION})" in result.stderr
        assert f"plugin hook register_manifests(register=<callback>) -> {plugin}" in result.stderr
        assert f"plugin hook register_providers(register=<callback>) -> {plugin}" in result.stderr
    assert "plugin hook" not in dry_run(tmp_path, env_for(None), "gen4_turbo").stderr


# -- the listing ----------------------------------------------------------------------------------------


def test_listing_shows_plugins_with_version_and_hooks_and_models_with_modes_and_prices():
    result = models(env_for(None))
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    for name, key in (("runway", "RUNWAYML_API_SECRET"), ("fal", "FAL_KEY")):
        assert f"  {name} {RUNNER_VERSION}  hooks: register_manifests, register_providers, register_simulators" in lines
        assert f"  {name} (plugin {name})  key {key}  simulator: yes (simulate=true)" in lines

    def modes_of(model: str) -> dict[str, list[str]]:
        start = next(i for i, line in enumerate(lines) if line.startswith(f"  {model} ("))
        rows = {}
        for line in lines[start + 1:]:
            if not line.startswith("    "):
                break
            mode, endpoint, *price = line.split()
            rows[mode] = [endpoint, " ".join(price)]
        return rows

    assert modes_of("gen4_turbo") == {"image-to-video": ["image_to_video", "$0.05/s"]}
    pika = modes_of("fal-pika-v2.2")
    assert set(pika) == {"text-to-video", "image-to-video"}
    assert pika["text-to-video"] == ["fal-ai/pika/v2.2/text-to-video", "$0.45/clip if duration=5 resolution=1080p, else $0.20/clip if duration=5"]
    assert any(line.startswith("  fal-pika-v2.2 (fal; aliases pika,") for line in lines)
    assert modes_of("gen4_aleph") == {"video-to-video": ["video_to_video", "$0.15/s"]}
    assert modes_of("fal-kling-v2.1-standard")["image-to-video"][1] == "price unknown"
    only_pika = models(env_for(None), "pika").stdout
    assert "fal-pika-v2.2" in only_pika and "gen4_turbo" not in only_pika


# -- lifecycle hooks -------------------------------------------------------------------------------------


def test_lifecycle_hooks_see_every_job_of_a_run(site, sim, tmp_path):
    sim.inject("task_failed", on="runway.create", failure_code="SAFETY.INPUT.IMAGE")  # one of the two jobs
    log = tmp_path / "events.jsonl"
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": "runway,observer", "RUNNER_TRACE_PLUGINS": "1",
           "OBSERVER_LOG": str(log), "RUNWAYML_API_SECRET": sim.keys["runway"]}
    result = run_cli(
        "model=gen4_turbo", "prompt_set=animate", "providers.runway.concurrency=1",
        f"providers.runway.base_url={sim.runway_url}", "providers.runway.min_poll_interval_s=0.05",
        cwd=tmp_path, env=env, timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr  # one job failed for good
    events = [json.loads(line) for line in log.read_text().splitlines()]
    by_job: dict[str, list[dict]] = {}
    for event in events:
        by_job.setdefault(event["key"], []).append(event)
    assert len(by_job) == 2
    outcomes = sorted([e["event"] for e in job_events] for job_events in by_job.values())
    assert outcomes == [["submitted", "failed"], ["submitted", "finished"]]
    finished = next(e for e in events if e["event"] == "finished")
    assert (tmp_path / finished["detail"]).is_file()
    failed = next(e for e in events if e["event"] == "failed")
    assert "SAFETY.INPUT.IMAGE" in failed["detail"]
    task_ids = {e["task_id"] for e in sim.ledger()}
    assert {e["detail"] for e in events if e["event"] == "submitted"} == task_ids
    assert {e["duration"] for e in events} == {5} and all(e["sweep"] for e in events if e["event"] != "failed")
    assert next(e for e in events if e["event"] == "finished")["spent"] == "0.25"
    for hook in ("job_submitted", "job_finished", "job_failed"):
        assert f"plugin hook {hook}(job=" in result.stderr and ") -> observer" in result.stderr


def test_an_event_missed_while_no_runner_ran_is_delivered_by_the_next_run(site, sim, tmp_path):
    # Jobs finish in a run without the observer; installed afterwards, it hears of none of them (no
    # replay of history). A job finished by a run that dies before its hooks ran is delivered by the
    # next run, at least once.
    log = tmp_path / "events.jsonl"
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": "runway,observer", "OBSERVER_LOG": str(log),
           "RUNWAYML_API_SECRET": sim.keys["runway"]}
    args = ["model=gen4_turbo", "prompt_set=animate", f"providers.runway.base_url={sim.runway_url}",
            "providers.runway.min_poll_interval_s=0.05"]
    assert run_cli(*args, cwd=tmp_path, env={**env, "RUNNER_LOAD_PLUGINS": "runway"}).returncode == 0
    assert run_cli(*args, cwd=tmp_path, env=env).returncode == 0  # the observer starts here: nothing new
    assert not log.exists()
    from runner import store as S
    from runner.writer import Writer

    writer = Writer(tmp_path / ".runner" / "ledger.db")  # a run that died between a download and its hook
    key = writer.sync(S.rows)[0]["key"]
    writer.sync(lambda conn: conn.execute(
        "insert into events (job_key, at, from_state, to_state, detail) values (?, 'now', 'generated', 'downloaded', 'x.mp4')", [key]))
    writer.close()
    assert run_cli(*args, cwd=tmp_path, env=env).returncode == 0
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e["key"], e["detail"]) for e in events] == [("finished", key, "x.mp4")]


def test_an_observer_that_raises_does_not_stop_the_run(site, sim, tmp_path):
    env = {"PYTHONPATH": str(site), "RUNNER_LOAD_PLUGINS": "runway,crasher", "RUNWAYML_API_SECRET": sim.keys["runway"]}
    result = run_cli(
        "model=gen4_turbo", "prompt_set=animate", f"providers.runway.base_url={sim.runway_url}",
        "providers.runway.min_poll_interval_s=0.05", cwd=tmp_path, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 jobs: 2 downloaded" in result.stdout
    assert "warning: plugin 'crasher', hook job_submitted: RuntimeError: observer bug" in result.stderr
