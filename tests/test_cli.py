"""The command line as a user meets it: plans, help, and one clear message for each mistake."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from runner.config import RunConfig

from tests.conftest import run_cli


def test_dry_run_prints_the_plan_with_costs(tmp_path):
    result = run_cli("model=gen4_turbo", "prompt_set=animate", "duration=5", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["job", "model", "mode", "prompt", "params", "est.", "$"]
    assert sum("gen4_turbo" in line and "$0.25" in line for line in lines) == 2
    assert "2 jobs, estimated total $0.50" in result.stdout
    assert not (tmp_path / "outputs").exists() and not (tmp_path / ".runner" / "ledger.db").exists()


def test_help_lists_config_groups(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0
    for expected in ("model: ", "kling", "gen45", "prompt_set: ads, animate, nature", "provider: fal, runway"):
        assert expected in result.stdout


def test_help_explains_every_setting_in_one_line(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ") and line.split()}
    for setting in [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("providers", "sweep", "native", "prices")]:
        assert setting in lines, setting
    assert "generations per job before a retryable failure becomes final [3] (a number from 1 to 100)" in lines["max_attempts"]
    assert "[20000]" in lines["max_jobs"] and "[50.0]" in lines["confirm_over_usd"]
    for nested in ("providers.<name>.concurrency", "providers.<name>.model_concurrency.<model>", "prices.<model>", "sweep.duration"):
        assert nested in lines, nested


def test_version_is_the_runners(tmp_path):
    result = run_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"video-runner {version('video-runner')}"


def test_tab_completion_of_the_installed_command(tmp_path):
    """`eval "$(vrun --shell-completion install=bash)"` as README says, then bash completes settings
    and options: the function bash calls on <TAB> is run for a partly typed command line."""
    vrun = Path(sys.executable).parent / "vrun"
    script = subprocess.run([vrun, "--shell-completion", "install=bash"], capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    complete = (f'{script}\nPATH="{vrun.parent}:$PATH"\n'
                'COMP_LINE="vrun prompt_set=an"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE); COMP_CWORD=1\n'
                'hydra_bash_completion; echo "${COMPREPLY[@]}"\n'
                'COMP_LINE="vrun max_att"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE); COMP_CWORD=1\n'
                'hydra_bash_completion; echo "${COMPREPLY[@]}"\n')
    shown = subprocess.run(["bash", "-c", complete], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert shown.stdout.splitlines() == ["prompt_set=animate", "max_attempts="], shown.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["durration=5"], "unknown setting 'durration' in 'durration=5' (did you mean 'duration'?)"),
        (["model=klingg"], "unknown model 'klingg' (from the command line) (did you mean 'kling'?)"),
        (["providers.fal.concurency=3"], "did you mean 'concurrency'?"),
        (["model=kling", "duration=7"], "duration=7 is not allowed for model fal-kling-v2.1-standard (image-to-video) (from the config or command line); allowed: 5, 10"),
        (["model=kling", "prompt_set=nature"], "is image-to-video only and needs image"),
        (["model=pika", "prompt_set=nature", "budget_usd=0.5"], "the estimated total $0.60 is over budget_usd=0.5"),
    ],
)
def test_user_mistakes_get_one_message_and_exit_2(tmp_path, args, expected):
    result = run_cli(*args, "dry_run=true", cwd=tmp_path)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_unknown_prompt_set_lists_the_available_ones(tmp_path):
    result = run_cli("prompt_set=adz", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 2
    assert "prompt_set=adz is not an option of prompt_set (from the command line) (did you mean 'ads'?); options: ads, animate, nature" in result.stderr
    assert "Traceback" not in result.stderr


def test_multirun_plans_every_point(tmp_path):
    result = run_cli("-m", "model=gen4_turbo,hailuo", "prompt_set=animate", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gen4_turbo" in result.stdout and "fal-hailuo-02-standard" in result.stdout


SECRET = "key_0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("args", [
    [f"+providers.runway.api_key={SECRET}"],
    [f"++providers.fal.token={SECRET}"],
    [f"providers.runway.key_env={SECRET}"],
    [f"+api_key={SECRET}"],
])
def test_a_key_in_the_config_is_refused_without_echoing_it(tmp_path, args):
    result = run_cli("model=gen4_turbo", "prompt_set=animate", *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not any(SECRET in p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())


def test_settings_and_accounts_never_show_their_key():
    from runner.providers import Settings
    from runner.run import Account

    assert SECRET not in repr(Settings("https://api.example", SECRET)) + repr(Account("https://api.example", SECRET))


def test_free_form_tables_need_no_plus(tmp_path):
    result = run_cli("model=kling", "prompt_set=ads", "prices.kling=0.4", "native.cfg_scale=0.7", "dry_run=true", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "3 jobs, estimated total $1.20" in result.stdout


@pytest.mark.parametrize("args, planned, saved", [
    (["model=gen4_turbo", "prompt_set=animate", "duration=5"], "2 jobs, estimated total $0.50", "hydra/*/*/.hydra/config.yaml"),
    (["-m", "model=gen4_turbo,hailuo", "prompt_set=animate"], "4 jobs, estimated total $1.04", "hydra/multirun/*/*/multirun.yaml"),
])
def test_a_run_or_multirun_composes_the_config_once(tmp_path, monkeypatch, capsys, args, planned, saved):
    # hydra.main composes twice (once only to read hydra.mode); the runner's own path, once.
    from hydra._internal.hydra import Hydra

    from runner import app

    composed = []
    compose = Hydra.compose_config
    monkeypatch.setattr(Hydra, "compose_config", lambda self, *a, **k: composed.append(k["run_mode"]) or compose(self, *a, **k))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNNER_RUN_ID", "test")
    app.main([*args, "dry_run=true"])
    assert len(composed) == 1
    assert planned in capsys.readouterr().out
    assert list((tmp_path / ".runner").glob(saved))  # Hydra's run or sweep folder, as before


def test_a_mistake_found_while_planning_leaves_no_folder_behind(tmp_path):
    # The budget cannot count Kling's unknown price: found after Hydra made its run folder, which goes.
    result = run_cli("model=kling", "prompt_set=ads", "budget_usd=0.01", cwd=tmp_path)
    assert result.returncode == 2 and "budget_usd=0.01" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / ".runner"
    kept.mkdir()
    (kept / "mine.txt").write_text("a user's file")
    assert run_cli("model=kling", "prompt_set=ads", "budget_usd=0.01", cwd=tmp_path).returncode == 2
    assert sorted(p.name for p in kept.iterdir()) == ["mine.txt"]
    (kept / "mine.txt").unlink()  # an empty state folder the user made stays too
    assert run_cli("model=kling", "prompt_set=ads", "budget_usd=0.01", cwd=tmp_path).returncode == 2
    assert kept.is_dir() and list(kept.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "-1", "abc"])
def test_the_simulator_refuses_a_port_that_is_none(tmp_path, port):
    result = subprocess.run([sys.executable, "-m", "runner.sim", "--port", port], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "is not a port number (0 to 65535)" in result.stderr and "Traceback" not in result.stderr
