"""The plugin contract: the few hooks a provider plugin implements.

Built-in providers (Runway, fal.ai) implement exactly these, through the same entry-point group a
third-party plugin uses. Hooks take a `register` callback rather than returning lists, so one plugin
can contribute many items and the runner keeps control of names and duplicates (as simonw/llm does).
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("video_runner")
hookimpl = HookimplMarker("video_runner")


@hookspec
def register_providers(register):
    """Register provider classes: `register(ProviderClass)`; see runner.providers.Provider."""


@hookspec
def register_manifests(register):
    """Contribute model manifests: `register(path)`. Their models and aliases become `model=` choices."""


@hookspec
def job_submitted(job, task_id):
    """A job was accepted by its provider; `task_id` is the provider's id for it."""


@hookspec
def job_finished(job, path):
    """A job's output has been downloaded, verified and stored at `path`."""


@hookspec
def job_failed(job, error):
    """A job failed for good (`error` is the message); it will not be retried in this run."""
