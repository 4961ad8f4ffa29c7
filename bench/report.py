"""bench/results.json as docs/benchmarks.md: the machine, every figure, and each goal met or missed.

Where a goal is missed the note says why from the figures themselves (the profile's top entries,
the counts behind a ratio) and what would close it; nothing here is written by hand after a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.env import DOC, SCALE
from bench import makespan, startup
from bench.scale import DURATIONS, IN_FLIGHT, JOBS, PROMPTS, REPLICATES, WAIT_S


@dataclass(frozen=True)
class Goal:
    name: str
    target: str
    measured: Callable[[dict], Any]  # the figure, or None when it was not measured
    met: Callable[[Any], bool]
    why: Callable[[dict], str]  # when missed: why, and what would close it


def _get(results: dict, *path: str) -> Any:
    node: Any = results.get("benchmarks", {})
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _clients(results: dict, bench: str) -> dict[str, dict]:
    return {k: v for k, v in (_get(results, bench, "clients") or {}).items() if "error" not in v}


def _worst(results: dict, figure: str) -> float | None:
    values = [c[figure] for name, c in _clients(results, "makespan").items() if name.startswith("runner")]
    return max(values) if values else None


def _ceiling(r: dict) -> str:
    """What the machine allows: the runner and the simulator share its cores, so their CPU per job
    together bounds the jobs per second whatever either's code does."""
    runner, cores = _get(r, "throughput", "clients", "runner"), (r.get("machine") or {}).get("cores")
    n = _get(r, "throughput", "n")
    if not isinstance(runner, dict) or not runner.get("simulator_cpu_s") or not cores or not n:
        return ""
    simulator = runner["simulator_cpu_s"] * 1000 / n
    both = runner["cpu_ms_per_job"] + simulator
    return (f"The runner and the simulator share this machine's {cores} cores: per job they used {runner['cpu_ms_per_job']} + "
            f"{simulator:.2f} ms of CPU, so no run here could pass {cores * 1000 / both:.0f} jobs/s, whatever the runner's code; "
            f"300 jobs/s needs the two together under {cores * 1000 / 300:.2f} ms per job (and every core free).")


def _probe_share(r: dict) -> str:
    probe = _get(r, "throughput", "probe_cpu_ms_per_clip")
    if probe is None:
        return ""
    return (f"reading each clip (its facts, and its first picture decoded for the gallery's poster) costs the probe "
            f"process {probe} ms; ")


def _top(profile: dict | None, kind: str = "inclusive_pct", count: int = 6, prefix: tuple[str, ...] = ()) -> str:
    if not profile or not profile.get(kind):
        return "no profile was recorded"
    rows = [row for row in profile[kind] if not prefix or row[0].startswith(prefix)][:count]
    return "; ".join(f"`{name}` {pct}%" for name, pct in rows)


def _vs_peers(results: dict) -> float | None:
    """The runner's makespan from start over the better SDK loop's, per provider; the worse of the two."""
    clients = _clients(results, "makespan")
    pairs = [("runner (runway)", "runwayml SDK loop"), ("runner (fal)", "fal-client loop")]
    ratios = [clients[a]["makespan_from_start_s"] / clients[b]["makespan_from_start_s"] for a, b in pairs
              if a in clients and b in clients]
    return round(max(ratios), 3) if ratios else None


def _peers_why(results: dict) -> str:
    clients = _clients(results, "makespan")
    pairs = [(a, b) for a, b in [("runner (runway)", "runwayml SDK loop"), ("runner (fal)", "fal-client loop")]
             if a in clients and b in clients]
    if not pairs:
        return "no comparison was measured"
    a, b = max(pairs, key=lambda p: clients[p[0]]["makespan_from_start_s"] / clients[p[1]]["makespan_from_start_s"])
    mine, theirs = clients[a], clients[b]
    return (f"the worse pair is {a} against the {b}: from their first submissions the runner takes "
            f"{mine['ratio_from_first_submission']}x the exact bound and the {b} {theirs['ratio_from_first_submission']}x; "
            f"from process start the {b} wins by its start-up alone: it submits after {theirs['first_submission_s']} s, "
            f"the runner after {mine['first_submission_s']} s (Hydra's composition, the plugins and the catalogue, the "
            f"plan checked and shown, the ledger opened: see the 3-job dry run).")


def _polls(results: dict, runner: str, peer: str) -> float | None:
    clients = _clients(results, "makespan")
    if runner not in clients or peer not in clients:
        return None
    return round(clients[runner]["status_calls_per_job"] / clients[peer]["status_calls_per_job"], 3)


def _poll_why(runner: str) -> Callable[[dict], str]:
    def why(results: dict) -> str:
        polls = _clients(results, "makespan").get(runner, {}).get("status_calls_per_job")
        if "runway" in runner:
            how = ("Runway reports progress: after the first poll (0.8x the model's measured typical latency), the next "
                   "aims at the end the progress points to (from two readings, its rate)")
        else:
            how = ("fal offers a status stream: one request per task follows it to its end (polling, with waits growing "
                   "from 0.8x the model's measured typical latency, is the fallback when a stream breaks)")
        return (f"the runner polled {polls} times per job over generations of 3-5 s. {how} (runner/polling.py). The first "
                f"jobs of a fresh ledger have no latency measured yet and start from the {5 / SCALE:g} s floor.")
    return why


GOALS = [
    Goal(f"makespan from start, N={makespan.N} C={makespan.C}", "<= 1.05x the exact bound", lambda r: _worst(r, "ratio_from_start"),
         lambda v: v <= 1.05,
         lambda r: f"from its first submission the runner is at {_get(r, 'makespan', 'clients', 'runner (runway)', 'ratio_from_first_submission')}x "
                   f"the bound on Runway (whose progress points each poll at the task's end) and "
                   f"{_get(r, 'makespan', 'clients', 'runner (fal)', 'ratio_from_first_submission')}x on fal, whose growing "
                   f"waits see each end later: the makespan pays there for the fewer status calls (see status calls vs "
                   f"fal-client). The rest is start-up (first submission after {_worst(r, 'first_submission_s')} s, see start-up)."),
    Goal("makespan vs the SDK loops", "no worse than either", lambda r: _vs_peers(r), lambda v: v <= 1.0,
         lambda r: _peers_why(r)),
    Goal("status calls vs runwayml", "<= 1/3 of its calls", lambda r: _polls(r, "runner (runway)", "runwayml SDK loop"),
         lambda v: v <= 1 / 3, _poll_why("runner (runway)")),
    Goal("status calls vs fal-client", "<= 1/10 of its calls", lambda r: _polls(r, "runner (fal)", "fal-client loop"),
         lambda v: v <= 1 / 10, _poll_why("runner (fal)")),
    Goal(f"first submission, {makespan.N} jobs", "<= 1 s after start", lambda r: _worst(r, "first_submission_s"), lambda v: v <= 1.0,
         lambda r: f"this is a command's first run: Hydra composes its config (0.2-0.3 s of CPU; a rerun of the same command "
                   f"reads it back, see the 3-job dry run at {_get(r, 'startup', 'dry_run_3_jobs', 'cpu_s')} s), then the run "
                   f"loads the engine, the ledger, asyncio and the HTTP stack (runner.drive), creates the ledger and records the plan."),
    Goal(f"first submission, {JOBS:,} jobs", "<= 5 s after start", lambda r: _get(r, "scale", "first_run", "first_submission_s"),
         lambda v: v <= 5.0,
         lambda r: f"planning alone takes {_get(r, 'scale', 'dry_run', 'cpu_s')} s of CPU, and every job is planned before "
                   f"anything is spent (the total is checked against budget_usd and confirm_over_usd first); the plan is "
                   f"kept for the next run of the same command, the first 2,000 jobs are recorded and the engine starts, "
                   f"the rest being recorded while it runs. What is left is start-up (see the 3-job dry run) and "
                   f"planning itself (a rerun reads the plan back: see the rerun with 1% left). "
                   f"{_top(_get(r, 'scale', 'first_run', 'profile_to_first_submission'), prefix=('runner/', 'plugins/'))}."),
    Goal("3-job dry run", "<= 0.5 s of CPU", lambda r: _get(r, "startup", "dry_run_3_jobs", "cpu_s"), lambda v: v <= 0.5,
         lambda r: "most of it is importing Hydra and omegaconf, Hydra's run (its run folder, saved configs and logging) "
                   "and the settings checked; the composition and the plan are read back (the same command ran before), "
                   "and neither pydantic, asyncio, httpx, the engine nor the ledger is loaded."),
    Goal("zero-latency throughput", ">= 300 jobs/s", lambda r: _get(r, "throughput", "clients", "runner", "jobs_per_s"),
         lambda v: v >= 300,
         lambda r: f"CPU-bound in the runner's process: {_top(_get(r, 'throughput', 'profile'), 'by_package_pct')} "
                   f"(share of samples by package). Heaviest: {_top(_get(r, 'throughput', 'profile'), 'self_pct', 5)}. "
                   f"Each job is at least three requests through httpx and aiohttp (submit, poll, download), a ledger commit per "
                   f"step, a verified file and a probe; the SDK loop, with none of those but the requests, spends "
                   f"{_get(r, 'throughput', 'clients', 'runwayml SDK loop', 'cpu_ms_per_job')} ms per job. {_ceiling(r)}"),
    Goal("CPU per job at zero latency", "<= 3 ms", lambda r: _get(r, "throughput", "clients", "runner", "cpu_ms_per_job"),
         lambda v: v <= 3.0,
         lambda r: f"{_probe_share(r)}the runner's process, inclusive: "
                   f"{_top(_get(r, 'throughput', 'profile'), prefix=('runner/', 'plugins/', 'aiohttp/', 'httpx/'))}."),
    Goal("event-loop lag p99, 2,000 in flight", "<= 100 ms", lambda r: _get(r, "scale", "first_run", "event_loop_lag", "p99_ms"),
         lambda v: v <= 100,
         lambda r: f"measured with up to {_get(r, 'scale', 'first_run', 'max_in_flight')} in flight in the {JOBS:,}-job run, "
                   f"whose 2,000 submissions start within seconds, on 2 cores shared with the simulator: request starts, "
                   f"claimed jobs and the ledger's answers go through the loop eight per pass (runner/pacing.py) and the "
                   f"plan is frozen out of the collector's full passes; what is left is the loop waiting for the "
                   f"interpreter while the ledger's thread and the simulator have the cores. Heaviest while running: "
                   f"{_top(_get(r, 'scale', 'first_run', 'profile_running'), 'self_pct', 5)}."),
    Goal(f"{JOBS:,} jobs planned and recorded", "<= 15 s", lambda r: _get(r, "scale", "first_run", "first_submission_s"),
         lambda v: v <= 15, lambda r: "counted to the first submission, which follows the recording; see the first-run profile."),
    Goal(f"{JOBS:,} jobs: peak RSS", "<= 300 MiB", lambda r: _get(r, "scale", "first_run", "max_rss_mib"), lambda v: v <= 300,
         lambda r: f"the plan alone peaks at {_get(r, 'scale', 'dry_run', 'max_rss_mib')} MiB (the planner's jobs are kept "
                   f"for the summary); the engine keeps a queued job as its key and estimate, reads a job's row when it "
                   f"claims it and forgets it once finished; the summary reads a few columns per job."),
    Goal(f"{JOBS:,} jobs: no-op rerun", "<= 3 s", lambda r: _get(r, "scale", "noop_rerun", "wall_s"), lambda v: v <= 3,
         lambda r: f"the rerun reads its plan back (runner/plancache.py) instead of planning again "
                   f"({_get(r, 'scale', 'dry_run', 'cpu_s')} s of CPU for the dry run, which plans), finds the sweep "
                   f"recorded, counts it and sums it up over the covering index of migration m009, lists each "
                   f"outputs folder once and leaves the unchanged gallery alone. What is left is start-up (see the "
                   f"3-job dry run), the plan shown, and four passes over the sweep's 100,000 jobs (the engine's "
                   f"counts and its jobs left to do, the summary's sums and its files): one pass each at the start "
                   f"and the end would close it. {_top(_get(r, 'scale', 'noop_rerun', 'profile'), count=5)}."),
    Goal("mixed sweep vs the basic launcher", ">= 1.8x faster", lambda r: _get(r, "sweep", "speedup"), lambda v: v >= 1.8,
         lambda r: "each sweep point is small; the basic launcher's cost is a drain of the slots at the end of every point "
                   "and a process start per point."),
]


def evaluate(results: dict) -> list[dict[str, Any]]:
    rows = []
    for goal in GOALS:
        value = goal.measured(results)
        met = None if value is None else bool(goal.met(value))
        rows.append({"goal": goal.name, "target": goal.target, "measured": value, "met": met,
                     "why": goal.why(results) if met is False else ""})
    return rows


def table(results: dict) -> str:
    """The goals as a console table."""
    lines = []
    for row in evaluate(results):
        state = {True: "met", False: "MISSED", None: "not measured"}[row["met"]]
        lines.append(f"{row['goal']:<40} {row['target']:<26} {str(row['measured']):<10} {state}")
    return "\n".join(lines)


def _md(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in cells)]


def _profile_section(title: str, profile: dict | None) -> list[str]:
    if not profile or not profile.get("samples"):
        return []
    lines = [f"{title} ({profile['samples']} samples of the thread holding the GIL):", ""]
    lines += _md(["function (inclusive)", "% of samples"], profile["inclusive_pct"][:12])
    lines += [""] + _md(["function (self)", "% of samples"], profile["self_pct"][:12])
    lines += [""] + _md(["package (self)", "% of samples"], profile["by_package_pct"][:10])
    return lines + [""]


def render(results: dict) -> str:
    m = results["machine"]
    out = ["# Benchmarks", "",
           "Generated by `make bench` (the code is in `bench/`, the figures in `bench/results.json`); run it again "
           "rather than editing this page. Speed is never asserted in the test suite: it is measured here.", "",
           "Every client runs as its own process against the bundled simulator (`python -m runner.sim`, its own "
           "process too), started fresh for each measurement with the same seed, so every client meets the same "
           f"latency draws in submission order. One time scale for everyone: the simulator runs {SCALE:g}x faster than "
           "the providers, and every client's clock constant is divided by the same factor (Runway's 5 s poll floor "
           f"is {5 / SCALE:g} s for the runner; the runwayml SDK's 6 +/- 1.5 s poll sleep is {6 / SCALE:g} +/- "
           f"{1.5 / SCALE:g} s). fal-client polls every 0.1 s, its default, unscaled: scaled it would poll every "
           f"{0.1 / SCALE * 1000:g} ms. The SDKs run from their own virtualenv (`bench/requirements.txt`), never the "
           "runner's; the runner from one with nothing but itself (`.venv-run`, installed as a user installs it, "
           "without the test tools and what they bring). CPU time and peak RSS are the client process's own, from the kernel when it is reaped.", "",
           "The exact bound is the simulator's own time for each task (accepted to done), list-scheduled in submission "
           "order on C slots: no client can finish sooner; everything above it is the client's (start-up, network, "
           "polling granularity, downloads).", "",
           "The machine these figures come from is shared: other work ran on its cores throughout (the load average "
           "below), so wall times and CPU times alike are inflated and vary from one run to the next, and the "
           "figures compare clients measured in the same conditions more than they measure any one of them.", "",
           "## Machine", ""]
    out += _md(["", ""], [["platform", m["platform"]], ["CPU", f"{m['cpu']} ({m['cores']} cores)"],
                          ["load average at start", m["load_average_at_start"]], ["Python", m["python"]],
                          ["runner and its libraries", ", ".join(f"{k} {v}" for k, v in m["runner"].items())],
                          ["official SDKs", ", ".join(f"{k} {v}" for k, v in m["peers"].items())],
                          ["measured at", results.get("measured_at")], ["whole benchmark", f"{results.get('bench_s')} s"]])
    out += ["", "## Goals", ""]
    goals = evaluate(results)
    out += _md(["goal", "target", "measured", ""],
               [[g["goal"], g["target"], g["measured"], {True: "met", False: "**missed**", None: "not measured"}[g["met"]]]
                for g in goals])
    missed = [g for g in goals if g["met"] is False]
    if missed:
        out += ["", "Why each missed goal is missed, from the figures below:", ""]
        out += [f"- **{g['goal']}**: {g['why']}" for g in missed]
    out += _makespan(results) + _throughput(results) + _sweep(results) + _crash(results) + _scale(results) + _startup(results)
    errors = [(name, b["error"]) for name, b in results.get("benchmarks", {}).items() if isinstance(b, dict) and "error" in b]
    if errors:
        out += ["## Errors", ""] + [f"- {name}: {error}" for name, error in errors] + [""]
    return "\n".join(out).rstrip() + "\n"


def _makespan(r: dict) -> list[str]:
    b = _get(r, "makespan") or {}
    rows = [[name, c.get("first_submission_s"), c.get("makespan_from_start_s"), c.get("makespan_from_first_submission_s"),
             c.get("exact_bound_s"), c.get("ratio_from_start"), c.get("ratio_from_first_submission"),
             c.get("status_calls_per_job"), c.get("cpu_s"), c.get("billed_usd"), c.get("error")]
            for name, c in (b.get("clients") or {}).items()]
    return ["", f"## Makespan against the exact bound (N={b.get('n')}, C={b.get('c')})", "",
            "Runway: gen4.5 text-to-video, 5 s; fal: Pika 2.2 text-to-video, 5 s; generations of 3-5 s.", ""] + _md(
        ["client", "first submission s", "makespan from start s", "from first submission s", "exact bound s",
         "ratio (start)", "ratio (first submission)", "status calls per job", "CPU s", "billed $", "error"], rows)


def _throughput(r: dict) -> list[str]:
    b = _get(r, "throughput") or {}
    rows = [[name, c.get("jobs_per_s"), c.get("jobs_per_s_from_start"), c.get("cpu_ms_per_job"), c.get("cpu_s"),
             c.get("max_rss_mib"), c.get("simulator_cpu_s"), c.get("error")] for name, c in (b.get("clients") or {}).items()]
    return ["", f"## Zero-latency throughput (N={b.get('n')}, C={b.get('c')})", "",
            "Generations end the moment they are submitted and every poll delay is zero: what is left is each client's "
            "own cost per job. Jobs per second from the first submission to the last file (and from process start); "
            "CPU per job counts the whole process, start included.", ""] + _md(
        ["client", "jobs/s", "jobs/s from start", "CPU ms per job", "CPU s", "peak RSS MiB", "simulator CPU s", "error"],
        rows) + [""] + _profile_section("Profile of the runner's run", b.get("profile"))


def _sweep(r: dict) -> list[str]:
    b = _get(r, "sweep") or {}
    rows = [[name, c.get("wall_s"), c.get("cpu_s"), c.get("submissions"), c.get("billed_usd"), c.get("error")]
            for name, c in (b.get("launchers") or {}).items()]
    return [f"## Mixed sweep: {', '.join(b.get('models') or [])} ({b.get('jobs')} jobs, C={b.get('c_per_provider')} per provider)", "",
            "`python -m runner -m model=...` with the runner's launcher (every point in one engine) and with "
            "`hydra/launcher=basic` (one point after another).", ""] + _md(
        ["launcher", "wall s", "CPU s", "submissions", "billed $", "error"], rows) + ["", f"Speed-up: {b.get('speedup')}x", ""]


def _crash(r: dict) -> list[str]:
    b = _get(r, "crash") or {}
    rows = [[name, c.get("killed_after_s"), c.get("finish_s"), c.get("total_s"), c.get("submissions"), c.get("billed_usd"),
             c.get("ideal_usd"), c.get("paid_twice_usd"), c.get("error")] for name, c in (b.get("clients") or {}).items()]
    return [f"## The cost of a crash (N={b.get('n')}, C={b.get('c')}, SIGKILL once half the clips are on disk)", "",
            "Then the same command again. The runner's rerun skips what is done and collects what was submitted; the "
            "SDK script has no record of what it sent and starts again.", ""] + _md(
        ["client", "killed after s", "finishing run s", "start to last file s", "submissions", "billed $", "once each $",
         "paid twice $", "error"], rows) + [""]


def _scale(r: dict) -> list[str]:
    b = _get(r, "scale") or {}
    first, noop, one = b.get("first_run") or {}, b.get("noop_rerun") or {}, b.get("one_percent_rerun") or {}
    lag = first.get("event_loop_lag") or {}
    dry = b.get("dry_run") or {}
    rows = [["plan only (dry run): wall / CPU / peak RSS", f"{dry.get('wall_s')} s / {dry.get('cpu_s')} s / {dry.get('max_rss_mib')} MiB"],
            ["first run: first submission after start", f"{first.get('first_submission_s')} s"],
            ["first run: peak RSS", f"{first.get('max_rss_mib')} MiB"],
            ["first run: event-loop lag p50 / p99 / max", f"{lag.get('p50_ms')} / {lag.get('p99_ms')} / {lag.get('max_ms')} ms "
                                                          f"({lag.get('samples')} samples)"],
            ["first run: most in flight at once", first.get("max_in_flight")],
            ["first run: Ctrl-C to exit", f"{first.get('ctrl_c_to_exit_s')} s"],
            ["first run: jobs recorded when interrupted", f"{b.get('recorded_at_interrupt')} (the rest while it would have run)"],
            ["ledger size", f"{b.get('ledger_mib')} MiB"],
            [f"the {JOBS:,}-job gallery (video-runner gallery): wall / CPU", f"{(b.get('gallery') or {}).get('wall_s')} s / "
                                                                         f"{(b.get('gallery') or {}).get('cpu_s')} s"],
            ["no-op rerun: wall / CPU / peak RSS", f"{noop.get('wall_s')} s / {noop.get('cpu_s')} s / {noop.get('max_rss_mib')} MiB "
                                                   f"({noop.get('submitted')} submitted, exit status {noop.get('returncode')})"],
            ["rerun with 1% left: first submission after start", f"{one.get('first_submission_s')} s"],
            ["rerun with 1% left: Ctrl-C to exit", f"{one.get('ctrl_c_to_exit_s')} s"]]
    return [f"## Scale: {JOBS:,} jobs ({PROMPTS:,} prompts x {len(DURATIONS)} durations x {REPLICATES} replicates, gen4.5)", "",
            f"The first run is interrupted with Ctrl-C once {IN_FLIGHT:,} generations are in flight (or {WAIT_S:g} s "
            "after its first submission). The reruns start from that ledger with every job set to downloaded (then 1% back to "
            "planned) by SQL, once the rest of the sweep the interrupted run was still recording is recorded (by the "
            "runner's own store, as its next run would): generating that many clips would take longer than the whole benchmark may; one file on "
            "disk stands for every clip. The interrupted run left its gallery (over 5,000 jobs) to the next run: "
            "`video-runner gallery` writes it, timed, before the no-op rerun.", ""] + _md(
        ["figure", "value"], rows) + [""] + \
        _profile_section("Profile of the first run to its first submission", first.get("profile_to_first_submission")) + \
        _profile_section("Profile of the first run from its first submission to its exit", first.get("profile_running")) + \
        _profile_section("Profile of the no-op rerun", noop.get("profile"))


def _startup(r: dict) -> list[str]:
    b = _get(r, "startup") or {}
    rows = [[name, c.get("cpu_s"), c.get("wall_s"), c.get("error")] for name, c in b.items() if isinstance(c, dict)]
    return [f"## Start-up (median of {startup.RUNS}, warm)", ""] + _md(["command", "CPU s", "wall s", "error"], rows) + [""]


def write(results: dict) -> None:
    DOC.write_text(render(results))
