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
def register_simulators(register):
    """Bring a simulator of a provider's API: `register(SimClass)`, a runner.sim.ProviderSim subclass.
    The provider simulator hosts it under `/<provider>` (simulate=true, `python -m runner.sim`, the
    conformance kit in runner.testing). Called when a simulator is first wanted, not at load."""


@hookspec
def job_submitted(job, task_id, run):
    """A job was accepted by its provider; `task_id` is the provider's id for it."""


@hookspec
def job_generated(job, run):
    """The provider generated a job (it is paid for); its output is still to be collected."""


@hookspec
def job_finished(job, path, run):
    """A job's output has been downloaded, verified and stored at `path` (a Path)."""


@hookspec
def job_failed(job, error, run):
    """A job failed for good, or its output was lost (`error` says why); it is not retried by itself."""


# Lifecycle hooks take `job`, a read-only runner.jobview.JobView (parsed params, Paths, money as
# Decimal), and `run`, a runner.jobview.RunContext (sweeps, config, outputs folder, ledger). They are
# delivered from the ledger's events, at least once, in order, including events that happened while
# no runner was running: an implementation should be idempotent (docs/plugins.md, "Lifecycle hooks").
