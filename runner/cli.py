"""`video-runner`: see, compare and fix up what the runner did, from its ledger.

The companion of `python -m runner` (which plans and runs sweeps): sweeps, status, jobs, retry,
export, gallery and verify. It reads the ledger the runner would use from the current folder
(`runner.locate`) and never loads Hydra, the HTTP client or the provider plugins, so it answers at
once, on a ledger of a hundred thousand jobs too.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import webbrowser
from collections.abc import Sequence
from typing import Any

from runner import store as S
from runner.ledger_file import NotALedger
from runner.locate import STATE_ENV, Found, NoLedger, find_ledger
from runner.money import usd_text
from runner.naming import param_tag
from runner.views import NotFound, jobs, parse_value, select, status, sweeps

EXIT_USAGE = 2
COMMANDS = ("sweeps", "status", "jobs", "retry", "export", "gallery", "verify")
LIMIT = 50  # job rows shown by default

_RERUN = {
    S.PLANNED: "submitted (est. {est})",
    S.CLAIMED: "submitted (nothing was sent for them yet)",
    S.SUBMITTING: "submitted again: their first request's answer was lost (counted as possible duplicates)",
    S.SUBMITTED: "followed at the provider and collected, no new charge",
    S.GENERATED: "collected from the provider: paid already, no new charge",
    S.CANCELED: "generated again: a new charge each",
    S.FAILED: "left failed; `video-runner retry` (or retry_failed=true) generates them again: a new charge each",
    S.LOST: "left lost; regenerate_lost=true generates them again: a second charge each",
    S.DOWNLOADED: "skipped (`video-runner verify` checks their files are still there)",
}


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        found = find_ledger(args.db)
        conn = S.open_ledger(found.db, hint=f"give another ledger with --db PATH or {STATE_ENV}=FOLDER")
        try:
            return args.command(conn, found, args)
        finally:
            conn.close()
    except (NoLedger, NotALedger, NotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `video-runner export | head`
        return 0
    except KeyboardInterrupt:  # a change under way is rolled back whole (runner.checks)
        print("\ninterrupted", file=sys.stderr)
        return 130


def cmd_sweeps(conn: Any, found: Found, args: argparse.Namespace) -> int:
    table = [("sweep", "name", "planned at", "jobs", "models", "states", "est. $", "settled $")]
    for s in sweeps(conn):
        counts = ", ".join(f"{s['states'][state]} {state}" for state in S.STATES if s["states"][state])
        est = usd_text(s["est_micros"]) + (f" + {s['unpriced']} unpriced" if s["unpriced"] else "")
        table.append((s["id"][:8], s["name"], s["created_at"][:19].replace("T", " "), str(s["jobs"]), ", ".join(sorted(s["models"])),
                      counts, est, usd_text(s["spent_micros"])))
    print(_table(table) if len(table) > 1 else "no sweeps in this ledger yet")
    return 0


def cmd_status(conn: Any, found: Found, args: argparse.Namespace) -> int:
    sel = select(conn, args.sweep)
    st = status(conn, sel)
    states = st["states"]
    lines = [f"{sel.label}: {sum(states.values())} jobs in {found.db}",
             "  " + ", ".join(f"{states[s]} {s}" for s in S.STATES if states[s]),
             f"  spend: settled {usd_text(st['spent_micros'])}, estimated {usd_text(st['est_micros'])} for one generation of each job"
             + (f" (+ {st['unpriced']} job(s) of unknown price)" if st["unpriced"] else "")]
    if st["possible_duplicates"]:
        lines.append(f"  possible duplicate charges: {st['possible_duplicates']} submission(s) whose answer was lost, up to "
                     f"{usd_text(st['possible_micros'])}: check the provider's usage page")
    if st["problems"]:
        lines.append("failures by reason:")
        lines += [f"  {p['jobs']} {p['state']} ({p['error_class'] or '?'}, {p['models']}): {p['error'] or 'no message'}" for p in st["problems"]]
    if st["in_flight"]:
        lines.append("in flight (a runner drives these, or the next run picks them up):")
        for f in st["in_flight"]:
            tasks = ", ".join((f["tasks"] or "").split(",")[:3])
            lines.append(f"  {f['jobs']} {f['state']} at {f['provider']}" + (f" ({f['provider_status']})" if f["provider_status"] else "")
                         + (f": tasks {tasks}{' ...' if f['jobs'] > 3 else ''}" if tasks else ""))
    if st["mismatches"]:
        lines.append("clips that differ from what was asked:")
        lines += [f"  {m['jobs']} clip(s) of {m['models']}: {m['mismatch']}" for m in st["mismatches"]]
    lines.append("what a plain rerun of the same command would do:")
    lines += [f"  {states[s]} {s}: " + _RERUN[s].format(est=usd_text(st["est_planned"])) for s in S.STATES if states[s]]
    print("\n".join(lines))
    return 0


def cmd_jobs(conn: Any, found: Found, args: argparse.Namespace) -> int:
    sel = select(conn, args.sweep)
    wanted = {}
    for given in args.param or []:
        name, sep, value = given.partition("=")
        if not sep or not name:
            raise NotFound(f"--param {given!r}: give it as name=value, e.g. --param duration=10")
        wanted[name] = parse_value(value)
    total, found_rows = jobs(conn, sel, state=args.state, model=args.model, prompt=args.prompt, params=wanted,
                             limit=None if args.limit == 0 else args.limit)
    table = [("job", "model", "prompt", "params", "state", "cost", "gen s", "delivered", "file or reason")]
    for r in found_rows:
        cost = r["spent_micros"] if r["spent_micros"] else r["est_micros"]
        seconds = f"{r['finished_at'] - r['submitted_at']:.1f}" if r["finished_at"] and r["submitted_at"] else ""
        delivered = f"{r['probe_duration_s']:g}s {r['probe_width']}x{r['probe_height']}" if r["probe_duration_s"] is not None else ""
        if r["probe_mismatch"]:
            delivered += f" DIFFERS: {r['probe_mismatch']}"
        where = r["output_path"] or (r["error"] or "")[:120]
        table.append((r["key"][:12], r["model"], r["prompt_id"], param_tag(json.loads(r["params"] or "{}"), r["replicate"] or 0) or "-",
                      r["state"], usd_text(cost), seconds, delivered, where))
    print(f"{sel.label}: {total} job(s) match" + (f", first {len(found_rows)} shown (--limit 0 for all)" if len(found_rows) < total else ""))
    if found_rows:
        print(_table(table))
    return 0


def cmd_retry(conn: Any, found: Found, args: argparse.Namespace) -> int:
    from runner.checks import retry

    sel = select(conn, args.sweep)
    retried, left = retry(conn, sel, args.permanent)
    cost = sum(r["est_micros"] or 0 for r in retried)
    if retried:
        print(f"{sel.label}: {len(retried)} failed job(s) back to planned. The next run of the sweep generates them again: "
              f"a new charge each, estimated {usd_text(cost)} in all.")
    else:
        print(f"{sel.label}: no failed job to retry.")
    if left:
        print(f"{len(left)} job(s) failed permanently (the provider refused the request; the same request would fail again) "
              f"and were left failed: --permanent retries them too.")
    return 0


def cmd_export(conn: Any, found: Found, args: argparse.Namespace) -> int:
    from runner.publish import FIELDS, record

    sel = select(conn, args.sweep)
    out = open(args.output, "w", newline="", encoding="utf-8") if args.output else sys.stdout
    try:
        rows = jobs(conn, sel)[1]
        if args.format == "jsonl":
            for row in rows:
                out.write(json.dumps(record(row, found), ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(out, fieldnames=FIELDS)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in record(row, found).items()})
    finally:
        if args.output:
            out.close()
    if args.output:
        print(f"{len(rows)} job(s) of {sel.label} written to {args.output}", file=sys.stderr)
    return 0


def cmd_gallery(conn: Any, found: Found, args: argparse.Namespace) -> int:
    from runner.publish import publish

    sel = select(conn, args.sweep)
    names = [r[0] for r in conn.execute(f"select distinct sweep from jobs where {sel.where}", sel.args)]
    for done in publish(conn, found, names)[0]:
        print(f"gallery: {done.report} ({done.jobs} jobs; manifest {done.manifest.name} beside it)")
        if args.open:
            webbrowser.open(done.report.resolve().as_uri())
    return 0


def cmd_verify(conn: Any, found: Found, args: argparse.Namespace) -> int:
    from runner.checks import verify

    sel = select(conn, args.sweep)
    done = verify(conn, found, sel, mark=not args.report_only)
    for what, rows in (("missing", done.missing), ("changed", done.changed)):
        for r in rows:
            print(f"{what}: {r['output_path']} ({r['key'][:12]} {r['model']} {r['prompt_id']})")
    bad = len(done.missing) + len(done.changed)
    print(f"{sel.label}: {done.ok} file(s) match the ledger, {len(done.missing)} missing, {len(done.changed)} changed"
          + (f"; {done.probed} clip(s) probed" if done.probed else ""))
    if done.marked:
        print(f"{done.marked} job(s) marked to be collected again: run the same sweep command again and it downloads them "
              f"from the provider's task (no new generation, no new charge) where the provider still has the output")
    elif bad and args.report_only:
        print("nothing was changed (--report-only)")
    return 1 if bad else 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="video-runner",
        description="See, compare and fix up the sweeps of `python -m runner`, from its ledger.",
        epilog="SWEEP is a sweep's name (its outputs folder) or the start of its id (see `video-runner sweeps`); "
               "without it, the latest sweep planned. The ledger is .runner/ledger.db in this folder or the nearest one "
               "above it, $RUNNER_STATE_DIR/ledger.db, or --db PATH.")
    top.add_argument("--db", metavar="PATH", help="the ledger file to read (default: found from the current folder)")
    sub = top.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, fn: Any, text: str, sweep: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        if sweep:
            p.add_argument("sweep", nargs="?", metavar="SWEEP", help="a sweep name or id prefix (default: the latest sweep)")
        p.add_argument("--db", metavar="PATH", default=argparse.SUPPRESS, help="the ledger file to read")
        p.set_defaults(command=fn)
        return p

    command("sweeps", cmd_sweeps, "every sweep: when it was planned, its models, jobs by state, estimated and settled spend", sweep=False)
    command("status", cmd_status, "a sweep's jobs by state, failures by reason, tasks in flight, possible duplicate charges, "
                                  "clips that differ from what was asked, and what a rerun would do")
    p = command("jobs", cmd_jobs, "a table of a sweep's jobs, filtered")
    p.add_argument("--state", choices=S.STATES, help="only jobs in this state")
    p.add_argument("--model", help="only models whose name or provider id contains this")
    p.add_argument("--prompt", help="only prompts whose id contains this")
    p.add_argument("--param", action="append", metavar="NAME=VALUE", help="only jobs with this parameter value (repeatable): duration=10, aspect_ratio=16:9, audio=true")
    p.add_argument("--limit", type=int, default=LIMIT, help=f"rows to show (default {LIMIT}; 0 for all)")
    p = command("retry", cmd_retry, "failed jobs back to planned, so the next run generates them again (a new charge each)")
    p.add_argument("--permanent", action="store_true", help="also jobs the provider refused outright (they usually fail again)")
    p = command("export", cmd_export, "one row per job: prompt, model, params, state, cost, generation time, file, sha256, "
                                      "task id, and what the file turned out to be")
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of to standard output")
    p = command("gallery", cmd_gallery, "write report.html (and manifest.jsonl) in the sweep's outputs folder: every clip side by side")
    p.add_argument("--open", action="store_true", help="open it in the browser")
    p = command("verify", cmd_verify, "re-hash every downloaded file against the ledger; a missing or changed file's job is "
                                      "marked so that a plain rerun collects it again from the provider")
    p.add_argument("--report-only", action="store_true", help="report, and change nothing in the ledger")
    return top


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
