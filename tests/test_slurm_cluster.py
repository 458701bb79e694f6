"""The single-node SLURM that the cluster build (issue 15) runs on behaves as the build needs: an
array's tasks run side by side, cancelling or failing one leaves its siblings finishing, and a
finalise job learns which tasks did not succeed without sacct (no slurmdbd here)."""

from __future__ import annotations

from pathlib import Path

import pytest

#: The session fixture ``slurm_cluster`` lives in tests/slurm.py.
pytest_plugins = ["slurm"]

pytestmark = pytest.mark.slurm

#: Task 1 hangs until cancelled; task 3 waits for the test's go-ahead, so both run at once and
#: task 3 ends after task 1 was cancelled; task 2 fails. Success is marked as the last step.
TASKS = """\
id=$SLURM_ARRAY_TASK_ID
touch started_$id
case $id in
  1) sleep 600 ;;
  2) exit 3 ;;
  3) while [ ! -e go ]; do sleep 0.2; done ;;
esac
echo "$id" > done_$id
"""

#: The finalise step: which tasks left no success marker.
MISSING = "for i in 0 1 2 3; do [ -e done_$i ] || echo $i; done > missing"


def submit(cluster, workdir: Path, *args: str) -> str:
    workdir.mkdir(exist_ok=True)
    return cluster.sbatch(f"--chdir={workdir}", f"--output={workdir}/%x_%A_%a.out", *args)


def test_array_tasks_run_and_failures_are_found_without_accounting(slurm_cluster, tmp_path):
    cluster = slurm_cluster
    plain = submit(cluster, tmp_path / "plain", "--array=0-3",
                   "--wrap", "echo $SLURM_ARRAY_TASK_ID > out_$SLURM_ARRAY_TASK_ID")
    cluster.wait_gone(plain)
    outputs = {p.name: p.read_text().strip() for p in (tmp_path / "plain").glob("out_*")}
    assert outputs == {f"out_{i}": str(i) for i in range(4)}

    work = tmp_path / "faults"
    array = submit(cluster, work, "--array=0-3", "--job-name=task", "--wrap", TASKS)
    finalise = submit(cluster, work, f"--dependency=afterany:{array}", "--job-name=finalise",
                      "--wrap", MISSING)
    strict = submit(cluster, work, f"--dependency=afterok:{array}", "--job-name=strict",
                    "--wrap", "touch strict_ran")
    cluster.wait_until(lambda: all((work / f"started_{i}").exists() for i in (1, 3)),
                       "tasks 1 and 3 running at once")
    cluster.scancel(f"{array}_1")
    (work / "go").touch()
    cluster.wait_gone(array)
    cluster.wait_gone(finalise)

    assert (work / "missing").read_text().split() == ["1", "2"]
    assert sorted(p.name for p in work.glob("done_*")) == ["done_0", "done_3"]
    assert cluster.task_states(array) == {"0": "COMPLETED", "1": "CANCELLED", "2": "FAILED",
                                          "3": "COMPLETED"}
    assert "CANCELLED" in (work / f"task_{array}_1.out").read_text()
    cluster.wait_until(lambda: cluster.reason(strict) == "DependencyNeverSatisfied",
                       "the afterok job held for ever")
    cluster.scancel(strict)
    assert not (work / "strict_ran").exists()
