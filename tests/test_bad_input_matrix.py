"""The bad-input matrix: settings and command lines a careless or curious user types, each refused
with one message before anything is written or sent.

Every case runs against a ledger and an outputs folder that a real run already filled, with the
providers pointed at a live simulator and their keys given: a mistake that slipped through would
plan jobs into the ledger, download clips or submit to the simulator, and the case would fail on
that. Each case asserts exit status 2, no traceback, the message naming the setting and the value
given (and never a key), and the ledger, the outputs folder and the simulator's ledger unchanged.

Most cases run `runner.app.main` in this process (the same code path as the command, without a
Python start-up each); the cases marked `sub` run the installed command line as a subprocess.
docs/errors.md lists the classes.
"""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from runner import app
from runner.run import RUN_ID_ENV
from tests.conftest import KEYLESS, run_cli
from tests.helpers import sim_args, sim_env

BASE = ["model=gen4_turbo", "prompt_set=animate", "duration=5", "quiet=true"]


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]
    expect: tuple[str, ...]  # in the message: the setting and the value given, and what is wrong
    env: dict[str, str | None] = field(default_factory=dict)  # None: removed from the environment
    sub: bool = False  # run as a subprocess (the rest run in this process)


def case(id: str, args: str | list[str], *expect: str, env: dict[str, str | None] | None = None, sub: bool = False) -> Case:
    return Case(id, tuple([args] if isinstance(args, str) else args), expect, env or {}, sub)


NEWLINE_KEY = {"RUNWAYML_API_SECRET": "key_0123456789abcdef\n"}

CASES = [
    # -- the grammar of an override ------------------------------------------------------------
    case("trailing-comma", "model=kling,", "'model=kling,'", "ends with a comma", sub=True),
    case("trailing-comma-multirun", ["-m", "model=kling,"], "'model=kling,'", "ends with a comma", sub=True),
    case("unclosed-bracket", "model=[kling", "'model=[kling'", "[ and ] do not pair up"),
    case("unclosed-quote", 'model="kling', "'model=\"kling'", "quote is not closed"),
    case("stray-parenthesis", "model=kling)", "'model=kling)'", "( and ) do not pair up"),
    case("number-trailing-comma", "duration=5,", "'duration=5,'", "ends with a comma"),
    case("leading-comma", "duration=,5", "'duration=,5'", "empty value between commas"),
    case("double-comma", "model=kling,,gen4_turbo", "'model=kling,,gen4_turbo'", "empty value between commas"),
    case("no-key", "=5", "'=5'", "nothing before the '=' names a setting"),
    case("bare-word", "kling", "'kling'", "it has no '='"),
    case("unclosed-list", "sweep.duration=[5,10", "'sweep.duration=[5,10'", "[ and ] do not pair up", sub=True),
    case("unclosed-table", "native.cfg_scale={a:1", "'native.cfg_scale={a:1'", "{ and } do not pair up"),
    case("unclosed-interpolation", "name=${state_dir", "'name=${state_dir'", "interpolation is not closed"),
    case("unquoted-comma", "negative_prompt=blurry, dark", "negative_prompt=blurry, dark", "holds a comma"),
    case("companion-command", "status", "'status'", "video-runner status"),
    # -- values of the wrong type, options that do not exist ------------------------------------
    case("duration-text", "duration=abc", "duration=abc", "a whole number", sub=True),
    case("attempts-fraction", "max_attempts=1.5", "max_attempts=1.5", "a whole number"),
    case("attempts-list", "max_attempts=[1,2]", "max_attempts=[1,2]", "a whole number"),
    case("dry-run-maybe", "dry_run=maybe", "dry_run=maybe", "true or false"),
    case("audio-loud", "audio=loud", "audio=loud", "true or false"),
    case("budget-text", "budget_usd=abc", "budget_usd=abc", "a number"),
    case("replicates-text", "replicates=abc", "replicates=abc", "a whole number"),
    case("seed-text", "seed=abc", "seed=abc", "a whole number"),
    case("mode-list", "mode=[a,b]", "mode=[a,b]", "text"),
    case("sweep-not-list", "sweep.duration=5", "sweep.duration=5", "a list of whole numbers"),
    case("concurrency-text", "providers.runway.concurrency=abc", "providers.runway.concurrency=abc", "a whole number", sub=True),
    case("prompt-set-unknown", "prompt_set=nope", "prompt_set=nope", "options: ads, animate, nature", sub=True),
    case("provider-option-unknown", "provider@providers.fal=nope", "provider@providers.fal=nope", "options: fal, runway"),
    case("launcher-unknown", "hydra/launcher=nope", "hydra/launcher=nope", "options: basic, joblib, runner"),
    case("model-unknown", "model=klingg", "unknown model 'klingg'", "did you mean 'kling'?"),
    case("setting-typo", "durration=5", "unknown setting 'durration'", "did you mean 'duration'?"),
    case("provider-unknown", "providers.nope.concurrency=1", "unknown provider 'nope'", "providers: fal, runway"),
    case("remove-setting", "~duration", "~duration", "cannot be removed"),
    case("config-dir-missing", "--config-dir=/nonexistent", "--config-dir=/nonexistent", "is not a folder"),
    case("config-name-missing", ["-cn", "nope"], "--config-name=nope", "configs: config"),
    # -- required groups -------------------------------------------------------------------------
    case("remove-model", "~model", "~model", "model cannot be left out", sub=True),
    case("remove-prompt-set", "~prompt_set", "~prompt_set", "prompt_set cannot be left out"),
    case("prompt-set-null", "prompt_set=null", "prompt_set=null", "prompt_set cannot be left out"),
    case("model-null", "model=null", "model=null", "model cannot be left out"),
    # -- interpolations and the environment ------------------------------------------------------
    case("env-missing", "name=${oc.env:NOPE_VARIABLE}", "name=${oc.env:NOPE_VARIABLE}", "'NOPE_VARIABLE' not found", sub=True),
    case("key-missing", "duration=${nope}", "duration=${nope}", "Interpolation key 'nope' not found"),
    case("state-dir-env-missing", "state_dir=${oc.env:NOPE_DIR}", "state_dir=${oc.env:NOPE_DIR}", "'NOPE_DIR' not found"),
    case("outputs-env-missing", "outputs_dir=${oc.env:NOPE_DIR}", "outputs_dir=${oc.env:NOPE_DIR}", "'NOPE_DIR' not found"),
    case("price-env-missing", "prices.gen4_turbo=${oc.env:NOPE_PRICE}", "prices.gen4_turbo=${oc.env:NOPE_PRICE}", "not found"),
    case("key-into-name", "name=${oc.env:RUNWAYML_API_SECRET}", "name holds the value of RUNWAYML_API_SECRET", "not shown", sub=True),
    case("key-into-native", "+native.promptText=${oc.env:RUNWAYML_API_SECRET}", "native.promptText holds the value of RUNWAYML_API_SECRET"),
    case("key-with-newline", [], "RUNWAYML_API_SECRET (the environment)", "line break", env=NEWLINE_KEY, sub=True),
    case("key-with-space", [], "RUNWAYML_API_SECRET (the environment)", "a space", env={"RUNWAYML_API_SECRET": "key_01234 6789abcdef"}),
    case("key-non-ascii", [], "RUNWAYML_API_SECRET (the environment)", "non-ASCII", env={"RUNWAYML_API_SECRET": "key_0123456789abcdé"}),
    case("key-unset", [], "no API key for runway", "RUNWAYML_API_SECRET", env={"RUNWAYML_API_SECRET": None}, sub=True),
    case("plugins-left-out", [], "unknown model 'gen4_turbo'", "RUNNER_LOAD_PLUGINS='nope'", env={"RUNNER_LOAD_PLUGINS": "nope"}, sub=True),
    case("key-env-is-a-key", "providers.runway.key_env=key_0123456789abcdef", "providers.runway.key_env", "not shown"),
    case("key-in-config", "+providers.runway.api_key=key_0123456789abcdef", "providers.runway.api_key", "never given in the config"),
    # -- numbers out of range --------------------------------------------------------------------
    case("budget-nan", "budget_usd=nan", "budget_usd=nan", "0 or more", sub=True),
    case("budget-inf", "budget_usd=inf", "budget_usd=inf", "0 or more"),
    case("budget-minus-inf", "budget_usd=-inf", "budget_usd=-inf", "0 or more"),
    case("budget-negative", "budget_usd=-1", "budget_usd=-1", "0 or more"),
    case("attempts-zero", "max_attempts=0", "max_attempts=0", "from 1 to 100", sub=True),
    case("attempts-negative", "max_attempts=-3", "max_attempts=-3", "from 1 to 100"),
    case("attempts-huge", "max_attempts=101", "max_attempts=101", "from 1 to 100"),
    case("timeout-negative", "job_timeout_s=-1", "job_timeout_s=-1", "more than 0", sub=True),
    case("timeout-zero", "job_timeout_s=0", "job_timeout_s=0", "more than 0"),
    case("timeout-nan", "job_timeout_s=nan", "job_timeout_s=nan", "more than 0"),
    case("outage-zero", "max_outage_s=0", "max_outage_s=0", "more than 0"),
    case("outage-negative", "max_outage_s=-5", "max_outage_s=-5", "more than 0"),
    case("concurrency-zero", "providers.runway.concurrency=0", "providers.runway.concurrency=0", "from 1 to 10000", sub=True),
    case("concurrency-negative", "providers.runway.concurrency=-1", "providers.runway.concurrency=-1", "from 1 to 10000"),
    case("concurrency-huge", "providers.fal.concurrency=100000", "providers.fal.concurrency=100000", "from 1 to 10000"),
    case("poll-zero", "providers.runway.min_poll_interval_s=0", "providers.runway.min_poll_interval_s=0", "more than 0", sub=True),
    case("poll-negative", "providers.runway.min_poll_interval_s=-0.5", "providers.runway.min_poll_interval_s=-0.5", "more than 0"),
    case("request-timeout-zero", "providers.runway.request_timeout_s=0", "providers.runway.request_timeout_s=0", "more than 0"),
    case("http-retries-zero", "providers.runway.retry.max_attempts=0", "providers.runway.retry.max_attempts=0", "from 1 to 100"),
    case("backoff-negative", "providers.runway.retry.backoff_base_s=-1", "providers.runway.retry.backoff_base_s=-1", "more than 0"),
    case("backoff-max-below-base", "providers.runway.retry.backoff_max_s=0.01", "providers.runway.retry.backoff_max_s=0.01",
         "at least providers.runway.retry.backoff_base_s"),
    case("seed-negative", "seed=-1", "seed=-1", "from 0 to 18446744073709551615", sub=True),
    case("seed-over-64-bits", "seed=18446744073709551616", "seed=18446744073709551616", "from 0 to 18446744073709551615"),
    case("seed-over-runway-range", "seed=4294967296", "seed=4294967296", "0..4294967295"),
    case("sweep-seed-negative", "sweep.seed=[1,-2]", "sweep.seed=-2", "from 0 to"),
    case("native-seed-negative", "+native.seed=-1", "native.seed=-1", "0..4294967295"),
    case("replicates-zero", "replicates=0", "replicates=0", "1 or more"),
    case("replicates-negative", "replicates=-5", "replicates=-5", "1 or more"),
    case("replicates-billion", "replicates=1000000000", "replicates=1000000000", "at most 1,000,000 jobs", sub=True),
    case("max-jobs-zero", "max_jobs=0", "max_jobs=0", "from 1 to 1000000"),
    case("plan-over-max-jobs", ["max_jobs=10", "replicates=6"], "max_jobs=10", "12 jobs"),
    case("grid-over-max-jobs", ["max_jobs=5", "sweep.seed=[1,2,3,4,5]"], "max_jobs=5", "10 jobs"),
    case("multirun-over-max-jobs", ["-m", "max_jobs=3", "seed=1,2"], "max_jobs=3", "4 jobs"),
    case("confirm-negative", "confirm_over_usd=-1", "confirm_over_usd=-1", "0 or more"),
    case("confirm-nan", "confirm_over_usd=nan", "confirm_over_usd=nan", "0 or more"),
    case("show-jobs-negative", "show_jobs=-1", "show_jobs='-1'", "show_jobs=all"),
    case("duration-over-model", "duration=11", "duration=11", "allowed: 2..10"),
    case("ratio-unknown", "aspect_ratio=2:1", "aspect_ratio='2:1'", "allowed: 16:9"),
    case("multirun-point-attempts", ["-m", "max_attempts=0,0"], "max_attempts=0", "from 1 to 100"),
    # -- names: models, providers, simulators, prices ---------------------------------------------
    case("limit-unknown-model", "providers.runway.model_concurrency.nope=1", "providers.runway.model_concurrency.nope",
         "'nope' is not a model of runway"),
    case("limit-typo", "providers.runway.model_concurrency.gen4_trubo=1", "providers.runway.model_concurrency.gen4_trubo",
         "did you mean 'gen4_turbo'?"),
    case("limit-other-provider", "providers.runway.model_concurrency.kling=1", "model_concurrency.kling", "not a model of runway"),
    case("limit-zero", "providers.runway.model_concurrency.gen4_turbo=0", "model_concurrency.gen4_turbo=0", "1 or more", sub=True),
    case("limit-table-negative", "providers.runway.model_concurrency={gen4_turbo:-1}", "model_concurrency.gen4_turbo=-1", "1 or more"),
    case("simulate-unknown", "simulate=maybe", "simulate=maybe", "no installed provider is named 'maybe'"),
    case("simulate-list-unknown", "simulate=[runway,nope]", "simulate=nope", "no installed provider is named 'nope'"),
    case("price-unknown-model", "prices.nope=1", "unknown model 'nope'", "prices.nope"),
    case("price-negative", "prices.gen4_turbo=-1", "prices.gen4_turbo=-1", "is not a price"),
    case("price-text", "prices.gen4_turbo=cheap", "prices.gen4_turbo='cheap'", "is not a price"),
    case("base-url-not-url", "providers.runway.base_url=notaurl", "providers.runway.base_url='notaurl'", "http:// or https://", sub=True),
    case("base-url-empty", "providers.runway.base_url=", "providers.runway.base_url=''", "http:// or https://"),
    case("endpoint-ftp", "providers.fal.endpoints.storage=ftp://example.com", "providers.fal.endpoints.storage='ftp://example.com'",
         "http:// or https://"),
    case("mode-unknown", "mode=bogus", "mode=bogus", "its modes"),
    # -- paths -----------------------------------------------------------------------------------
    case("state-dir-empty", "state_dir=", "state_dir=''", "a path", sub=True),
    case("outputs-dir-empty", "outputs_dir=", "outputs_dir=''", "a path"),
    case("db-empty", "db=", "db=''", "a path"),
    case("outputs-dir-is-file", "outputs_dir=afile", "outputs_dir=afile is a file", "a folder", sub=True),
    case("outputs-dir-under-file", "outputs_dir=afile/clips", "outputs_dir=afile/clips", "is a file, not a folder"),
    case("state-dir-is-file", "state_dir=afile", "state_dir=afile is a file", "a folder"),
    case("db-is-folder", "db=outputs", "db=outputs is a folder", "a ledger file"),
    case("db-under-file", "db=afile/ledger.db", "db=afile/ledger.db", "is a file, not a folder"),
    case("outputs-dir-unwritable", "outputs_dir=/proc/clips", "outputs_dir=/proc/clips", "not writable"),
    case("state-dir-unwritable", "state_dir=/proc/runner", "state_dir=/proc/runner", "not writable", sub=True),
    case("name-empty", "name=", "name=''", "a sweep name"),
    case("name-path", "name=a/b", "name=a/b", "no / or \\", sub=True),
    case("name-dots", "name=..", "name=..", "not . or .."),
    case("sim-config-missing", ["sim_config=/nonexistent.yaml", "simulate=true"], "sim_config=/nonexistent.yaml", "is not a file"),
    # -- spending --------------------------------------------------------------------------------
    case("over-confirm", "confirm_over_usd=0.1", "$0.50 for 2 priced job(s)", "confirm_over_usd=0.1", sub=True),
    case("over-confirm-zero", "confirm_over_usd=0", "$0.50", "confirm_over_usd=0"),
    case("over-confirm-unpriced", ["confirm_over_usd=0.1", "-m", "model=gen4_turbo,kling"],
         "$0.50 for 2 priced job(s) and 2 job(s) of unknown price", "confirm_over_usd=0.1"),
    case("over-budget", "budget_usd=0.1", "budget_usd=0.1", "over budget"),
    case("budget-unpriced", ["model=kling", "budget_usd=0.01"], "budget_usd=0.01", "no known price"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A folder whose ledger and outputs a real run filled, and the simulator it ran against."""
    from runner.sim import SimConfig, Simulator

    folder = tmp_path_factory.mktemp("matrix")
    (folder / "afile").write_text("not a folder\n")
    with Simulator(SimConfig(latency={"default": {"min": 0.03, "max": 0.08}}, pending_s=0.01)) as sim:
        first = run_cli(*BASE, *sim_args(sim), cwd=folder, env=sim_env(sim))
        assert first.returncode == 0, first.stderr
        yield {"folder": folder, "sim": sim, "args": sim_args(sim), "env": sim_env(sim)}


def snapshot(world: dict[str, Any]) -> dict[str, Any]:
    """What a refused command must leave as it was: the ledger's files, every file under outputs/,
    and the simulator's record of submissions."""
    folder = world["folder"]
    files = {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in [*folder.glob(".runner/ledger.db*"), *(folder / "outputs").rglob("*")] if p.is_file()}
    return {"files": files, "sim": len(world["sim"].ledger())}


def in_process(args: list[str], env: dict[str, str], folder: Path, monkeypatch: pytest.MonkeyPatch,
               capsys: pytest.CaptureFixture) -> tuple[int, str]:
    """`runner.app.main(args)` as the command runs it, in `folder` with `env`: (exit status, output)."""
    with monkeypatch.context() as m:
        for name in KEYLESS:
            m.delenv(name, raising=False)
        for name, value in env.items():
            m.setenv(name, value)
        m.setenv(RUN_ID_ENV, "matrix")
        m.setattr(sys, "argv", ["runner", *args])
        m.chdir(folder)
        try:
            app.main(args)
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_the_matrix_covers_the_classes():
    assert len(CASES) >= 90 and len({c.id for c in CASES}) == len(CASES)
    assert sum(c.sub for c in CASES) >= 25  # a good share as real commands


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_a_bad_input_is_refused_with_one_message_and_nothing_changes(bad: Case, world, monkeypatch, capsys):
    before = snapshot(world)
    flags = [a for a in bad.args if a in ("-m", "--multirun")]  # before the overrides, as a user types them
    args = [*flags, *BASE, *world["args"], *(a for a in bad.args if a not in flags)]
    env = {k: v for k, v in {**world["env"], **bad.env}.items() if v is not None}
    if bad.sub:
        result = run_cli(*args, cwd=world["folder"], env=env)
        status, output = result.returncode, result.stdout + result.stderr
    else:
        status, output = in_process(args, env, world["folder"], monkeypatch, capsys)
    assert status == 2, output
    assert "Traceback" not in output and "HYDRA_FULL_ERROR" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    for expected in bad.expect:
        assert expected in errors[0], (expected, errors[0])
    for secret in world["env"].values():
        assert secret not in output
    assert "0123456789abcdef" not in output  # the keys the cases give, or paste into settings
    assert snapshot(world) == before


def test_a_plan_over_confirm_over_usd_asks_on_a_terminal(world):
    """On a terminal the run asks; `n` (or nothing) refuses with nothing sent, `y` runs it."""
    before = snapshot(world)
    args = [*BASE, *world["args"], "confirm_over_usd=0.1", "seed=7"]
    refused, output = _on_terminal(args, world["env"], world["folder"], "n\n")
    assert refused == 2 and "This run is estimated at $0.50 for 2 priced job(s), over confirm_over_usd=0.1. Run it? [y/N]" in output
    assert "not confirmed" in output and snapshot(world) == before
    confirmed, output = _on_terminal(args, world["env"], world["folder"], "y\n")
    assert confirmed == 0, output
    assert len(world["sim"].ledger()) == before["sim"] + 2


def _on_terminal(args: list[str], env: dict[str, str], folder: Path, answer: str) -> tuple[int, str]:
    """Run the command with a terminal on stdin, answer its question, and read everything it said."""
    controller, terminal = pty.openpty()
    full = {k: v for k, v in os.environ.items() if k not in KEYLESS} | env
    proc = subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=folder, env=full, stdin=terminal,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    os.close(terminal)
    os.write(controller, answer.encode())  # kept by the terminal until the run reads it
    output, _ = proc.communicate(timeout=120)
    os.close(controller)
    return proc.returncode, output
