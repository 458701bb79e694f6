"""Start one contender from a small process; write its wall time and peak memory as JSON.

    python -I -S benchmarks/launch.py RESULT.json ARGV...

Why a launcher: at ``exec`` Linux folds the exec-ing process's memory high-water mark into the
new program's ``ru_maxrss``, and Python's ``subprocess`` execs from the parent's address space
(vfork). Read directly by the benchmark (which holds the emulator: 60 to 300 MB), every
contender's "peak RSS" was at least the benchmark's own size. Started from this process (a few
MB: only ``os``, ``sys``, ``json`` and ``time`` are imported), the contender's figure is its own,
with this process's size as the floor. The wall time is taken here too, around spawn and wait,
so the launcher's own start-up is not counted; and the CPU time (user + system) of the
contender and every descendant it waited for, which a busy shared machine changes far less
than the wall time.
"""

import json
import os
import sys
import time


def main(argv: list[str]) -> int:
    result, cmd = argv[0], argv[1:]
    start = time.perf_counter()
    pid = os.posix_spawnp(cmd[0], cmd, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(result, "w") as fh:
        json.dump({"seconds": seconds, "maxrss_kb": usage.ru_maxrss, "exit": code,
                   "cpu": usage.ru_utime + usage.ru_stime}, fh)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
