"""The structured configs (dataclasses) behind the Hydra app: every setting's type, default, range
and one-line description.

Typed dataclasses make Hydra reject a typo (`durration=5`) or a wrong type (`duration=five`) before
anything runs; each field's `metadata` holds what `--help` prints for it and the range
`runner/validate.py` checks it against. The model and provider options themselves come from the
catalogue and conf/; this module only defines their shape and registers the schema with Hydra.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from runner.manifest import MAX_SEED  # a model's manifest may allow fewer

#: A plan of more jobs than this is refused unless `max_jobs=` is raised: a typo in `replicates=`
#: or a grid must not become a week of generations (or a plan that fills the memory).
MAX_JOBS = 20_000
#: `max_jobs` itself stops here: a plan is held in memory whole (about a kilobyte a job).
MAX_JOBS_CEILING = 1_000_000


@dataclass(frozen=True)
class Range:
    """The numbers a setting takes: from `low` (or above `above`) up to `high`, always finite."""

    low: float | None = None
    above: float | None = None
    high: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is out of range, or None."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None  # the type is Hydra's to check
        if isinstance(value, float) and not math.isfinite(value):
            return self.text()
        if (self.low is not None and value < self.low) or (self.above is not None and value <= self.above):
            return self.text()
        if self.high is not None and value > self.high:
            return self.text()
        return None

    def text(self) -> str:
        """`1 or more`, `more than 0`, `0..4294967295`: what a message and `--help` say."""
        def number(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else str(x)

        if self.low is not None and self.high is not None:
            return f"a number from {number(self.low)} to {number(self.high)}"
        if self.low is not None:
            return f"a number of {number(self.low)} or more"
        if self.above is not None:
            bound = f"more than {number(self.above)}"
            return f"a number {bound} and at most {number(self.high)}" if self.high is not None else f"a number {bound}"
        return "a finite number"


def raise_max_jobs(size: int) -> str:
    """How to plan `size` jobs on purpose, for a message: raise max_jobs, where it can go that far."""
    if size > MAX_JOBS_CEILING:
        return f" (one command plans at most {MAX_JOBS_CEILING:,} jobs: split the sweep)"
    return f", or add max_jobs={size} (or more) to plan that many on purpose"


def setting(default: Any = MISSING, doc: str = "", *, range: Range | None = None, factory: Any = None) -> Any:
    """A dataclass field with its `--help` line and its range."""
    metadata = {"doc": doc, "range": range}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


AT_LEAST_ONE = Range(low=1)
POSITIVE = Range(above=0)
NOT_NEGATIVE = Range(low=0)


@dataclass
class ModelConf:
    """A `model=` option: a catalogue entry plus default parameters for it."""

    name: str = setting(MISSING, "the catalogue name or alias of the model (model=<name> chooses it)")
    params: dict[str, Any] = setting(factory=dict, doc="canonical parameters this model option sets (duration, ...)")
    native: dict[str, Any] = setting(factory=dict, doc="native fields this model option passes through as they are")


@dataclass
class PromptSetConf:
    """A prompt set is a file (runner/prompts.py reads it); the config only points at it."""

    file: Optional[str] = setting(None, "your prompt file (YAML, JSON lines or CSV); prompt_set=<name> picks a bundled one")
    name: Optional[str] = setting(None, "the sweep's default name (default: the file's `name:`, else its file name)")


@dataclass
class RetryConf:
    max_attempts: int = setting(5, "tries per HTTP call on 429, 5xx and network errors", range=Range(low=1, high=100))
    backoff_base_s: float = setting(1.0, "first wait before a retry, in seconds (doubling, with jitter)", range=POSITIVE)
    backoff_max_s: float = setting(60.0, "longest wait between retries, in seconds (at least backoff_base_s)", range=POSITIVE)


@dataclass
class ProviderConf:
    """One provider account: where it is, how to authenticate, how hard to push it."""

    base_url: str = setting(MISSING, "the provider's API address (http:// or https://)")
    key_env: str = setting(MISSING, "the environment variable holding the API key (never the key itself)")
    concurrency: int = setting(2, "generations in flight at once, across every process sharing the ledger",
                               range=Range(low=1, high=10000))
    model_concurrency: dict[str, int] = setting(
        factory=dict, doc="tighter limits for some models, by any of their names (model_concurrency.kling=1); each 1 or more")
    limits_from_provider: bool = setting(False, "ask the provider for the account's per-model limits (Runway)")
    min_poll_interval_s: float = setting(5.0, "shortest time between two status calls for one task, in seconds", range=POSITIVE)
    status_stream: bool = setting(True, "follow tasks over the provider's status stream where its plugin offers one (fal), not polls")
    request_timeout_s: float = setting(60.0, "longest wait for one HTTP answer, in seconds", range=POSITIVE)
    retry: RetryConf = setting(factory=RetryConf, doc="retries of one HTTP call")
    endpoints: dict[str, str] = setting(
        factory=dict, doc="the provider's other services by name, for its plugin (fal: platform, storage)")


@dataclass
class SweepConf:
    """A grid kept in a config file: every combination of the listed values becomes a job."""

    duration: Optional[list[int]] = setting(None, "durations to sweep, e.g. [5,10]")
    aspect_ratio: Optional[list[str]] = setting(None, "aspect ratios to sweep, e.g. [16:9,9:16]")
    resolution: Optional[list[str]] = setting(None, "resolutions to sweep, e.g. [720p,1080p]")
    seed: Optional[list[int]] = setting(None, "seeds to sweep, e.g. [1,2,3]", range=Range(low=0, high=MAX_SEED))
    negative_prompt: Optional[list[str]] = setting(None, "negative prompts to sweep")
    audio: Optional[list[bool]] = setting(None, "audio on and off: [true,false]")
    native: dict[str, list[Any]] = setting(factory=dict, doc="native fields to sweep: sweep.native.<field>=[a,b]")


@dataclass
class RunConfig:
    """`python -m runner ...`: what to generate, with which settings, and how to run it."""

    model: ModelConf = setting(MISSING, "the model (model=kling, model=gen4_turbo, ...)")
    prompt_set: PromptSetConf = setting(MISSING, "the prompts (prompt_set=ads, or prompt_set.file=mine.jsonl)")
    providers: dict[str, ProviderConf] = setting(factory=dict, doc="provider accounts and limits, by provider name")

    # Canonical parameters, for every job of the run (a prompt's own params win over these, unless
    # override_prompt_params=true).
    duration: Optional[int] = setting(None, "clip length in seconds, as the model allows (python -m runner.models)")
    aspect_ratio: Optional[str] = setting(None, "16:9, 9:16, 1:1, ... as the model allows")
    resolution: Optional[str] = setting(None, "720p, 1080p, ... as the model allows")
    seed: Optional[int] = setting(None, "the same seed and request give the same clip; within the model's range",
                                  range=Range(low=0, high=MAX_SEED))
    negative_prompt: Optional[str] = setting(None, "what the clip should not show, for models that take it")
    audio: Optional[bool] = setting(None, "generate sound, for models that can")
    mode: Optional[str] = setting(None, "force a mode (text-to-video, image-to-video, ...) instead of inferring it")
    native: dict[str, Any] = setting(factory=dict, doc="a model's native fields, passed as they are (native.<field>=...)")

    sweep: SweepConf = setting(factory=SweepConf, doc="a grid kept in the config: sweep.<param>=[a,b]")
    replicates: int = setting(1, "different generations of each point of the sweep (at most max_jobs)", range=AT_LEAST_ONE)
    on_invalid: str = setting("error", "a job whose values its model does not take: error ends the plan, skip leaves it out and lists it")
    override_prompt_params: bool = setting(False, "the config, command line and sweep grid win over a prompt's own params")
    max_jobs: int = setting(MAX_JOBS, "the largest plan accepted, in jobs; raise it to run a bigger one on purpose",
                            range=Range(low=1, high=MAX_JOBS_CEILING))

    name: Optional[str] = setting(None, "the sweep's name and outputs folder (default: the prompt set's)")
    state_dir: str = setting(".runner", "where the ledger and Hydra's logs are kept")
    db: str = setting("${state_dir}/ledger.db", "the ledger file")
    outputs_dir: str = setting("outputs", "where clips, manifest.jsonl and the gallery are written")
    dry_run: bool = setting(False, "print the plan and its cost, run nothing")
    show_jobs: str = setting("20", "list every job of a plan up to this many, else a summary; `all`: every job")
    budget_usd: Optional[float] = setting(None, "the most this command may spend, in USD, every process included",
                                          range=NOT_NEGATIVE)
    confirm_over_usd: float = setting(50.0, "a plan estimated over this (USD) asks first, unless yes=true or budget_usd is set",
                                      range=NOT_NEGATIVE)
    yes: bool = setting(False, "run a plan over confirm_over_usd without asking")
    prices: dict[str, Any] = setting(
        factory=dict, doc="your price per model where the list has none: prices.kling=0.28 per clip, 0.08/s per second")
    allow_unpriced: bool = setting(False, "with budget_usd, run jobs of unknown price counted at $0")
    simulate: Any = setting(False, "run against the local provider simulator: true, a provider's name, or a list of names")
    sim_config: Optional[str] = setting(None, "a simulator config file (latencies, limits, faults) for simulate=")
    max_attempts: int = setting(3, "generations per job before a retryable failure becomes final", range=Range(low=1, high=100))
    retry_failed: bool = setting(False, "generate again the jobs whose generation failed in an earlier run")
    regenerate_lost: bool = setting(False, "generate again jobs paid for whose output the provider lost (a second charge)")
    max_outage_s: float = setting(600.0, "stop sending to a provider unreachable this long, in seconds (jobs stay planned)",
                                  range=POSITIVE)
    job_timeout_s: float = setting(3600.0, "a job running longer than this (seconds) is left for a later run", range=POSITIVE)
    cancel_on_interrupt: bool = setting(False, "on Ctrl-C, cancel at the provider what is in flight")
    quiet: bool = setting(False, "no progress display")


#: Canonical parameters that are also top-level settings (and so sweepable from the command line).
RUN_LEVEL_PARAMS = ("duration", "aspect_ratio", "resolution", "seed", "negative_prompt", "audio")


def register_schemas() -> None:
    """Register the schema; conf/config.yaml lists it first, so every option merges into typed nodes."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)
