"""Prompt files: the three formats, paths and bundled images, every per-row error with its file and
line, the plan summary, and the shape of a 100,000-job plan."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from runner import prompts
from runner.app import plan
from runner.errors import UserError
from runner.report import format_plan

ROOT = Path(__file__).resolve().parent.parent
LIGHTHOUSE = ROOT / "runner" / "assets" / "lighthouse.png"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def _error(*overrides: str) -> str:
    with pytest.raises(UserError) as err:
        plan(list(overrides))
    return str(err.value)


# -- the formats ---------------------------------------------------------------------------------------


def test_jsonl_rows_with_inputs_params_and_native(tmp_path):
    folder = tmp_path / "shots"
    folder.mkdir()
    (folder / "still.png").write_bytes(LIGHTHOUSE.read_bytes())
    file = _write(folder / "mine.jsonl", """
        {"id": "a", "text": "the beam turns", "image": "still.png"}

        {"id": "b", "text": "waves roll in", "image": "${asset:lighthouse.png}", "params": {"duration": 10}, "native": {"seed": 4}}
    """)
    p = plan(["model=gen4_turbo", f"prompt_set.file={file}", "duration=5"])
    jobs = {job.prompt_id: job for job in p.jobs}
    assert set(jobs) == {"a", "b"}
    assert jobs["a"].inputs[0].source == str(folder / "still.png")  # resolved from the file's folder
    assert jobs["b"].inputs[0].source == str(LIGHTHOUSE)
    assert (jobs["a"].payload["duration"], jobs["b"].payload["duration"], jobs["b"].payload["seed"]) == (5, 10, 4)
    assert {job.sweep for job in p.jobs} == {"mine"}  # named after the file


def test_csv_columns_with_params_native_and_several_references(tmp_path):
    file = _write(tmp_path / "refs.csv", f"""
        id,text,reference_images,params.duration,params.resolution,native.generate_audio
        first,"a lighthouse, at dusk",{LIGHTHOUSE} | ${{asset:portrait.jpg}},8,1080p,
        second,a lighthouse at dawn,${{asset:sneaker.png}},,,false
    """)
    jobs = {job.prompt_id: job for job in plan(["model=fal-veo3.1", f"prompt_set.file={file}"]).jobs}
    assert {job.mode for job in jobs.values()} == {"reference-to-video"}
    assert jobs["first"].payload["prompt"] == "a lighthouse, at dusk"
    assert (jobs["first"].payload["duration"], jobs["first"].payload["resolution"]) == ("8s", "1080p")
    assert len(jobs["first"].inputs) == 2 and len(jobs["second"].inputs) == 1
    assert jobs["second"].payload["generate_audio"] is False  # a cell is read as JSON where it is JSON


def test_yaml_list_and_the_bundled_form_with_a_name(tmp_path):
    listed = _write(tmp_path / "listed.yaml", """
        - id: one
          text: fog over a forest
        - {id: 2, text: a storm}
    """)
    named = _write(tmp_path / "other.yaml", """
        name: dawn
        description: the bundled sets' form
        prompts:
          - id: one
            text: fog over a forest
    """)
    assert [job.prompt_id for job in plan(["model=gen4.5", f"prompt_set.file={listed}"]).jobs] == ["one", "2"]
    assert {job.sweep for job in plan(["model=gen4.5", f"prompt_set.file={named}"]).jobs} == {"dawn"}
    renamed = plan(["model=gen4.5", f"prompt_set.file={named}", "prompt_set.name=mine"]).jobs
    assert {job.sweep for job in renamed} == {"mine"}


@pytest.mark.parametrize("name, separator", [("sheet.csv", ","), ("sheet.csv", ";"), ("sheet.tsv", "\t"), ("sheet.csv", "\t")])
def test_spreadsheet_exports_are_read_as_saved(tmp_path, name, separator):
    """A spreadsheet's CSV: a byte-order mark first, commas in the text, and cells separated by
    whatever its locale uses (semicolons where the decimal mark is a comma, tabs)."""
    rows = [["id", "text", "params.duration"], ["dusk", "a lighthouse, at dusk; calm", "10"], ["dawn", "a pier", ""]]
    lines = (separator.join(f'"{cell}"' if separator in cell or "," in cell else cell for cell in row) for row in rows)
    file = tmp_path / name
    file.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode())
    jobs = {job.prompt_id: job for job in plan(["model=gen4.5", f"prompt_set.file={file}", "duration=5"]).jobs}
    assert jobs["dusk"].payload["promptText"] == "a lighthouse, at dusk; calm"
    assert (jobs["dusk"].payload["duration"], jobs["dawn"].payload["duration"]) == (10, 5)


@pytest.mark.parametrize("name, body", [
    ("bom.jsonl", '{"id": "a", "text": "fog"}\n'),
    ("bom.yaml", "- id: a\n  text: fog\n"),
])
def test_a_byte_order_mark_is_skipped(tmp_path, name, body):
    file = tmp_path / name
    file.write_bytes(b"\xef\xbb\xbf" + body.encode())
    assert [job.prompt_id for job in plan(["model=gen4.5", f"prompt_set.file={file}"]).jobs] == ["a"]


def test_utf16_is_read_where_its_byte_order_mark_says_so(tmp_path):
    file = tmp_path / "unicode.tsv"
    file.write_bytes("id\ttext\r\ncafé\tune brûlerie à l'aube\r\n".encode("utf-16"))  # with its mark, as spreadsheets save it
    jobs = plan(["model=gen4.5", f"prompt_set.file={file}"]).jobs
    assert [(job.prompt_id, job.payload["promptText"]) for job in jobs] == [("café", "une brûlerie à l'aube")]


def test_a_bundled_set_is_still_chosen_by_name():
    p = plan(["model=gen4_turbo", "prompt_set=animate"])
    assert [job.prompt_id for job in p.jobs] == ["lighthouse-dusk", "portrait-smile"]
    assert {job.sweep for job in p.jobs} == {"animate"}


def test_a_file_is_read_once_per_process(tmp_path, monkeypatch):
    file = _write(tmp_path / "once.jsonl", '{"id": "a", "text": "hi"}\n')
    reads = Counter()
    real = prompts._read
    monkeypatch.setattr(prompts, "_read", lambda *args: reads.update([args[0]]) or real(*args))
    for model in ("gen4.5", "veo3.1", "gen4.5"):
        plan([f"model={model}", f"prompt_set.file={file}"])
    assert sum(reads.values()) == 1
    file.write_text('{"id": "a", "text": "hi"}\n{"id": "b", "text": "there"}\n')  # changed: read again
    assert len(plan(["model=gen4.5", f"prompt_set.file={file}"]).jobs) == 2


# -- mistakes: each names the file and the line ----------------------------------------------------------


@pytest.mark.parametrize("name, body, expected", [
    ("missing.jsonl", '{"text": "no id"}', "missing.jsonl:1: a prompt needs an id"),
    ("blank.jsonl", '{"id": "  ", "text": "x"}', "blank.jsonl:1: a prompt needs an id"),
    ("listid.jsonl", '{"id": ["a"], "text": "x"}', "listid.jsonl:1: id ['a'] is not a name"),
    ("dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}',
     "dup.jsonl:3: prompt id 'a' is used twice (first on line 1)"),
    ("typo.jsonl", '{"id": "a", "txt": "x"}', "typo.jsonl:1: unknown field 'txt' (did you mean 'text'?)"),
    ("param.jsonl", '{"id": "a", "text": "x", "params": {"durration": 5}}',
     "param.jsonl:1: prompt 'a': params.durration is not a parameter (did you mean 'duration'?)"),
    ("paramlist.jsonl", '{"id": "a", "text": "x", "params": {"duration": [5, 10]}}',
     "paramlist.jsonl:1: prompt 'a': params.duration must be one value"),
    ("paramsmap.jsonl", '{"id": "a", "text": "x", "params": 5}', "paramsmap.jsonl:1: prompt 'a': params must be a mapping"),
    ("image.jsonl", '{"id": "a", "text": "x", "image": 7}', "image.jsonl:1: prompt 'a': image must be a path, URL or data URI"),
    ("text.jsonl", '{"id": "a", "text": ["x"]}', "text.jsonl:1: prompt 'a': text must be text"),
    ("broken.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", ', "broken.jsonl:2: not a JSON object"),
    ("array.jsonl", '["a", "x"]', "array.jsonl:1: a prompt is a mapping"),
    ("cols.csv", "id,txt\na,x", "cols.csv:1: unknown column 'txt' (did you mean 'text'?)"),
    ("cells.csv", "id,text\na,x,extra", "cells.csv:2: 3 cells for 2 columns"),
    ("quoted.csv", 'id,text\na,"two\nlines"\n,empty id', "quoted.csv:4: a prompt needs an id"),
    ("key.yaml", "name: x\nprompt:\n  - id: a", "key.yaml:2: unknown key 'prompt' (did you mean 'prompts'?)"),
    ("bad.yaml", "prompts:\n  - id: a\n   text: x", "bad.yaml:3: not valid YAML"),
    ("nested.yaml", "prompts:\n  - id: a\n    text: x\n  - id: b\n    text: y\n    native: [1]",
     "nested.yaml:4: prompt 'b': native must be a mapping"),
    ("empty.yaml", "", "empty.yaml has no prompts"),
    ("notes.txt", "a", ".txt is not a prompt file format"),
])
def test_each_mistake_names_the_file_and_line(tmp_path, name, body, expected):
    file = tmp_path / name
    file.write_text(body)
    message = _error("model=gen4.5", f"prompt_set.file={file}")
    assert expected in message


def test_every_mistake_of_a_file_is_listed_at_once(tmp_path):
    rows = [{"id": f"p{i}", "txt": "x"} for i in range(25)]
    file = _write(tmp_path / "many.jsonl", "\n".join(json.dumps(row) for row in rows))
    message = _error("model=gen4.5", f"prompt_set.file={file}")
    assert "has 25 problems" in message and "many.jsonl:20: unknown field 'txt'" in message
    assert "many.jsonl:21:" not in message and "... and 5 more" in message


def test_a_missing_file_says_where_it_looked(tmp_path):
    message = _error("model=gen4.5", f"prompt_set.file={tmp_path / 'nope.jsonl'}")
    assert "no such file" in message and str(tmp_path / "nope.jsonl") in message


def test_a_plan_error_names_the_prompt_and_its_line(tmp_path):
    file = _write(tmp_path / "sora.jsonl", '{"id": "a", "text": "x"}\n{"id": "tall", "text": "y", "params": {"duration": 3}}\n')
    message = _error("model=sora2", f"prompt_set.file={file}")
    assert "duration=3 is not allowed" in message and f"prompt 'tall' at {file}:2 (params)" in message


# -- large plans -----------------------------------------------------------------------------------------


def test_a_plan_over_show_jobs_is_summarised(tmp_path):
    file = _write(tmp_path / "some.jsonl", "".join(f'{{"id": "p{i}", "text": "scene {i}"}}\n' for i in range(7)))
    overrides = ["model=gen4.5", f"prompt_set.file={file}", "sweep.duration=[5,10]", "replicates=2"]
    p = plan(overrides)
    text = format_plan(p, "20")
    assert "... and 23 more (show_jobs=all lists every job)" in text
    groups = [line.split() for line in text.splitlines() if line.startswith("14 ")]
    assert groups == [["14", "gen4.5", "text-to-video", "duration=5", "aspect_ratio=16:9", "$8.40"],
                      ["14", "gen4.5", "text-to-video", "duration=10", "aspect_ratio=16:9", "$16.80"]]
    assert "28 jobs, estimated total $25.20" in text
    full = format_plan(p, "all")
    assert sum(job.short_key in full for job in p.jobs) == 28 and "more (show_jobs" not in full
    with pytest.raises(UserError, match="show_jobs='some' is not allowed"):
        format_plan(p, "some")


def test_a_100000_job_plan_has_every_job_once(tmp_path):
    count = 10_000
    file = tmp_path / "big.jsonl"
    file.write_text("".join(json.dumps({"id": f"p{i:05d}", "text": f"the beam turns, take {i}", "image": "${asset:lighthouse.png}"}) + "\n"
                            for i in range(count)))
    p = plan(["model=gen4_turbo", f"prompt_set.file={file}", "sweep.duration=[5,10]", "replicates=5", "max_jobs=100000"])
    assert len(p.jobs) == 100_000 and p.merged == 0
    assert len({job.key for job in p.jobs}) == 100_000
    points = Counter((job.prompt_id, job.payload["duration"]) for job in p.jobs)
    assert len(points) == 2 * count and set(points.values()) == {5}
    assert Counter(job.replicate for job in p.jobs) == {r: 2 * count for r in range(5)}
    assert {job.inputs[0].sha256 for job in p.jobs} == {p.jobs[0].inputs[0].sha256}
    assert p.total == 5 * count * (Decimal("0.25") + Decimal("0.50"))
