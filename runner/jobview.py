"""What lifecycle hooks see: a read-only view of a job and of the run, in Python's own types.

A hook gets parsed parameters, `Path`s and money as `Decimal`, not the ledger's JSON strings and
micro-dollars; the raw ledger row stays available as `JobView.row` for anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from runner.money import to_usd


@dataclass(frozen=True)
class JobView:
    key: str
    sweep: str
    provider: str
    model: str
    model_id: str
    mode: str
    prompt_id: str
    replicate: int
    params: Mapping[str, Any]
    state: str
    task_id: str | None
    attempts: int
    estimate_usd: Decimal | None
    spent_usd: Decimal
    output: Path | None
    output_sha256: str | None
    error: str | None
    row: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "JobView":
        return cls(
            key=row["key"], sweep=row["sweep"], provider=row["provider"], model=row["model"], model_id=row["model_id"],
            mode=row["mode"], prompt_id=row["prompt_id"], replicate=row["replicate"],
            params=MappingProxyType(json.loads(row["params"] or "{}")), state=row["state"], task_id=row["task_id"],
            attempts=row["attempts"] or 0, estimate_usd=to_usd(row["est_micros"]), spent_usd=to_usd(row["spent_micros"] or 0),
            output=Path(row["output_path"]) if row["output_path"] else None, output_sha256=row["output_sha256"],
            error=row["error"], row=MappingProxyType(dict(row)),
        )


@dataclass(frozen=True)
class RunContext:
    """The run a hook is called from: its command's id, its sweep (id and the names under outputs/),
    the resolved config and its folders."""

    run_id: str
    sweep_id: str
    sweep_names: tuple[str, ...]
    config: Mapping[str, Any]
    outputs_dir: Path
    ledger: Path
