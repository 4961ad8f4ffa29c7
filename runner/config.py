"""The structured configs (dataclasses) behind the Hydra app.

Typed dataclasses make Hydra reject a typo (`durration=5`) or a wrong type (`duration=five`) before
anything runs. The model and provider options themselves come from the catalogue and conf/; this
module only defines their shape and registers the schema with Hydra's ConfigStore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConf:
    """A `model=` option: a catalogue entry plus default parameters for it."""

    name: str = MISSING  # catalogue name or alias
    params: dict[str, Any] = field(default_factory=dict)  # canonical parameters
    native: dict[str, Any] = field(default_factory=dict)  # native fields passed through


@dataclass
class PromptSetConf:
    """A prompt set is a file (runner/prompts.py reads it); the config only points at it."""

    file: Optional[str] = None  # YAML, JSON lines or CSV; `pkg://package/name` for a bundled one
    name: Optional[str] = None  # the sweep's default name; default: the file's `name:`, else its file name


@dataclass
class RetryConf:
    max_attempts: int = 5  # per HTTP call, for 429/5xx/network errors
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0


@dataclass
class ProviderConf:
    """One provider account: where it is, how to authenticate, how hard to push it."""

    base_url: str = MISSING
    key_env: str = MISSING  # the environment variable holding the API key
    concurrency: int = 2  # generations in flight at once, across every process sharing the ledger
    model_concurrency: dict[str, int] = field(default_factory=dict)  # tighter limits for some models
    limits_from_provider: bool = False  # ask the provider for the account's per-model limits (Runway)
    min_poll_interval_s: float = 5.0
    #: Follow tasks over the provider's status stream where its plugin offers one (fal), instead of polls.
    status_stream: bool = True
    request_timeout_s: float = 60.0
    retry: RetryConf = field(default_factory=RetryConf)
    #: The provider's other services, by name, for the plugin (fal: `platform`, `storage`).
    endpoints: dict[str, str] = field(default_factory=dict)


@dataclass
class SweepConf:
    """A grid kept in a config file: every combination of the listed values becomes a job."""

    duration: Optional[list[int]] = None
    aspect_ratio: Optional[list[str]] = None
    resolution: Optional[list[str]] = None
    seed: Optional[list[int]] = None
    negative_prompt: Optional[list[str]] = None
    audio: Optional[list[bool]] = None
    native: dict[str, list[Any]] = field(default_factory=dict)


@dataclass
class RunConfig:
    """`python -m runner ...`: what to generate, with which settings, and how to run it."""

    model: ModelConf = MISSING
    prompt_set: PromptSetConf = MISSING
    providers: dict[str, ProviderConf] = field(default_factory=dict)

    # Canonical parameters, for every job of the run (a prompt's own params win over these, unless
    # override_prompt_params=true).
    duration: Optional[int] = None
    aspect_ratio: Optional[str] = None
    resolution: Optional[str] = None
    seed: Optional[int] = None
    negative_prompt: Optional[str] = None
    audio: Optional[bool] = None
    mode: Optional[str] = None  # force a mode (text-to-video, image-to-video, ...) instead of inferring it
    native: dict[str, Any] = field(default_factory=dict)

    # The sweep kept in a file: a grid over canonical params, e.g. sweep.duration=[5,10].
    sweep: SweepConf = field(default_factory=SweepConf)
    replicates: int = 1
    #: A job whose values its model does not take (a sweep across unlike models): `error` ends the
    #: plan, `skip` leaves the job out and the plan lists it with the reason.
    on_invalid: str = "error"
    #: true: the config, command line and sweep grid win over a prompt's own params and native fields.
    override_prompt_params: bool = False

    # Runner settings.
    name: Optional[str] = None  # the sweep's name (outputs/<name>/...); defaults to the prompt set's
    state_dir: str = ".runner"
    db: str = "${state_dir}/ledger.db"
    outputs_dir: str = "outputs"
    dry_run: bool = False
    show_jobs: str = "20"  # the plan lists every job up to this many, else a summary; `all`: every job
    budget_usd: Optional[float] = None
    #: Your price per model (name or alias) where the price list has none, or to replace it:
    #: a number is per clip, `0.08/s` per second of output (prices.kling=0.28).
    prices: dict[str, Any] = field(default_factory=dict)
    allow_unpriced: bool = False  # with budget_usd, run jobs of unknown price counted at $0
    #: Run against the provider simulator on loopback (no keys, no cost): true for every provider of
    #: the sweep, or a provider's name (simulate=fal) or a list (simulate=[fal,runway]) for those only.
    simulate: Any = False
    sim_config: Optional[str] = None  # a simulator config file (latencies, limits, faults) for simulate=true
    max_attempts: int = 3  # generations per job before a retryable failure becomes final
    retry_failed: bool = False  # generate again the jobs whose generation failed in an earlier run
    regenerate_lost: bool = False  # generate again jobs paid for whose output the provider lost (a second charge)
    max_outage_s: float = 600.0  # stop sending to a provider unreachable this long (jobs stay planned)
    job_timeout_s: float = 3600.0
    cancel_on_interrupt: bool = False
    quiet: bool = False


#: Canonical parameters that are also top-level settings (and so sweepable from the command line).
RUN_LEVEL_PARAMS = ("duration", "aspect_ratio", "resolution", "seed", "negative_prompt", "audio")


def register_schemas() -> None:
    """Register the schema; conf/config.yaml lists it first, so every option merges into typed nodes."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
