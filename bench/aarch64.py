"""``civicedge bench aarch64``: the gateway's code running on aarch64, under user-mode emulation.

A Debian bookworm arm64 root (the userland of Raspberry Pi OS bookworm: glibc 2.36, Python 3.11) is unpacked
with ``debootstrap --foreign`` and the packages it only downloaded are extracted with ``dpkg-deb`` (no second
stage: nothing in the root is ever configured or booted). The host's pip puts the aarch64 wheels of the base
dependencies and of the ``edge`` extra into ``ROOT/opt/civicedge/site``, pinned by ``constraints.txt``. Both are
cached outside the repository (``$CE_AARCH64_CACHE`` or ``~/.cache/civicedge/aarch64``); the project's code and
the photos are copied in fresh on every run.

``qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3.11`` then runs, as one emulated aarch64 process
each (no binfmt_misc, no chroot):

* the gate's vision pipeline (``GateVision``, a door without a thermal camera) on the project's face photos
  and two of scikit-image's: one resident is enrolled from one photo, then every photo gets a decision; and
  the thermal calibration model on fixed readings. This runs on an emulated Cortex-A76 (Raspberry Pi 5) and
  Cortex-A72 (Pi 4), and natively on this machine in the same run: the decisions must be the same;
* the agent's self-check, ``civicedge edge doctor --json``.

The report says which steps came from the cache and how long each phase took. Emulated timings say nothing
about a real board's speed.

This module is also the probe that runs inside the root (``python -m bench.aarch64 --probe …``); its top level
imports the standard library only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
QEMU = "qemu-aarch64-static"
#: besides the minimal base: the interpreter, and the system libraries the wheels link against without bundling
#: them (besides glibc: libstdc++ and libgcc_s for LiteRT, OpenCV and pydantic-core; libz for numpy's and
#: Pillow's bundled libraries)
INCLUDE = ("python3.11", "libstdc++6", "libgcc-s1", "zlib1g")
#: the guest's glibc is bookworm's 2.36; pip takes --platform tags literally, so every manylinux tag up to it
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)))
#: the project's code inside the root: whole packages, plus the modules ``civicedge_cli`` imports when it loads
#: (each subcommand group's CLI module; their top levels need only typer and edge). Nothing else of cloud/,
#: simulators/ or bench/ is copied, so code that reaches for them at run time fails here as it would on a gateway.
APP_TREES = ("civicedge", "edge", "protocol")
APP_FILES = (
    "civicedge_cli.py",
    "bench/__init__.py",
    "bench/cli.py",
    "bench/aarch64.py",
    "cloud/__init__.py",
    "cloud/cli.py",
    "simulators/__init__.py",
    "simulators/cli.py",
)
#: the photos: the project's two face photos, and two of scikit-image's (a dev dependency) from the host's venv
SHIPPED_PHOTOS = ("simulators/faces/astronaut.png", "simulators/faces/grace_hopper.jpg")
SKIMAGE_PHOTOS = ("camera.png", "coffee.png")
RESIDENT = "res-astronaut"
ENROL_PHOTO = "astronaut.png"
#: (label, file, variant): what the gate is shown after the resident was enrolled from ENROL_PHOTO
PROBE_PHOTOS: tuple[tuple[str, str, str], ...] = (
    ("astronaut", "astronaut.png", ""),  # the enrolment photo itself
    ("astronaut mirrored", "astronaut.png", "mirror"),  # the resident, not as enrolled
    ("astronaut greyscale", "astronaut.png", "grey"),  # the resident as a greyscale print: liveness
    ("grace_hopper", "grace_hopper.jpg", ""),  # a face that is no resident
    ("camera", "camera.png", ""),  # a face turned away: the quality gate
    ("coffee", "coffee.png", ""),  # no face
)
#: thermal readings for the calibration model: (ambient, central face, hottest eye pixel) °C, at 0.6 m
THERMAL_READINGS = ((12.0, 32.0, 35.0), (22.0, 34.0, 35.6), (32.0, 36.0, 36.3))
#: aarch64 and x86-64 kernels round differently: a decision must be equal, a score and a temperature this close
SCORE_TOLERANCE = 0.03
TEMPERATURE_TOLERANCE_C = 0.05
PROBE_TIMEOUT_S = 1800


@dataclass(frozen=True, slots=True)
class Cpu:
    """An emulated core (qemu's ``-cpu`` model: its instruction set and hwcaps) and the ``/proc/cpuinfo`` a board
    with it shows. qemu-user 7.2 lets an aarch64 guest read the host's x86 /proc/cpuinfo, and LiteRT's CPU
    detection (XNNPACK) crashes with SIGSEGV right after parsing one (it finds no Arm processor in it); a board
    never shows it one, so the root gets the board's."""

    model: str
    board: str
    features: str
    variant: str
    part: str
    revision: int

    def cpuinfo(self, cores: int) -> str:
        one = (
            "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: {v}\nCPU part\t: {p}\nCPU revision\t: {r}\n\n"
        )
        return "".join(
            one.format(n=n, f=self.features, v=self.variant, p=self.part, r=self.revision) for n in range(cores)
        )


#: Raspberry Pi 5 (Armv8.2: int8 dot product, fp16) and Pi 4 (plain Armv8.0 NEON): XNNPACK picks other kernels
CPUS = (
    Cpu(
        "cortex-a76",
        "Raspberry Pi 5",
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "0x4",
        "0xd0b",
        1,
    ),
    Cpu("cortex-a72", "Raspberry Pi 4", "fp asimd evtstrm crc32 cpuid", "0x0", "0xd08", 3),
)


class BenchError(RuntimeError):
    """A step that cannot go on; the message says what is missing and what to do."""


def _say(msg: str) -> None:
    print(f"aarch64: {msg}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], *, timeout: float = 3600, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- host tools


def ensure_tools() -> dict[str, str]:
    """qemu-aarch64-static and debootstrap (plus dpkg-deb): installed with apt-get when running as root."""
    wanted = {QEMU: "qemu-user-static", "debootstrap": "debootstrap", "dpkg-deb": "dpkg"}
    missing = sorted({pkg for tool, pkg in wanted.items() if _which(tool) is None})
    if missing:
        if os.geteuid() != 0 or _which("apt-get") is None:
            raise BenchError(
                f"missing {', '.join(missing)}: install with `sudo apt-get install -y {' '.join(missing)}` "
                "(Debian/Ubuntu) and run again"
            )
        _say(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        # another apt-get may hold the lock: wait for it rather than fail
        install = ["apt-get", "-o", "DPkg::Lock::Timeout=900", "install", "-y", "-qq", *missing]
        done = _run(install, env=env)
        if done.returncode != 0:
            _run(["apt-get", "-o", "DPkg::Lock::Timeout=900", "update", "-qq"], env=env)
            done = _run(install, env=env)
        if done.returncode != 0:
            raise BenchError(f"apt-get install {' '.join(missing)} failed:\n{_tail(done.stderr or done.stdout)}")
        still = sorted({pkg for tool, pkg in wanted.items() if _which(tool) is None})
        if still:
            raise BenchError(f"apt-get ran, but {', '.join(still)} is still missing")
    qemu = _run([_which(QEMU) or QEMU, "--version"]).stdout.splitlines()
    return {"qemu": qemu[0] if qemu else "?"}


def _which(tool: str) -> str | None:
    # debootstrap lives in /usr/sbin, which a non-login PATH may lack
    return shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")


# ---------------------------------------------------------------------------------------------------- the root


def cache_dir() -> Path:
    env = os.environ.get("CE_AARCH64_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "civicedge" / "aarch64"


def mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (``$CE_AARCH64_MIRROR`` wins)."""
    if env := os.environ.get("CE_AARCH64_MIRROR"):
        return env
    apt = Path("/etc/apt")
    for f in sorted(apt.glob("sources.list.d/*.sources")):  # deb822 stanzas
        for stanza in f.read_text(errors="replace").split("\n\n"):
            fields = dict(
                (k.strip().lower(), v.strip())
                for k, _, v in (line.partition(":") for line in stanza.splitlines() if not line.startswith("#"))
            )
            if SUITE in fields.get("suites", "").split() and fields.get("enabled", "yes") != "no":
                return fields.get("uris", DEFAULT_MIRROR).split()[0]
    for f in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        if f.exists():
            for line in f.read_text(errors="replace").splitlines():
                m = re.match(rf"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
                if m:
                    return m.group(1)
    return DEFAULT_MIRROR


# the standard library's C extensions the gateway uses, loaded once in the fresh root
_ROOT_CHECK = "import ctypes, sqlite3, ssl, lzma, bz2, zlib, hashlib, platform; print(platform.machine())"


def ensure_root(cache: Path, rebuild: bool) -> tuple[Path, bool]:
    """The arm64 root, made once: debootstrap's first stage, then every downloaded package unpacked."""
    root = cache / "root"
    marker = root / ".civicedge-root"
    want = _key(SUITE, INCLUDE)
    if not rebuild and marker.exists() and marker.read_text().strip() == want:
        return root, True
    if os.geteuid() != 0:
        raise BenchError(
            f"{root} is missing or out of date, and making it needs root (debootstrap creates device nodes and "
            "owners): run this as root once (e.g. in a container), or set CE_AARCH64_CACHE to a folder holding "
            "one made before that this user can write to"
        )
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / "root.partial"
    for old in (partial, root):
        if old.exists():
            shutil.rmtree(old)
    url = mirror()
    _say(f"making a Debian {SUITE} arm64 root from {url} in {root} (once; a few minutes)")
    boot = [
        _which("debootstrap") or "debootstrap",
        "--foreign",
        "--arch",
        "arm64",
        "--variant=minbase",
        f"--include={','.join(INCLUDE)}",
        SUITE,
        str(partial),
        url,
    ]
    done = _run(boot)
    if done.returncode != 0:
        log = partial / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace") if log.exists() else done.stderr or done.stdout
        raise BenchError(f"debootstrap failed (mirror {url}; set CE_AARCH64_MIRROR for another):\n{_tail(detail)}")
    _unpack_rest(partial)
    shutil.rmtree(partial / "debootstrap")
    for deb in (partial / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
    check = _run(
        [_which(QEMU) or QEMU, "-L", str(partial), str(partial / "usr/bin/python3.11"), "-c", _ROOT_CHECK], timeout=300
    )
    if check.returncode != 0 or check.stdout.strip() != "aarch64":
        raise BenchError(f"the new root's python3.11 does not run under {QEMU}:\n{_tail(check.stderr + check.stdout)}")
    (partial / ".civicedge-root").write_text(want + "\n")
    partial.rename(root)
    return root, False


def _unpack_rest(root: Path) -> None:
    """``--foreign`` extracts only the essential packages; unpack the others (python3.11 and what it needs) the
    way dpkg would, without running their maintainer scripts (nothing in them matters to a python3.11 run)."""
    meta = root / "debootstrap"
    required = set((meta / "required").read_text().split()) if (meta / "required").exists() else set()
    debs: list[Path] = []
    for line in (meta / "debpaths").read_text().splitlines():
        pkg, _, rel = line.partition(" ")
        if pkg not in required:
            debs.append(root / rel.strip().lstrip("/"))
    if not debs:
        raise BenchError("debootstrap downloaded no packages besides the essential ones (no python3.11?)")
    _say(f"unpacking {len(debs)} more packages into the root")
    for deb in debs:
        # through a pipe into tar: keep merged /usr (bin → usr/bin) instead of replacing the links by folders
        data = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        untar = _run(["tar", "-x", "--keep-directory-symlink", "-C", str(root)], stdin=data.stdout)
        if data.stdout is not None:
            data.stdout.close()
        if data.wait() != 0 or untar.returncode != 0:
            raise BenchError(f"could not unpack {deb.name}: {_tail(untar.stderr)}")


# ---------------------------------------------------------------------------------------------------- wheels


def requirements() -> list[str]:
    """The base dependencies and the ``edge`` extra, from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"]["edge"]]


def ensure_site(root: Path, rebuild: bool) -> tuple[Path, bool]:
    """aarch64 wheels (cp311, manylinux up to glibc 2.36) installed by the host's pip into the root."""
    site = root / "opt" / "civicedge" / "site"
    marker = site / ".civicedge-site"
    reqs = requirements()
    constraints = REPO / "constraints.txt"
    want = _key(reqs, PLATFORMS, constraints.read_text() if constraints.exists() else "")
    if not rebuild and marker.exists() and marker.read_text().strip() == want:
        return site, True
    partial = site.with_name("site.partial")
    for old in (partial, site):
        if old.exists():
            shutil.rmtree(old)
    partial.parent.mkdir(parents=True, exist_ok=True)
    _say(f"installing {len(reqs)} requirements as aarch64 wheels into {site}")
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target", str(partial)]
    for tag in PLATFORMS:
        cmd += ["--platform", tag]
    cmd += ["--implementation", "cp", "--python-version", "3.11", "--abi", "cp311", "--only-binary=:all:"]
    if constraints.exists():
        cmd += ["-c", str(constraints)]
    done = _run([*cmd, *reqs])
    if done.returncode != 0:
        raise BenchError(f"pip could not fetch the aarch64 wheels:\n{_tail(done.stderr or done.stdout)}")
    # pip --target adds console scripts built for the host interpreter; the gateway needs none of them
    shutil.rmtree(partial / "bin", ignore_errors=True)
    (partial / ".civicedge-site").write_text(want + "\n")
    partial.rename(site)
    return site, False


# ---------------------------------------------------------------------------------------------------- each run


def stage(root: Path) -> tuple[Path, Path]:
    """Fresh copies of the project's code and of the photos inside the root."""
    base = root / "opt" / "civicedge"
    app, photos = base / "app", base / "photos"
    for d in (app, photos, base / "work"):
        if d.exists():
            shutil.rmtree(d)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for tree in APP_TREES:
        shutil.copytree(REPO / tree, app / tree, ignore=skip)
    for f in APP_FILES:
        (app / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, app / f)
    photos.mkdir(parents=True)
    for f in SHIPPED_PHOTOS:
        shutil.copy2(REPO / f, photos)
    spec = find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("scikit-image (the dev extra: its sample photos) is missing from this venv: run `make venv`")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    for name in SKIMAGE_PHOTOS:
        if not (data / name).exists():
            raise BenchError(f"scikit-image's sample photo {name} is missing from {data}: run `make venv`")
        shutil.copy2(data / name, photos)
    return app, photos


def _emulated(root: Path, cpu: Cpu, args: Sequence[str]) -> list[str]:
    """One aarch64 process on ``cpu``. qemu's -L makes the root's loader and libraries the guest's, and any
    absolute path that exists under the root is read there, so the root's proc/cpuinfo is the one the guest sees
    (no binfmt, no chroot)."""
    proc = root / "proc"
    if proc.is_symlink() or proc.is_file():  # debootstrap links it to the host's /proc
        proc.unlink()
    proc.mkdir(exist_ok=True)
    (proc / "cpuinfo").write_text(cpu.cpuinfo(os.cpu_count() or 1))
    return [_which(QEMU) or QEMU, "-cpu", cpu.model, "-L", str(root), str(root / "usr" / "bin" / "python3.11"), *args]


def _env(pythonpath: Sequence[Path], work: Path) -> dict[str, str]:
    work.mkdir(parents=True, exist_ok=True)
    return {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(work),
        "TMPDIR": str(work),
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
        "PYTHONNOUSERSITE": "1",
        "OPENBLAS_NUM_THREADS": "1",  # as the civicedge command sets it
    }


def _json_out(name: str, done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The last line a probe printed, as JSON; a clear error with its stderr otherwise."""
    lines = done.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        out = None
    if not isinstance(out, dict):
        raise BenchError(f"{name} printed no JSON (exit {done.returncode}):\n{_tail(done.stderr or done.stdout)}")
    return out


def compare(arm: list[dict[str, Any]], x86: list[dict[str, Any]]) -> tuple[list[str], float]:
    """Problems where the two machines decided differently, and the largest score difference."""
    problems, worst = [], 0.0
    by_photo = {d["photo"]: d for d in x86}
    for a in arm:
        b = by_photo.get(a["photo"])
        if b is None:
            problems.append(f"{a['photo']}: no x86 decision")
            continue
        same = ("outcome", "resident", "faces")
        if any(a[k] != b[k] for k in same):
            problems.append(f"{a['photo']}: aarch64 {a['decision']!r}, x86 {b['decision']!r}")
        diff = abs(a["score"] - b["score"])
        worst = max(worst, diff)
        if diff > SCORE_TOLERANCE:
            problems.append(f"{a['photo']}: score {a['score']} on aarch64, {b['score']} on x86")
    if len(arm) != len(x86):
        problems.append(f"{len(arm)} decisions on aarch64, {len(x86)} on x86")
    return problems, round(worst, 4)


def compare_temperatures(arm: list[dict[str, Any]], x86: list[dict[str, Any]]) -> tuple[list[str], float]:
    problems, worst = [], 0.0
    for a, b in zip(arm, x86, strict=True):
        diff = abs(a["body_c"] - b["body_c"])
        worst = max(worst, diff)
        if diff > TEMPERATURE_TOLERANCE_C:
            problems.append(f"ambient {a['ambient_c']} °C: body {a['body_c']} °C on aarch64, {b['body_c']} °C on x86")
    return problems, round(worst, 4)


def _brief(d: dict[str, Any]) -> dict[str, Any]:
    return {"decision": d["decision"], "score": d["score"], "ms": d["ms"]}


def run(rebuild: bool = False) -> dict[str, Any]:
    t_start = time.perf_counter()
    phases: dict[str, float] = {}
    report: dict[str, Any] = {"ok": False, "cached": False, "phases_s": phases}
    problems: list[str] = []

    def phase(name: str, t0: float) -> None:
        phases[name] = round(time.perf_counter() - t0, 1)

    try:
        t = time.perf_counter()
        report["host"] = {"machine": platform.machine(), **ensure_tools()}
        phase("tools", t)
        cache = cache_dir()
        t = time.perf_counter()
        root, root_cached = ensure_root(cache, rebuild)
        phase("root", t)
        t = time.perf_counter()
        site, site_cached = ensure_site(root, rebuild)
        phase("wheels", t)
        report["cached"] = root_cached and site_cached
        report["cache"] = {"dir": str(cache), "root": root_cached, "wheels": site_cached}
        t = time.perf_counter()
        app, photos = stage(root)
        phase("copy", t)
        work = root / "opt" / "civicedge" / "work"
        probe = ["-m", "bench.aarch64", "--probe", "--photos", str(photos), "--work"]

        _say("the gate's face decisions natively")
        t = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ce-bench-aarch64-") as tmp:
            native = [sys.executable, *probe, str(Path(tmp) / "gate")]
            done = _run(native, env=_env([REPO], Path(tmp) / "home"), cwd=REPO, timeout=PROBE_TIMEOUT_S)
        phase("x86_gate", t)
        x86 = _json_out("the native gate probe", done)
        problems += [f"x86: {p}" for p in x86["problems"]]
        report["x86"] = {k: x86[k] for k in ("machine", "python", "litert", "numpy", "load_s")}
        decisions = [{"photo": d["photo"], "x86": _brief(d)} for d in x86["decisions"]]
        report["decisions"] = decisions
        temperatures = [{"ambient_c": t["ambient_c"], "x86": t["body_c"]} for t in x86["temperatures"]]
        report["temperatures"] = temperatures

        arm: dict[str, Any] = {}
        mismatches: list[str] = []
        for cpu in CPUS:
            _say(f"the same on an emulated {cpu.model} ({cpu.board}): slow: qemu translates all of its Arm code")
            t = time.perf_counter()
            done = _run(
                _emulated(root, cpu, [*probe, str(work / cpu.model)]),
                env=_env([app, site], work / "home"),
                cwd=app,
                timeout=PROBE_TIMEOUT_S,
            )
            phase(f"aarch64_gate_{cpu.model}", t)
            out = _json_out(f"the gate probe on {cpu.model}", done)
            arm[cpu.model] = {k: out[k] for k in ("machine", "python", "litert", "numpy", "load_s")}
            if out["machine"] != "aarch64":
                problems.append(f"{cpu.model}: the emulated probe says machine {out['machine']!r}, not aarch64")
            problems += [f"{cpu.model}: {p}" for p in out["problems"]]
            differ, worst = compare(out["decisions"], x86["decisions"])
            hotter, worst_c = compare_temperatures(out["temperatures"], x86["temperatures"])
            mismatches += [f"{cpu.model}: {p}" for p in differ + hotter]
            report["score_max_diff"] = max(report.get("score_max_diff", 0.0), worst)
            report["temperature_max_diff_c"] = max(report.get("temperature_max_diff_c", 0.0), worst_c)
            for row, t in zip(temperatures, out["temperatures"], strict=True):
                row[cpu.model] = t["body_c"]
            by_photo = {d["photo"]: d for d in out["decisions"]}
            for row in decisions:
                if row["photo"] in by_photo:
                    row[cpu.model] = _brief(by_photo[row["photo"]])
        first = arm[CPUS[0].model]
        report.update({k: first[k] for k in ("machine", "python", "litert", "numpy")})
        report["aarch64"] = {f"{c.model} ({c.board})": arm[c.model] for c in CPUS}
        report["decisions_match"] = not mismatches
        problems += mismatches

        _say(f"civicedge edge doctor on an emulated {CPUS[0].model}")
        t = time.perf_counter()
        state = work / "state"
        state.mkdir(parents=True, exist_ok=True)
        doctor = ["-m", "civicedge_cli", "edge", "doctor", "--json", "--state-dir", str(state)]
        done = _run(
            _emulated(root, CPUS[0], doctor),
            env=_env([app, site], work / "home"),
            cwd=app,
            timeout=PROBE_TIMEOUT_S,
        )
        phase("aarch64_doctor", t)
        report["doctor_exit"] = done.returncode
        report["doctor"] = _json_out("civicedge edge doctor", done)
        if not report["doctor"].get("ok") or done.returncode != 0:
            failed = [c["name"] for c in report["doctor"].get("checks", []) if c.get("state") == "fail"]
            problems.append(f"doctor failed (exit {done.returncode}): {', '.join(failed) or 'see its report'}")
        if report["doctor"].get("machine") != "aarch64":
            problems.append(f"the doctor ran on {report['doctor'].get('machine')!r}, not aarch64")
    except BenchError as exc:
        problems.append(str(exc))
    except subprocess.TimeoutExpired as exc:
        problems.append(f"timed out after {exc.timeout:.0f} s: {' '.join(str(a) for a in exc.cmd[:6])} …")
    phases["total"] = round(time.perf_counter() - t_start, 1)
    report["problems"] = problems
    report["failing_checks"] = len(problems)
    report["targets"] = {"failing_checks": 0}
    report["ok"] = not problems
    return report


# ---------------------------------------------------------------------------------------------------- the probe


def probe(photos: Path, work: Path) -> dict[str, Any]:
    """Enrol the resident from one photo, then one gate decision per photo. Runs on either machine."""
    from importlib import metadata

    import numpy as np
    from PIL import Image

    from edge.thermal.screen import Features, ThermalScreen
    from edge.vision.config import LivenessConfig, VisionConfig
    from edge.vision.gallery import Gallery
    from edge.vision.pipeline import GateVision

    def load(name: str, variant: str = "") -> Any:
        if variant == "grey":
            grey = np.asarray(Image.open(photos / name).convert("L"))
            return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
        rgb = np.asarray(Image.open(photos / name).convert("RGB"))
        return np.ascontiguousarray(rgb[:, ::-1]) if variant == "mirror" else rgb

    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gallery = Gallery(work / "gallery.db", b"bench-aarch64")
    # single photos: no thermal camera and no motion, so the colour cue alone (a gate may not run like this,
    # VisionConfig refuses it; the comparison between the two architectures needs one frame per decision)
    vision = GateVision(gallery, VisionConfig.model_construct(thermal=None, liveness=LivenessConfig(motion=False)))
    load_s = time.perf_counter() - t0
    problems: list[str] = []
    decisions: list[dict[str, Any]] = []
    try:
        enrol = load(ENROL_PHOTO)
        faces = vision.detector.detect(enrol)
        if not faces:
            problems.append(f"no face found in the enrolment photo {ENROL_PHOTO}")
        else:
            gallery.enroll(RESIDENT, [vision.embedder.embed(enrol, vision.detector.refine(enrol, faces[0]))])
            for label, name, variant in PROBE_PHOTOS:
                frame = load(name, variant)
                t = time.perf_counter()
                d = vision.decide(frame)
                ms = (time.perf_counter() - t) * 1000
                decisions.append(
                    {
                        "photo": label,
                        "decision": _label(d.outcome, d.resident_id, d.prompt),
                        "outcome": d.outcome,
                        "resident": d.resident_id,
                        "score": d.score,
                        "faces": d.faces,
                        "ms": round(ms, 1),
                    }
                )
    finally:
        vision.close()
        gallery.close()
    # the thermal calibration model (the photos have no thermal frames): body temperature from fixed readings
    screen = ThermalScreen()
    temperatures = [
        {
            "ambient_c": amb,
            "body_c": round(screen.estimate(Features(hot, face, amb, 0.6, 0.0, 0.05, 6.0)), 3),
        }
        for amb, face, hot in THERMAL_READINGS
    ]
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "litert": metadata.version("ai-edge-litert"),
        "numpy": np.__version__,
        "load_s": round(load_s, 2),
        "decisions": decisions,
        "temperatures": temperatures,
        "problems": problems,
    }


def _label(outcome: str, resident: str | None, prompt: str) -> str:
    if outcome == "match":
        return f"resident {resident}"
    if outcome == "unknown":
        return "stranger"
    if outcome == "no_face":
        return "no face"
    if outcome == "spoof":
        return f"spoof (a picture of {resident or 'nobody enrolled'})"
    return f"{outcome}: {prompt}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.aarch64", description=__doc__.split("\n")[0])
    parser.add_argument("--probe", action="store_true", help="run the gate probe on this machine (JSON on stdout)")
    parser.add_argument("--photos", type=Path, help="folder with the photos (--probe)")
    parser.add_argument("--work", type=Path, help="scratch folder for the gallery (--probe)")
    parser.add_argument("--rebuild", action="store_true", help="make the root and the wheels again")
    args = parser.parse_args(argv)
    if args.probe:
        if args.photos is None or args.work is None:
            parser.error("--probe needs --photos and --work")
        out = probe(args.photos, args.work)
    else:
        out = run(args.rebuild)
    print(json.dumps(out))
    return 0 if not out["problems"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
