"""Files checked for what they are, prompt files for what they hold, the ledger for whose it is: every
bad one refused by the real CLI with one message (exit status 2, no traceback) naming the field or
file, and the value, before anything is written: the ledger, the outputs folder and the simulator's
state are byte for byte what they were. Then what must work: a ledger found from a subfolder, an
older ledger upgraded, and Hydra's joblib launcher with simulate=true."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner import store as S
from runner.locate import outputs_beside, runner_state_dir
from runner.migrations import APPLICATION_ID, m001_initial
from runner.sim import read_ledger
from runner.sim.media import make_audio, make_image, make_video
from tests.conftest import run_cli
from tests.helpers import ledger_rows

FAST = "latency: {default: {min: 0.03, max: 0.06}}\npending_s: 0.01\n"
POLLS = ["providers.runway.min_poll_interval_s=0.05", "providers.fal.min_poll_interval_s=0.05"]


def _png() -> bytes:
    return make_image("still", width=64, height=64)


def _encoded(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(_png())).convert("RGB").save(out, fmt)
    return out.getvalue()


def _corrupt_idat(png: bytes) -> bytes:
    """The PNG with one byte of its pixel data changed: whole, but its checksum fails."""
    at = png.index(b"IDAT") + 12
    return png[:at] + bytes([png[at] ^ 0xFF]) + png[at + 1:]


def _file(name: str, data: bytes | Callable[[Path], None]) -> Callable[[Path], str]:
    """An input written into the project folder; its name as a prompt gives it."""
    def write(project: Path) -> str:
        path = project / name
        if callable(data):
            data(path)
        else:
            path.write_bytes(data)
        return name
    return write


def _sparse(size: int) -> Callable[[Path], None]:
    """A PNG's first bytes, then a hole up to `size` (too large to read, never read)."""
    def write(path: Path) -> None:
        path.write_bytes(_png())
        os.truncate(path, size)
    return write


def _data_uri(mime: str, data: bytes) -> Callable[[Path], str]:
    return lambda project: f"data:{mime};base64,{base64.b64encode(data).decode()}"


@dataclass
class Case:
    """One bad input: the prompt row that gives it (the row gets its input from `inputs`), the model,
    and what the message must say besides exit status 2."""

    name: str
    model: str
    row: dict[str, Any]
    expect: tuple[str, ...]
    inputs: dict[str, Callable[[Path], str]] = field(default_factory=dict)  # prompt field -> writes the input, gives its value

    def __str__(self) -> str:
        return self.name


def _image(name: str, writer: Callable[[Path], str], model: str, *expect: str, field_name: str = "image", text: str = "a slow push-in",
           **given: str) -> Case:
    return Case(name, model, {"id": "shot", "text": text, **given}, ("prompts.jsonl:1", f"{field_name}=", *expect), {field_name: writer})


def _url(name: str, url: str, model: str, *expect: str) -> Case:
    return Case(name, model, {"id": "shot", "text": "a slow push-in", "image": url}, ("prompts.jsonl:1", "image=", url[:40], *expect))


def _prompt(name: str, row: dict[str, Any], *expect: str, model: str = "kling") -> Case:
    row = {"image": "${asset:sneaker.png}", **row}
    return Case(name, model, row, ("prompts.jsonl:1", *expect))


FILES = [
    _image("png-truncated-to-40-bytes", _file("cut.png", _png()[:40]), "kling", "cut.png", "truncated or corrupt image/png"),
    _image("png-truncated-runway", _file("cut.png", _png()[:40]), "gen4_turbo", "cut.png", "truncated or corrupt image/png"),
    _image("png-cut-mid-pixels", _file("half.png", _png()[: len(_png()) // 2]), "kling", "half.png", "truncated or corrupt image/png"),
    _image("png-pixel-checksum-fails", _file("crc.png", _corrupt_idat(_png())), "kling", "crc.png", "truncated or corrupt image/png"),
    _image("jpeg-cut-in-half", _file("half.jpg", _encoded("JPEG")[:300]), "gen4_turbo", "half.jpg", "truncated or corrupt image/jpeg"),
    _image("webp-truncated", _file("cut.webp", _encoded("WEBP")[:40]), "kling", "cut.webp", "truncated or corrupt image/webp"),
    _image("empty-file", _file("empty.png", b""), "kling", "empty.png", "is an empty file"),
    _image("text-named-png", _file("notes.png", b"just some notes, not a picture"), "kling", "notes.png", "not a recognised media file"),
    _image("gif-to-runway", _file("anim.gif", _encoded("GIF")), "gen4_turbo", "anim.gif", "is image/gif; allowed: image/jpeg, image/png, image/webp"),
    _image("missing-file", lambda project: "nowhere/still.png", "kling", "nowhere/still.png", "does not exist"),
    _image("folder-as-image", _file("stills", lambda path: path.mkdir()), "kling", "stills", "is not a file", "is a folder"),
    _image("device-as-image", lambda project: "/dev/null", "gen4_turbo", "/dev/null", "is not a file"),
    _image("150-MB-image-to-fal", _file("huge.png", _sparse(150_000_000)), "kling", "huge.png", "is 150.0 MB; allowed: at most 100.0 MB",
           "upload flow up to 100.0 MB"),
    _image("9-MB-image-to-veo2", _file("big.png", _sparse(9_000_000)), "veo2", "big.png", "is 9.0 MB; allowed: at most 8.0 MB"),
    _image("210-MB-image-to-runway", _file("huge.png", _sparse(210_000_000)), "gen4_turbo", "huge.png", "is 210.0 MB; allowed: at most 200.0 MB",
           "inline as a data URI up to 3.3 MB"),
    _image("png-as-end-image", _file("end.png", _png()[:100]), "hailuo", "end.png", "truncated or corrupt image/png", field_name="end_image",
           image="${asset:sneaker.png}"),
    _image("video-cut-before-its-frames", _file("clip.mp4", make_video("in", 2.0)[:3000]), "aleph", "clip.mp4", "truncated or corrupt video/mp4",
           field_name="video"),
    _image("video-missing-its-last-frames", _file("clip.mp4", make_video("in", 2.0)[:-500]), "aleph", "clip.mp4",
           "truncated video/mp4 file:", "frames its index lists are there", field_name="video"),
    _image("picture-as-video", _file("clip.mp4", _png()), "aleph", "clip.mp4", "is image/png; allowed: video/", field_name="video"),
    _image("audio-truncated", _file("voice.wav", make_audio("in", 1.0)[:30]), "voice_isolation", "voice.wav", "truncated or corrupt audio/wav",
           field_name="audio_input", text=""),
    _image("data-uri-bad-base64", lambda project: "data:image/png;base64,@@not-base64@@", "kling", "data:image/png", "invalid base64"),
    _image("data-uri-says-png-holds-jpeg", _data_uri("image/png", _encoded("JPEG")), "kling", "data:image/png", "says image/png but holds image/jpeg"),
    _image("data-uri-truncated-png", _data_uri("image/png", _png()[:60]), "kling", "data:image/png", "truncated or corrupt image/png"),
]

URLS = [
    _url("ftp-url", "ftp://example.com/still.png", "kling", "is a ftp:// URL"),
    _url("file-url", "file:///etc/passwd", "kling", "is a file:// URL"),
    _url("url-without-host", "https:///still.png", "kling", "without a host name"),
    _url("url-with-space", "https://example.com/my still.png", "kling", "spaces or control characters"),
    _url("url-invalid-port", "https://example.com:99999/still.png", "kling", "invalid port"),
    _url("http-url-to-runway", "http://example.com/still.png", "gen4_turbo", "is a http:// URL", "https://"),
    _url("ip-host-to-runway", "https://203.0.113.9/still.png", "gen4_turbo", "names its host by IP address"),
    _url("2100-char-url-to-runway", "https://example.com/" + "a" * 2100 + ".png", "gen4_turbo", "allowed: at most 2048"),
]

PROMPTS = [
    _prompt("no-id", {"text": "hi"}, "a prompt needs an id", "got none"),
    _prompt("empty-id", {"id": "", "text": "hi"}, "a prompt needs an id", "got ''"),
    _prompt("blank-id", {"id": "   ", "text": "hi"}, "a prompt needs an id", "got '   '"),
    _prompt("id-with-slash", {"id": "../escape", "text": "hi"}, "id '../escape' is not allowed", "no / or \\"),
    _prompt("id-with-backslash", {"id": "a\\b", "text": "hi"}, "id 'a\\\\b' is not allowed"),
    _prompt("id-dot-dot", {"id": "..", "text": "hi"}, "id '..' is not allowed"),
    _prompt("id-of-101-characters", {"id": "x" * 101, "text": "hi"}, "id 'xxxxxxxx", "1 to 100"),
    _prompt("id-with-newline", {"id": "two\nlines", "text": "hi"}, "id 'two\\nlines' is not allowed"),
    _prompt("id-a-list", {"id": ["a"], "text": "hi"}, "id ['a'] is not a name"),
    _prompt("id-a-float", {"id": 1.5, "text": "hi"}, "id 1.5 is not a name"),
    _prompt("text-of-100-KB", {"id": "long", "text": "a" * 100_000}, "prompt 'long': text is 100,000 characters", "at most 20,000"),
    _prompt("text-over-runway-limit", {"id": "long", "text": "b" * 1500}, "prompt='bbbb", "(1,500 characters)", "at most 1000 characters",
            model="gen4_turbo"),
    _prompt("text-a-number", {"id": "n", "text": 5}, "prompt 'n': text must be text, not int"),
]


def _duplicate_ids(project: Path) -> list[dict[str, Any]]:
    return [{"id": "same", "text": "one", "image": "${asset:sneaker.png}"}, {"id": "same", "text": "two", "image": "${asset:sneaker.png}"}]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder holding a runner ledger (empty, valid) and a fast simulator config."""
    folder = tmp_path / "project"
    (folder / ".runner").mkdir(parents=True)
    S.open_ledger(folder / ".runner" / "ledger.db").close()
    (folder / "fast.yaml").write_text(FAST)
    return folder


def _snapshot(project: Path) -> dict[str, str]:
    """Every file and folder a run may write outside Hydra's own logs: the ledger (with its WAL),
    the simulator's state, the outputs."""
    found = {}
    for top in (project / ".runner", project / "outputs"):
        for path in [top, *top.rglob("*")] if top.exists() else []:
            relative = path.relative_to(project)
            if "hydra" in relative.parts:
                continue
            found[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return found


def _run(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli(*args, "simulate=true", f"sim_config={project / 'fast.yaml'}", "quiet=true", *POLLS, cwd=project)


def _refused(result: subprocess.CompletedProcess, *expect: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    message = result.stderr.strip().splitlines()
    assert message and message[0].startswith("error: "), result.stderr
    for text in expect:
        assert text in result.stderr, (text, result.stderr)


@pytest.mark.parametrize("case", FILES + URLS + PROMPTS, ids=str)
def test_a_bad_input_file_or_prompt_is_refused_before_anything_is_written(project, case):
    row = dict(case.row)
    for name, write in case.inputs.items():
        row[name] = write(project)
    (project / "prompts.jsonl").write_text(json.dumps(row) + "\n")
    before = _snapshot(project)
    result = _run(project, f"model={case.model}", "prompt_set.file=prompts.jsonl")
    _refused(result, *case.expect)
    assert _snapshot(project) == before


def test_a_prompt_id_used_twice_is_refused_naming_both_lines(project):
    (project / "prompts.jsonl").write_text("".join(json.dumps(row) + "\n" for row in _duplicate_ids(project)))
    before = _snapshot(project)
    _refused(_run(project, "model=kling", "prompt_set.file=prompts.jsonl"), "prompts.jsonl:2: prompt id 'same' is used twice (first on line 1)")
    assert _snapshot(project) == before


# -- the ledger: ours, or left untouched ------------------------------------------------------------


def _random_bytes(path: Path) -> None:
    path.write_bytes(hashlib.sha256(b"seed").digest() * 200)


def _sqlite(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def _foreign_jobs_table(path: Path) -> None:
    _sqlite(path, "create table jobs (id integer primary key, title text)", "insert into jobs (title) values ('mine')")


def _another_application(path: Path) -> None:
    _sqlite(path, "pragma application_id = 1234", "create table notes (body text)")


def _llm_like(path: Path) -> None:
    """Another tool's database that keeps `_migrations` too, with a name the runner also uses."""
    _sqlite(path, "create table _migrations (name text primary key, applied_at text)",
            "insert into _migrations values ('m001_initial', '2026-01-01'), ('m002_conversations', '2026-01-01')",
            "create table responses (id text)")


def _migrations_but_no_jobs(path: Path) -> None:
    _sqlite(path, "create table _migrations (name text primary key, applied_at text)",
            "insert into _migrations values ('m001_initial', '2026-01-01')")


def _newer_runner(path: Path) -> None:
    S.open_ledger(path).close()
    _sqlite(path, "insert into _migrations values ('m999_from_a_later_version', '2030-01-01')")


def _folder(path: Path) -> None:
    path.mkdir()


LEDGERS = [
    pytest.param(_random_bytes, ("is not an SQLite database at all",), id="random-bytes"),
    pytest.param(_foreign_jobs_table, ("an SQLite database without the runner's schema (tables: jobs)",), id="foreign-jobs-table"),
    pytest.param(_another_application, ("another application (application_id 1234)",), id="another-application"),
    pytest.param(_llm_like, ("whose tables are not the runner's",), id="other-tool-with-migrations"),
    pytest.param(_migrations_but_no_jobs, ("whose tables are not the runner's",), id="migrations-but-no-jobs"),
    pytest.param(_newer_runner, ("written by a newer version of the runner", "m999_from_a_later_version"), id="newer-runner"),
]


@pytest.mark.parametrize("make, expect", [*LEDGERS, pytest.param(_folder, ("is a folder",), id="folder")])
def test_a_file_at_the_ledger_path_that_is_not_ours_is_refused_untouched(project, make, expect):
    ledger = project / ".runner" / "ledger.db"
    ledger.unlink()
    make(ledger)
    before = _snapshot(project)
    _refused(_run(project, "model=kling", "prompt_set=ads"), "db=.runner/ledger.db", *expect)
    assert _snapshot(project) == before  # not a byte: not even the switch to WAL
    assert not (project / ".runner" / "simulator.jsonl").exists()


@pytest.mark.parametrize("make, expect", LEDGERS)
def test_the_companion_cli_refuses_the_same_files_untouched(project, make, expect):
    ledger = project / ".runner" / "ledger.db"
    ledger.unlink()
    make(ledger)
    before = _snapshot(project)
    result = subprocess.run([sys.executable, "-m", "runner.cli", "status"], cwd=project, capture_output=True, text=True,
                            timeout=120, env={k: v for k, v in os.environ.items() if k != "RUNNER_STATE_DIR"})
    _refused(result, str(ledger), "--db PATH", *expect)
    assert _snapshot(project) == before


# -- what must work -----------------------------------------------------------------------------------


def test_valid_images_videos_and_audio_plan(project):
    """The counterparts of the refused files: whole files of each kind pass the same checks."""
    (project / "still.jpg").write_bytes(_encoded("JPEG"))
    (project / "still.webp").write_bytes(_encoded("WEBP"))
    (project / "clip.mp4").write_bytes(make_video("in", 2.0))
    (project / "voice.wav").write_bytes(make_audio("in", 1.0))
    for model, row in [("kling", {"image": "still.jpg"}), ("gen4_turbo", {"image": "still.webp"}), ("aleph", {"video": "clip.mp4"}),
                       ("voice_isolation", {"audio_input": "voice.wav"})]:
        (project / "prompts.jsonl").write_text(json.dumps({"id": "ok", "text": "" if model == "voice_isolation" else "hi", **row}) + "\n")
        result = run_cli(f"model={model}", "prompt_set.file=prompts.jsonl", "dry_run=true", cwd=project)
        assert result.returncode == 0, (model, result.stderr)


def test_the_ledger_is_found_from_a_subfolder_as_git_finds_its_repository(project):
    deeper = project / "shots" / "day2"
    deeper.mkdir(parents=True)
    assert runner_state_dir(deeper, environ={}) == str(project / ".runner")
    assert runner_state_dir(project, environ={}) == ".runner"
    assert runner_state_dir(deeper, environ={"RUNNER_STATE_DIR": "elsewhere"}) == "elsewhere"
    assert outputs_beside(str(project / ".runner"), deeper) == str(project / "outputs")

    first = _run(project, "model=kling", "prompt_set=animate")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ledger: .runner/ledger.db" in first.stdout
    second = run_cli("model=pika", "prompt_set=animate", "simulate=true", f"sim_config={project / 'fast.yaml'}", "quiet=true", *POLLS, cwd=deeper)
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"ledger: {project / '.runner' / 'ledger.db'}" in second.stdout
    assert f"outputs: {project / 'outputs' / 'animate'}" in second.stdout
    assert not (deeper / ".runner").exists() and not (deeper / "outputs").exists()
    rows = ledger_rows(project)
    assert Counter(r["model"] for r in rows if r["state"] == "downloaded") == {"fal-kling-v2.1-standard": 2, "fal-pika-v2.2": 2}
    again = run_cli("model=kling", "prompt_set=animate", "simulate=true", f"sim_config={project / 'fast.yaml'}", "quiet=true", *POLLS, cwd=deeper)
    assert again.returncode == 0 and len(ledger_rows(project)) == 4  # the first run's jobs found: nothing generated again
    assert len(read_ledger(project / ".runner" / "simulator.jsonl")) == 4
    listed = subprocess.run([sys.executable, "-m", "runner.cli", "sweeps"], cwd=deeper, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "fal-pika-v2.2" in listed.stdout and "fal-kling-v2.1-standard" in listed.stdout


def test_runner_state_dir_names_the_ledger_and_state_dir_overrides_it(project, tmp_path):
    elsewhere = tmp_path / "shared-state"
    run = ["model=kling", "prompt_set=animate", "simulate=true", f"sim_config={project / 'fast.yaml'}", "quiet=true", *POLLS]
    by_env = run_cli(*run, cwd=project, env={"RUNNER_STATE_DIR": str(elsewhere)})
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    assert f"ledger: {elsewhere / 'ledger.db'}" in by_env.stdout
    conn = S.open_ledger(elsewhere / "ledger.db")
    assert len(S.rows(conn)) == 2 and ledger_rows(project) == []  # not the one found here
    conn.close()
    given = run_cli(*run, f"state_dir={tmp_path / 'given'}", cwd=project, env={"RUNNER_STATE_DIR": str(elsewhere)})
    assert given.returncode == 0, given.stdout + given.stderr
    assert f"ledger: {tmp_path / 'given' / 'ledger.db'}" in given.stdout and ledger_rows(project) == []


def test_an_older_ledger_is_upgraded_in_place_and_runs(tmp_path):
    import sqlite_utils

    (tmp_path / ".runner").mkdir()
    path = tmp_path / ".runner" / "ledger.db"
    db = sqlite_utils.Database(path)
    db["_migrations"].create({"name": str, "applied_at": str}, pk="name")
    m001_initial(db)
    db["_migrations"].insert({"name": "m001_initial", "applied_at": "2026-01-01"})
    db.conn.close()
    (tmp_path / "fast.yaml").write_text(FAST)
    result = _run(tmp_path, "model=kling", "prompt_set=animate")
    assert result.returncode == 0, result.stdout + result.stderr
    conn = sqlite3.connect(path)
    assert conn.execute("pragma application_id").fetchone()[0] == APPLICATION_ID
    assert "m007_application_id" in {r[0] for r in conn.execute("select name from _migrations")}
    assert Counter(r[0] for r in conn.execute("select state from jobs")) == {"downloaded": 2}
    conn.close()


def test_joblib_launcher_with_simulate_true_completes_a_multirun(tmp_path):
    (tmp_path / "fast.yaml").write_text(FAST)
    result = run_cli("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=kling,gen4_turbo", "prompt_set=animate", "duration=5",
                     "simulate=true", f"sim_config={tmp_path / 'fast.yaml'}", "quiet=true", *POLLS, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = ledger_rows(tmp_path)
    assert Counter((r["provider"], r["state"]) for r in rows) == {("fal", "downloaded"): 2, ("runway", "downloaded"): 2}
    billed = read_ledger(tmp_path / ".runner" / "simulator.jsonl")  # one simulator served both workers: each job paid once
    assert sorted(e["task_id"] for e in billed) == sorted(r["task_id"] for r in rows)
