"""The one ``datalad run`` wrapper of the derivative steps (resampling, vectorising words).

Both steps record a short ``nv-datalad ...`` command run from the dataset root with explicit
inputs and outputs, so ``datalad rerun`` replays them on any clone. A command may also tell the
caller which items failed and why, through a report file named by an environment variable: the
report stays outside the run record, so a rerun neither needs nor writes it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nv_datalad.dataset import revision

lgr = logging.getLogger(__name__)

#: Beyond this many recorded paths the run record goes to ``.datalad/runinfo`` instead of the
#: commit message, so ``git log`` stays readable for builds of thousands of images.
RECORD_INLINE_LIMIT = 200


def render(message: Any) -> str:
    """DataLad messages may be ``(format, *args)`` tuples."""
    if isinstance(message, tuple) and message:
        try:
            return str(message[0]) % tuple(message[1:])
        except TypeError:
            return " ".join(str(m) for m in message)
    return str(message) if message else ""


@dataclass(frozen=True)
class RunOutcome:
    """What ``datalad run`` answered, and the per-item failures the command reported."""

    results: list[dict]
    report: dict[str, str] = field(default_factory=dict)

    @property
    def problems(self) -> list[dict]:
        return [r for r in self.results if r.get("status") not in ("ok", "notneeded")]

    def message(self) -> str:
        """One line naming every DataLad action that did not succeed ("" when all did)."""
        return "; ".join(f"{r.get('action')}: {render(r.get('message'))}" for r in self.problems)


@contextmanager
def _report_file(variable: str | None) -> Iterator[Path | None]:
    """A temporary report path exported as ``variable`` for the command (restored after)."""
    if variable is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="nv-datalad-run-") as tmp:
        report = Path(tmp) / "report.json"
        old = os.environ.get(variable)
        os.environ[variable] = str(report)
        try:
            yield report
        finally:
            if old is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = old


def _read_report(report: Path | None) -> dict[str, str]:
    if report is None:
        return {}
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def write_report(variable: str, failures: dict[str, str]) -> None:
    """The command's side of the report: write ``failures`` where the caller asked, if it did."""
    target = os.environ.get(variable)
    if target:
        Path(target).write_text(json.dumps(failures, sort_keys=True), encoding="utf-8")


def datalad_run(
    dataset: Path,
    cmd: Sequence[str],
    inputs: Sequence[str],
    outputs: Sequence[str],
    message: str,
    *,
    jobs: int | None = None,
    report_env: str | None = None,
) -> RunOutcome:
    """``datalad run`` of ``cmd`` from the dataset root (inputs fetched, outputs saved)."""
    import datalad.api as dl
    from datalad.utils import chpwd

    dataset = Path(dataset).absolute()
    with _report_file(report_env) as report, chpwd(str(dataset)):
        results = dl.run(
            cmd=list(cmd),
            dataset=str(dataset),
            inputs=list(inputs),
            outputs=list(outputs),
            message=message,
            explicit=True,
            sidecar=True if len(inputs) + len(outputs) > RECORD_INLINE_LIMIT else None,
            jobs=jobs,
            result_renderer="disabled",
            on_failure="ignore",
            return_type="list",
        )
        outcome = RunOutcome(results, _read_report(report))
    for res in outcome.problems:
        lgr.info(
            "datalad %s %s: %s", res.get("action"), res.get("status"), render(res.get("message"))
        )
    return outcome


def outputs_committed(dataset: Path, expected: dict[str, bytes]) -> bool:
    """Does HEAD already hold exactly these output bytes (annexed ones read from the local
    annex)? Then a run would change nothing, and is not worth its time or a commit."""
    blobs = revision.read_many(dataset, "HEAD", list(expected))
    for rel, data in expected.items():
        blob = blobs.get(rel)
        key = revision.key_from_link(blob) if blob is not None else None
        if key is not None:
            where = revision.content_path(dataset, key, rel)
            blob = where.read_bytes() if where is not None else None
        if blob != data:
            return False
    return True
