"""The Markdown report: absolute times per case, then every ratio with its target and verdict.

It is rendered from the raw measurements only (the JSON that ``--raw`` saves), so a report can
be re-rendered later (``--render-raw``) without measuring again.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from measure import Measurement
from resampling import ResampleRun
from scenarios import CaseRun

Row = tuple[str, str, str, str]  # measure, value, target, met


def machine() -> dict[str, str]:
    import datalad
    import nilearn

    annex = subprocess.run(["git", "annex", "version", "--raw"], capture_output=True,
                           text=True, check=False).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (nproc), {platform.system()}",
        "python": platform.python_version(),
        "git-annex": annex or "?",
        "datalad": datalad.__version__,
        "nilearn": nilearn.__version__,
    }


def _ratio(a: Measurement | None, b: Measurement | None) -> float | None:
    if a is None or b is None or not a.ok or not b.ok or b.seconds <= 0:
        return None
    return a.seconds / b.seconds


def _row(label: str, value: float | None, target: str,
         ok: Callable[[float], bool] | None = None, fmt: str = "{:.3f}") -> Row:
    if value is None:
        return label, "n/a", target, "n/a"
    met = "(info)" if ok is None else ("met" if ok(value) else "**not met**")
    return label, fmt.format(value), target, met


def _fact(label: str, value: bool | None, target: bool = True) -> Row:
    if value is None:
        return label, "n/a", "yes" if target else "no", "n/a"
    return (label, "yes" if value else "no", "yes" if target else "no",
            "met" if value == target else "**not met**")


def _case_rows(run: CaseRun) -> list[Row]:
    ms, at = run.measurements, f" (N={run.selected})"
    fresh = ms.get("fresh_fast")
    rows: list[Row] = []
    if "nilearn" in ms:
        rows += [
            _row("fresh build -J 8 / nilearn" + at, _ratio(fresh, ms["nilearn"]), "≤ 0.25 (#13)",
                 lambda v: v <= 0.25),
            _row("fresh build -J 8 / plain download" + at, _ratio(fresh, ms.get("plain")),
                 "≤ 1.5 (#13)", lambda v: v <= 1.5),
            _row("fresh build -J 1 / nilearn" + at, _ratio(ms.get("fresh_1"), ms["nilearn"]),
                 "(info)"),
            _row("fresh build -J 8 / datalad addurls" + at, _ratio(fresh, ms.get("addurls")),
                 "(info)"),
            _fact("same images selected by nilearn and nv-datalad" + at, run.same_selection),
        ]
    small = "dryrun" in ms
    if "noop" in ms:
        rows.append(_row("no-op rebuild / fresh build -J 8" + at, _ratio(ms["noop"], fresh),
                         "≤ 0.15 (#13)" if small else "(info)",
                         (lambda v: v <= 0.15) if small else None))
        rows.append(_fact("no-op rebuild made a commit" + at, run.noop_new_commit, False))
    if small:
        for key, what in (("noop", "no-op rebuild"), ("dryrun", "empty --dry-run")):
            m = ms.get(key)
            rows.append(_row(f"{what}, wall s incl. start-up" + at,
                             m.seconds if m and m.ok else None, "< 1 (#13)",
                             lambda v: v < 1.0, "{:.2f}"))
    if "register" in ms:
        reg = ms["register"]
        rows.append(_row("content: register, file requests at build time" + at,
                         float(reg.file_requests) if reg.ok else None, "0 (#13)",
                         lambda v: v == 0, "{:.0f}"))
        rows.append(_fact("datalad get of a registered file works", run.register_get_ok))
    for up in run.updates:
        rows.append((f"update of k={up.k} of N={run.selected}: files downloaded",
                     str(sum(up.downloads.values())), f"exactly {up.k} (#13)",
                     "met" if up.exact else "**not met**"))
    noop = ms.get("noop")
    if len(run.updates) >= 2 and noop is not None and noop.ok:
        first, second = run.updates[:2]
        ma, mb = ms.get(f"update_{first.k}"), ms.get(f"update_{second.k}")
        if ma is not None and mb is not None and ma.seconds > noop.seconds:
            extra = (mb.seconds - noop.seconds) / (ma.seconds - noop.seconds)
            rows.append(_row(f"update time above no-op, k={second.k} / k={first.k}" + at,
                             extra, f"≈ {second.k / first.k:.0f} if ∝ k (info)", fmt="{:.2f}"))
    return rows


def _scale_rows(runs: Sequence[CaseRun]) -> list[Row]:
    rows: list[Row] = []
    with_noop = [r for r in runs if r.measurements.get("noop") and r.measurements["noop"].ok]
    big = [r for r in with_noop if r.selected >= 1000]
    for r in big:
        rows.append(_row(f"no-op rebuild, s per 1,000 images (N={r.selected})",
                         r.measurements["noop"].seconds * 1000 / r.selected, "≤ 2 at 5,000 (#13)",
                         lambda v: v <= 2.0, "{:.2f}"))
    if with_noop and not big:
        r = max(with_noop, key=lambda r: r.selected)
        value = r.measurements["noop"].seconds * 1000 / max(1, r.selected)
        rows.append((f"no-op rebuild, s per 1,000 images (N={r.selected})", f"{value:.2f}",
                     "≤ 2 at 5,000 (#13)", "n/a (needs N ≥ 1,000: full run)"))
    fresh = sorted((r for r in runs if r.measurements.get("fresh_fast")),
                   key=lambda r: r.selected)
    if len(fresh) >= 2 and fresh[-1].selected > fresh[0].selected:
        lo, hi = fresh[0], fresh[-1]
        grow = hi.measurements["fresh_fast"].peak_rss_mb - lo.measurements["fresh_fast"].peak_rss_mb
        rows.append(_row(f"build peak RSS growth, MB per 1,000 images (N={lo.selected} → "
                         f"{hi.selected})", grow * 1000 / (hi.selected - lo.selected),
                         "flat (#13 sets no number)", fmt="{:+.1f}"))
    return rows


def _resample_rows(res: ResampleRun) -> list[Row]:
    rm = res.measurements
    rows = [_row("resample -J 2 (datalad run) throughput / nilearn loop",
                 _ratio(rm.get("nilearn"), rm.get("prov_2")), "≥ 1.8 (#13)", lambda v: v >= 1.8)]
    for kind, label in (("bare", "entry point"), ("prov", "datalad run")):
        rows.append(_row(f"resample -J 2 speedup over -J 1 ({label})",
                         _ratio(rm.get(f"{kind}_1"), rm.get(f"{kind}_2")), "≥ 1.7 (#8)",
                         lambda v: v >= 1.7))
    return rows


def _comparison(run: CaseRun) -> list[str]:
    added = f" + {run.added_collections} small collections" if run.added_collections else ""
    lines = [f"## Case `{run.case}`: {run.selected} images selected in {run.collections} "
             f"collections (bench corpus of {run.corpus_size}{added})", ""]
    if run.same_selection is not None:
        lines += ["Same images selected by nilearn and both nv-datalad builds: "
                  f"**{'yes' if run.same_selection else 'NO'}**.", ""]
    lines += ["| contender | wall (s) | ms / image | peak RSS (MB) | files served "
              "| file GET / HEAD | API requests | ok |",
              "|---|---:|---:|---:|---:|---:|---:|---|"]
    for m in run.measurements.values():
        req = m.requests
        lines.append(f"| {m.name} | {m.seconds:.2f} | {m.ms_per_image:.1f} | "
                     f"{m.peak_rss_mb:.0f} | {'' if m.files is None else m.files} | "
                     f"{req.get('file_get', 0)} / {req.get('file_head', 0)} | "
                     f"{m.api_requests} | {'yes' if m.ok else '**no**'} |")
    lines += [f"- note: {note}" for note in run.notes]
    return [*lines, ""]


def _scaling(runs: Sequence[CaseRun]) -> list[str]:
    lines = ["## Scaling (fresh build and no-op rebuild at -J 8, every case)", "",
             "| case | selected | collections | plain (s) | build (s) | build / plain "
             "| build peak RSS (MB) | no-op (s) | no-op s / 1,000 img |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(runs, key=lambda r: r.selected):
        f, p, z = (r.measurements.get(k) for k in ("fresh_fast", "plain", "noop"))
        if f is None or p is None or z is None:
            continue
        lines.append(f"| {r.case} | {r.selected} | {r.collections} | {p.seconds:.2f} | "
                     f"{f.seconds:.2f} | {f.seconds / max(p.seconds, 1e-9):.2f} | "
                     f"{f.peak_rss_mb:.0f} | {z.seconds:.2f} | "
                     f"{z.seconds * 1000 / max(1, r.selected):.2f} |")
    return [*lines, ""]


def _resampling(res: ResampleRun) -> list[str]:
    lines = [f"## Resampling (N = {res.n_images} generated 91×109×91 float32 2 mm volumes "
             "→ nilearn's 3 mm grid, continuous)", "",
             "| contender | wall (s) | ms / image | peak RSS (MB) | ok |",
             "|---|---:|---:|---:|---|"]
    for m in res.measurements.values():
        lines.append(f"| {m.name} | {m.seconds:.2f} | {m.ms_per_image:.0f} | "
                     f"{m.peak_rss_mb:.0f} | {'yes' if m.ok else '**no**'} |")
    diff = "n/a" if res.max_abs_diff is None else f"{res.max_abs_diff:.3g}"
    return [*lines, "", f"Largest voxel difference nilearn vs nv-datalad output: {diff}", ""]


def _profile(prof: Mapping[str, Any]) -> list[str]:
    lines = [f"## Where a fresh build's time goes (case `{prof.get('case')}`, cProfile, "
             "wall clock, cumulative, main thread)", ""]
    if not prof.get("ok") or "stages" not in prof:
        return [*lines, "The profiled build failed; see its log (`--keep`).", ""]
    lines += [f"Profiled build: {prof['seconds']:.2f} s wall in its process; "
              f"{prof.get('summary', '')}", "",
              "| stage | function | seconds | calls |", "|---|---|---:|---:|"]
    lines += [f"| {label} | `{target}` | {sec:.2f} | {calls} |"
              for label, target, sec, calls in prof["stages"]]
    lines += ["", "Top own time (where the waiting happens):", "",
              "| function | own seconds | calls |", "|---|---:|---:|"]
    lines += [f"| `{name}` | {sec:.2f} | {calls} |" for name, sec, calls in prof["top"]]
    return [*lines, ""]


def render(raw: Mapping[str, Any]) -> str:
    """The report from the raw measurements (what ``--raw`` saves)."""
    meta = raw["meta"]
    runs = [CaseRun.from_dict(d) for d in raw["cases"]]
    res = ResampleRun.from_dict(raw["resample"]) if raw.get("resample") else None
    setup = meta["setup"]
    lines = ["# nv-datalad benchmark", ""]
    lines += [f"- {k}: {v}" for k, v in meta["info"].items()]
    lines += [f"- network: {setup['latency'] * 1000:.0f} ms per request, "
              f"{setup['bandwidth'] / 1e6:g} MB/s per connection (emulator on 127.0.0.1); "
              f"parallel contenders at {setup['jobs']} connections / jobs",
              f"- cases: {', '.join(f'`{r.case}`' for r in runs) or 'none'}; "
              f"mode: {meta['mode']}; whole run {meta['elapsed']:.0f} s", ""]
    rows = [row for r in runs for row in _case_rows(r)] + _scale_rows(runs)
    if res is not None:
        rows += _resample_rows(res)
    if rows:
        lines += ["## Ratios and targets", "", "| measure | value | target | met |",
                  "|---|---:|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        lines += [""]
    for r in runs:
        lines += _comparison(r)
    if runs:
        lines += _scaling(runs)
    if res is not None:
        lines += _resampling(res)
    if raw.get("profile"):
        lines += _profile(raw["profile"])
    lines += ["Wall: around the contender's subprocess, interpreter start-up and imports "
              "included. Peak RSS: the largest single process of its tree (`os.wait4` "
              "ru_maxrss). Files served: image files the emulator sent in full; file GET / HEAD "
              "and API requests: the emulator's counters during that contender.", ""]
    return "\n".join(lines)
