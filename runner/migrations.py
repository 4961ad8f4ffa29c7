"""The ledger's schema, as named migrations applied in order (the simonw/llm pattern).

Each migration runs once per database and is recorded in `_migrations`; a new column or table is a
new migration appended here, never an edit of an old one, so every existing ledger upgrades in place.
"""

from __future__ import annotations

import datetime
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING

from runner import ledger_lock

if TYPE_CHECKING:  # migrations are given a Database: a dry run, which only checks a ledger's version, never loads it
    import sqlite_utils

MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = []
#: The runner's mark in a ledger's SQLite header (`PRAGMA application_id`, "VRLG"): a file carrying
#: it is a runner ledger, so one listing migrations this runner does not know is a newer runner's
#: (runner.ledger_file), not another application's database that happens to use `_migrations` too.
APPLICATION_ID = 0x56524C47


def migration(fn: Callable[[sqlite_utils.Database], None]) -> Callable[[sqlite_utils.Database], None]:
    MIGRATIONS.append(fn)
    return fn


def upgrade(conn: sqlite3.Connection) -> None:
    """Migrate the ledger if it needs it. A ledger already up to date, as every run but its first
    finds it, is told by one read, without loading sqlite-utils; migrations are never undone, so
    that read needs no lock (`migrate` takes one and reads again)."""
    try:
        applied = {row[0] for row in conn.execute("select name from _migrations")}
    except sqlite3.OperationalError:  # a new ledger: no table yet
        applied = set()
    if all(fn.__name__ in applied for fn in MIGRATIONS):
        return
    import sqlite_utils

    migrate(sqlite_utils.Database(conn))


def migrate(db: sqlite_utils.Database) -> None:
    """Apply every migration this database has not seen yet, each in its own transaction."""
    ledger_lock.begin(db.conn, ledger_lock.teller(conn=db.conn))  # another runner may be migrating it too
    try:
        if "_migrations" not in db.table_names():
            db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
        applied = {row["name"] for row in db["_migrations"].rows}
        for fn in MIGRATIONS:
            if fn.__name__ not in applied:
                fn(db)
                db["_migrations"].insert(
                    {"name": fn.__name__, "applied_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
                )
        db.conn.execute("COMMIT")
    except BaseException:
        db.conn.execute("ROLLBACK")
        raise


@migration
def m001_initial(db: sqlite_utils.Database) -> None:
    db["jobs"].create(
        {
            "key": str,  # sha256 of what changes the output (docs/ledger.md "jobs")
            "sweep": str,  # the sweep that first planned it (names its output folder)
            "provider": str,
            "model": str,
            "model_id": str,
            "mode": str,
            "endpoint": str,
            "prompt_id": str,
            "replicate": int,
            "params": str,  # JSON: canonical values
            "payload": str,  # JSON: native request body, input files as {"$input": sha256}
            "inputs": str,  # JSON: [{source, sha256, mime, size}]
            "media": str,
            "extension": str,
            "state": str,  # planned, submitting, submitted, succeeded, downloaded, failed, canceled
            "provider_status": str,  # the provider's own word for it (THROTTLED, IN_QUEUE, ...)
            "progress": float,
            "task_id": str,
            "task_urls": str,  # JSON: the provider's URLs for the task (fal status/response/cancel)
            "attempts": int,  # generations submitted for this job
            "possible_duplicates": int,  # resubmissions after a submit whose outcome was unknown
            "est_cost": float,  # per generation; NULL when the price is unknown
            "reserved_usd": float,  # estimated cost of the generation in flight
            "spent_usd": float,  # settled cost of every generation so far
            "output_url": str,
            "output_path": str,
            "output_bytes": int,
            "output_sha256": str,
            "error_class": str,  # retryable, rate_limited, permanent, deadline
            "error": str,
            "owner": str,  # host:pid of the process driving it while in flight
            "heartbeat_at": float,
            "created_at": str,
            "submitted_at": float,  # epoch seconds of the current generation's submission
            "finished_at": float,
            "updated_at": str,
        },
        pk="key",
        defaults={"attempts": 0, "possible_duplicates": 0, "reserved_usd": 0.0, "spent_usd": 0.0},
    )
    db["jobs"].create_index(["state", "provider"])
    db["jobs"].create_index(["model", "state"])
    db["sweeps"].create({"id": str, "name": str, "created_at": str, "config": str, "jobs": int}, pk="id")
    db["sweep_jobs"].create({"sweep_id": str, "job_key": str}, pk=("sweep_id", "job_key"))
    db["sweep_jobs"].create_index(["job_key"])
    db["events"].create(
        {"id": int, "job_key": str, "at": str, "from_state": str, "to_state": str, "detail": str}, pk="id"
    )
    db["events"].create_index(["job_key"])


@migration
def m002_fenced_jobs_exact_money_budgets(db: sqlite_utils.Database) -> None:
    """Ownership fencing, slots as a flag, money in micro-dollars, shared budgets, owners, latencies.

    `succeeded` becomes `generated` (paid for, output still to collect). A job in `submitting` or
    `submitted` holds its concurrency slot whoever drives it: a dead runner's tasks still run at the
    provider, so they still count against the limits until the ledger learns they ended.
    """
    jobs = db["jobs"]
    for column in ("est_micros", "reserved_micros", "spent_micros", "possible_micros", "holds_slot", "lease"):
        jobs.add_column(column, int, not_null_default=0 if column != "est_micros" else None)
    jobs.add_column("cost_source", str)
    db.execute(
        "update jobs set est_micros = cast(round(est_cost * 1000000) as integer), "
        "reserved_micros = cast(round(reserved_usd * 1000000) as integer), "
        "spent_micros = cast(round(spent_usd * 1000000) as integer), "
        "state = case state when 'succeeded' then 'generated' else state end, "
        "holds_slot = state in ('submitting', 'submitted')"
    )
    jobs.transform(drop={"est_cost", "reserved_usd", "spent_usd", "heartbeat_at"})
    db.execute("create index jobs_slots on jobs(provider, model_id) where holds_slot = 1")
    db["owners"].create(
        {"id": str, "host": str, "pid": int, "boot_id": str, "pid_ns": str, "started": str, "beat": int, "gone": int,
         "registered_at": float},
        pk="id",
        not_null={"beat", "gone"},
        defaults={"beat": 0, "gone": 0},
    )
    db["budgets"].create(
        {"id": str, "limit_micros": int, "committed_micros": int, "created_at": str, "updated_at": str},
        pk="id",
        not_null={"committed_micros"},
        defaults={"committed_micros": 0},
    )
    db["budget_jobs"].create({"budget_id": str, "job_key": str}, pk=("budget_id", "job_key"))
    db["budget_jobs"].create_index(["job_key"])
    db["model_stats"].create(
        {"model_id": str, "samples": int, "latency_s": float, "max_s": float, "updated_at": str}, pk="model_id"
    )


@migration
def m003_uploads(db: sqlite_utils.Database) -> None:
    """Files a provider holds for a while (Runway's runway:// uploads, 24 h): reused, not sent again."""
    db["uploads"].create({"provider": str, "sha256": str, "uri": str, "expires_at": float}, pk=("provider", "sha256"))


@migration
def m004_hook_cursors(db: sqlite_utils.Database) -> None:
    """How far each plugin's lifecycle hooks have been given the ledger's events (at least once)."""
    db["hook_cursors"].create({"plugin": str, "event_id": int, "updated_at": str}, pk="plugin")


@migration
def m005_probes_and_lookups(db: sqlite_utils.Database) -> None:
    """What each downloaded clip turned out to be, and the indexes the companion CLI reads by.

    `probes` holds one row per job: the facts read from its file (duration, size, frame rate, codecs)
    and how they differ from what was asked, keyed to the sha256 of the file probed, so a file
    collected again is probed again. The indexes let `video-runner` answer on a large ledger
    without reading whole job rows: a sweep's jobs by state and model with their money, a sweep
    folder's jobs, and the clips that differ from what was asked.
    """
    db["probes"].create(
        {"job_key": str, "output_sha256": str, "duration_s": float, "width": int, "height": int, "fps": float,
         "video_codec": str, "audio_codec": str, "poster_path": str, "mismatch": str, "error": str, "probed_at": str},
        pk="job_key",
    )
    # Covers the sums by state and model that `sweeps` and `status` make over a sweep's jobs, so
    # they never read the wide job rows (and a filter by state, model or prompt narrows first).
    db.execute("create index jobs_overview on jobs(state, model, prompt_id, sweep, key, est_micros, spent_micros, "
               "possible_duplicates, possible_micros)")
    db["jobs"].create_index(["sweep", "state"])  # a sweep folder's jobs (manifest, gallery)
    db.execute("create index probes_mismatch on probes(mismatch) where mismatch is not null")
    db["sweeps"].create_index(["name"])
    db["sweeps"].create_index(["created_at"])


@migration
def m006_one_job_per_task(db: sqlite_utils.Database) -> None:
    """A provider's task belongs to one job: replicates send identical requests, and a lost answer
    looked up in the provider's history must never be adopted by two jobs. (A ledger that already
    holds a task twice keeps a plain index: the engine's own checks still apply to it.)"""
    shared = db.execute("select count(*) from (select task_id from jobs where task_id is not null group by task_id having count(*) > 1)").fetchone()[0]
    unique = "unique " if not shared else ""
    db.execute(f"create {unique}index jobs_task on jobs(task_id) where task_id is not null")


@migration
def m007_application_id(db: sqlite_utils.Database) -> None:
    """The runner's mark in the file's header, so a ledger can be told from other SQLite files
    (and a newer runner's ledger from a foreign database) without writing to it."""
    db.execute(f"pragma application_id = {APPLICATION_ID}")


@migration
def m008_listed_prices(db: sqlite_utils.Database) -> None:
    """Prices read from a provider's own price list (fal's pricing API) for models the manifests
    leave unpriced, with when they were read: reused for 24 h (runner/listed.py). `usd` is the
    decimal text the provider gave (a unit price may be finer than a micro-dollar)."""
    db["listed_prices"].create({"provider": str, "source": str, "endpoint": str, "usd": str, "unit": str, "fetched_at": float},
                               pk=("provider", "source", "endpoint"))


@migration
def m009_sweep_reads(db: sqlite_utils.Database) -> None:
    """A sweep's jobs read in one pass without their wide rows (at the start and the end of every run).

    A sweep's jobs are found through `sweep_jobs` by key, in key order; each key then led to its row
    out of the table's order, with its prompt and payload: a page read per job, half a second a pass
    over 100,000 jobs. This index holds, in key order, every column those passes read
    (`runner.store.SWEEP_JOINED`), so they read it alone (a third of the time).
    """
    db.execute("create index jobs_sweep_reads on jobs(key, state, provider_status, sweep, provider, model_id, est_micros, "
               "attempts, spent_micros, possible_micros, possible_duplicates, output_path)")
