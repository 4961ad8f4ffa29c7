"""Read-only views of the ledger for the companion CLI, the manifest and the gallery.

Every view is a handful of aggregate queries over indexed columns (migration m003), so it answers
in a fraction of a second on a ledger of a hundred thousand jobs. A selection names which jobs a
command is about: one planned sweep (by id prefix), every sweep of a name (which is also the
outputs folder its jobs went to), or by default the latest sweep planned.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from runner import store as S

IN_FLIGHT = (S.CLAIMED, S.SUBMITTING, S.SUBMITTED, S.GENERATED)


class NotFound(Exception):
    """No sweep answers to what the user typed; the message lists what there is."""


@dataclass(frozen=True)
class Selection:
    label: str  # in a person's words: "sweep ads (3 runs)" or "sweep 1a2b3c4d (ads)"
    where: str  # an SQL condition on `jobs`
    args: tuple[Any, ...] = ()


def select(conn: sqlite3.Connection, given: str | None) -> Selection:
    """The jobs `given` names: a sweep name (every sweep of that name, and every job first planned
    under it), an id prefix of one sweep, or None for the latest sweep planned."""
    if not given:
        row = conn.execute("select id, name from sweeps order by created_at desc, rowid desc limit 1").fetchone()
        if row is None:
            raise NotFound("the ledger has no sweeps yet")
        return _one(row["id"], row["name"], "latest")
    ids = tuple(r[0] for r in conn.execute("select id from sweeps where name = ? order by created_at", [given]))
    if ids or conn.execute("select 1 from jobs where sweep = ? limit 1", [given]).fetchone():
        where = f"(jobs.sweep = ? or {_member(len(ids))})"
        runs = f"{len(ids)} run{'s' if len(ids) != 1 else ''}"
        return Selection(f"sweep {given} ({runs})", where, (given, *ids))
    found = conn.execute("select id, name from sweeps where id like ? escape '\\' limit 2",
                         [given.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"]).fetchall()
    if len(found) == 1:
        return _one(found[0]["id"], found[0]["name"], "")
    known = [f"{r['id'][:8]} {r['name']}" for r in conn.execute("select id, name from sweeps order by created_at desc limit 10")]
    why = f"{given!r} is the start of several sweep ids" if found else f"no sweep is named {given!r} or has an id starting so"
    raise NotFound(f"{why}; latest sweeps: {', '.join(known) or 'none'} (video-runner sweeps lists them all)")


def _one(sweep_id: str, name: str, note: str) -> Selection:
    label = f"sweep {sweep_id[:8]} ({name}{', ' + note if note else ''})"
    return Selection(label, _member(1), (sweep_id,))


def _member(sweeps: int) -> str:
    """A job belongs to one of `sweeps` sweeps: one index probe per job, so a condition on state or
    model narrows first, and a whole sweep is summed from the covering index alone."""
    if not sweeps:
        return "0"
    return ("exists (select 1 from sweep_jobs where sweep_jobs.job_key = jobs.key and "
            f"sweep_jobs.sweep_id in ({','.join('?' * sweeps)}))")


def sweeps(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every planned sweep, latest first: when, its models, jobs by state, estimated and settled spend."""
    found: dict[str, dict[str, Any]] = {}
    for row in conn.execute("select id, name, created_at, jobs from sweeps order by created_at desc, rowid desc"):
        found[row["id"]] = {**dict(row), "models": set(), "states": Counter(), "est_micros": 0, "spent_micros": 0, "unpriced": 0}
    query = ("select sweep_jobs.sweep_id, jobs.model, jobs.state, count(*), sum(jobs.est_micros), sum(jobs.spent_micros), "
             "sum(jobs.est_micros is null) from jobs join sweep_jobs on sweep_jobs.job_key = jobs.key "
             "group by sweep_jobs.sweep_id, jobs.model, jobs.state")
    for sweep_id, model, state, count, est, spent, unpriced in conn.execute(query):
        entry = found.get(sweep_id)
        if entry is None:
            continue
        entry["models"].add(model)
        entry["states"][state] += count
        entry["est_micros"] += est or 0
        entry["spent_micros"] += spent or 0
        entry["unpriced"] += unpriced
    return list(found.values())


def status(conn: sqlite3.Connection, sel: Selection) -> dict[str, Any]:
    """What a sweep's jobs are doing: counts, money, failures by reason, tasks in flight, possible
    duplicate charges and clips that differ from what was asked."""
    where, args = sel.where, sel.args
    out: dict[str, Any] = {"states": Counter(), "est_micros": 0, "spent_micros": 0, "unpriced": 0, "est_planned": 0,
                           "possible_duplicates": 0, "possible_micros": 0}
    query = ("select state, count(*), sum(est_micros), sum(spent_micros), sum(est_micros is null), sum(possible_duplicates), "
             f"sum(possible_micros) from jobs where {where} group by state, model")
    for state, count, est, spent, unpriced, dups, possible in conn.execute(query, args):
        out["states"][state] += count
        out["est_micros"] += est or 0
        out["spent_micros"] += spent or 0
        out["unpriced"] += unpriced
        out["possible_duplicates"] += dups or 0
        out["possible_micros"] += possible or 0
        if state in (S.PLANNED, S.CANCELED):
            out["est_planned"] += est or 0
    out["problems"] = [dict(r) for r in conn.execute(
        "select state, error_class, error, count(*) as jobs, group_concat(distinct model) as models from jobs "
        f"where {where} and state in (?, ?) group by state, error_class, error order by jobs desc", (*args, S.FAILED, S.LOST))]
    out["in_flight"] = [dict(r) for r in conn.execute(
        "select provider, state, provider_status, count(*) as jobs, group_concat(task_id) as tasks from jobs "
        f"where {where} and state in ({','.join('?' * len(IN_FLIGHT))}) group by provider, state, provider_status",
        (*args, *IN_FLIGHT))]
    out["mismatches"] = [dict(r) for r in conn.execute(
        "select probes.mismatch, count(*) as jobs, group_concat(distinct jobs.model) as models from probes "
        f"join jobs on jobs.key = probes.job_key where probes.mismatch is not null and {where} "
        "group by probes.mismatch order by jobs desc", args)]
    return out


def jobs(conn: sqlite3.Connection, sel: Selection, *, state: str | None = None, model: str | None = None,
         prompt: str | None = None, params: dict[str, Any] | None = None, limit: int | None = None) -> tuple[int, list[dict[str, Any]]]:
    """(how many match, the first `limit` of them) with their probe, filtered by state, model (a part
    of its catalogue name or provider id), prompt id (a part of it) and canonical parameter values."""
    conditions, args = [sel.where], list(sel.args)
    if state:
        conditions.append("jobs.state = ?")
        args.append(state)
    if model:
        conditions.append("(instr(jobs.model, ?) > 0 or instr(jobs.model_id, ?) > 0)")
        args += [model, model]
    if prompt:
        conditions.append("instr(jobs.prompt_id, ?) > 0")
        args.append(prompt)
    for name, value in (params or {}).items():
        conditions.append("json_extract(jobs.params, ?) = ?")
        args += [f'$."{name}"', int(value) if isinstance(value, bool) else value]
    where = " and ".join(conditions)
    total = conn.execute(f"select count(*) from jobs where {where}", args).fetchone()[0]
    tail = "" if limit is None else f" limit {int(limit)}"
    found = [dict(r) for r in conn.execute(
        f"select {_JOB_COLUMNS}, {_PROBE_COLUMNS} from jobs left join probes on probes.job_key = jobs.key "
        f"where {where} order by jobs.rowid{tail}", args)]  # the order they were planned in: no sort
    return total, found


def each_job(conn: sqlite3.Connection, sel: Selection) -> Iterator[dict[str, Any]]:
    """Every job of a selection with its probe, in the order planned, one at a time."""
    for row in conn.execute(f"select {_JOB_COLUMNS}, {_PROBE_COLUMNS} from jobs left join probes on probes.job_key = jobs.key "
                            f"where {sel.where} order by jobs.rowid", sel.args):
        yield dict(row)


_JOB_COLUMNS = ", ".join(f"jobs.{c}" for c in
                         ("key", "sweep", "prompt_id", "model", "model_id", "provider", "mode", "replicate", "params", "inputs",
                          "state", "provider_status", "est_micros", "spent_micros", "submitted_at", "finished_at",
                          "output_path", "output_bytes", "output_sha256", "task_id", "error_class", "error", "attempts"))
_PROBE_COLUMNS = ", ".join(f"probes.{c} as probe_{c}" for c in
                           ("output_sha256", "duration_s", "width", "height", "fps", "video_codec", "audio_codec",
                            "poster_path", "mismatch", "error"))


def parse_value(text: str) -> Any:
    """A parameter value as typed (`duration=10`, `audio=true`, `aspect_ratio=16:9`) as the ledger's JSON holds it."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def first_config(config_json: str | None) -> dict[str, Any]:
    """The run config a sweep recorded (a multirun records its points: the first one's settings)."""
    config = json.loads(config_json or "{}")
    return (config.get("points") or [config])[0] if isinstance(config, dict) else {}


def outputs_dirs(conn: sqlite3.Connection, names: list[str]) -> dict[str, str]:
    """The `outputs_dir` each sweep name was last run with ("outputs" when none recorded)."""
    found: dict[str, str] = defaultdict(lambda: "outputs")
    marks = ",".join("?" * len(names))
    for row in conn.execute(f"select name, config from sweeps where name in ({marks}) order by created_at", names):
        found[row["name"]] = str(first_config(row["config"]).get("outputs_dir") or "outputs")
    return {name: found[name] for name in names}
