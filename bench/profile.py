"""Where a process's time goes, sampled from outside with py-spy while a benchmark runs: the functions of the
project (and the libraries' entry points) by the share of samples they appear in, per thread kind."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: py-spy thread labels carry the thread's id and name; the name without numbers groups the kinds
_THREAD = re.compile(r"^thread \(\d+\): ?(.*)$")
_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^():]+)(?::\d+)?\)$")


class Sampler:
    """``py-spy record`` on ``pid`` for ``seconds`` (raw, collapsed stacks), in the background."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
        spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
        if spy is None:
            raise RuntimeError("py-spy is not installed (pip install py-spy; make venv installs it)")
        self.out = out
        self.proc = subprocess.Popen(
            [
                spy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(int(seconds)),
                "-r",
                str(rate),
                "--format",
                "raw",
                "--threads",
                "-o",
                str(out),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def result(self, timeout: float = 60) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return summarise(self.out) if self.out.exists() else {"error": "py-spy wrote nothing (ptrace refused?)"}


PROJECT = ("cloud/", "protocol/", "edge/")


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Share of samples per thread kind; the project's functions (inclusive: the share of samples they are on
    the stack of); and where the samples ended (self time) by package: the project's own code, or a library."""
    threads: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        m = _THREAD.match(frames[0])
        threads[re.sub(r"[-_]?[0-9a-f]{6,}|\d+", "", m.group(1) if m else frames[0]).strip("-") or "?"] += n
        seen = set()
        for f in frames[1:]:
            fm = _FRAME.match(f)
            if fm is not None and fm["file"].startswith(PROJECT) and f"{fm['fn']} ({fm['file']})" not in seen:
                seen.add(f"{fm['fn']} ({fm['file']})")
                functions[f"{fm['fn']} ({fm['file']})"] += n
        leaf = _FRAME.match(frames[-1])
        where = leaf["file"] if leaf else "?"
        leaves[where.split("/")[0] + "/" if where.startswith(PROJECT) else where.split("/")[0].removesuffix(".py")] += n
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "threads": {k: round(v / total, 3) for k, v in threads.most_common(10)},
        "functions": {k: round(v / total, 3) for k, v in functions.most_common(top)},
        "self_by_package": {k: round(v / total, 3) for k, v in leaves.most_common(12)},
    }
