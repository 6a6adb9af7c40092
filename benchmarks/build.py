"""Image build speed: edgepack's daemonless builder against its Docker backend, and rebuilds after a model change.

    python3 benchmarks/build.py [--repeats N] [--cold-repeats N] [--json] [--keep]

Run from the repository root after ``bash scripts/dev-services.sh`` (the local registry on
127.0.0.1:5000 with its python:3.11-slim amd64 + arm64 base, and dockerd). Every case runs the real
CLI, ``edgepack --workspace WS build-and-push ... --json``, as a child process (the console script
next to this Python), timed with ``time.perf_counter`` from spawn to exit: interpreter start-up and
imports included, as a user sees it. The rebuild cases are also timed in-process
(``packager.cli.main``) to show what start-up costs. The workspace (digits-linear.onnx plus a
generated MLP, several MB, one new version per rebuild) and every cache live in a fresh temporary
folder; images go to new repositories ``127.0.0.1:5000/edgepack-bench/build-<run>-<case>``.

Cases:

- ``warm-up``: one ``build-and-push`` that fills the dependency cache (not scored). Its ``deps/``
  folder is first hard-linked from ``--deps-from`` (default: your edgepack cache) when that holds the
  same staged install, so pip normally does not run; ``--deps-from none`` makes it run pip.
- ``cold``: an empty layer cache except ``deps/`` (hard links to the warm-up's), so every layer is
  tarred and gzipped again, the dependency layer included, but pip does not run; two platforms,
  pushed to a new repository (every blob uploaded except the base layers, which are mounted).
  Also to an OCI layout folder (no push), and one platform at a time.
- ``docker``: ``build-and-push --backend docker``, the same models, platforms and seeded cache, to
  another new repository, side by side with ``cold`` (they take turns, ``--cold-repeats`` rounds).
  Images this script tagged earlier are removed first, and ``docker history`` checks afterwards that
  every COPY layer was made during the case (a build-cache hit is flagged). Docker reports no byte
  count: its row shows the non-base layer and config sizes of the pushed manifests.
- ``no-op``: the cold case's inputs again, same cache, same tag: nothing to upload.
- ``model-only``: a model version never built before (new weights), same tag: only the models layer
  and the two configs change. For the MLP, and for the 2.8 kB digits model (the fixed cost).
- ``switch``: back and forth between two versions already built and pushed (all cached).

The table (stderr with ``--json``, which prints every sample on stdout) ends with the verdict against
the goals: model-only rebuild + push of a 2-platform image <= 3 s; cold build >= 5x faster than the
Docker backend. Traffic goes to 127.0.0.1 only (and pip's index only with ``--deps-from none``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.support.scorers (the MLP maker)
DIGITS = ROOT / "examples" / "models" / "digits-linear.onnx"
SERVICES_ENV = Path(os.environ.get("EDGEPACK_DEV_DIR", "/var/lib/edgepack-dev")) / "services.env"
REPO_PREFIX = "edgepack-bench/build-"
PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_MLP = "64,2048,1024,10"  # 2.2 M float32 weights: 9 MB of ONNX that gzip cannot shrink
GOAL_REBUILD_S = 3.0
GOAL_RATIO = 5.0
CASE_TIMEOUT_S = 900
MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class CaseFailed(Exception):
    pass


# ---------------------------------------------------------------------------------------------- processes

_CHILDREN: list[subprocess.Popen] = []


@dataclass
class Proc:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = CASE_TIMEOUT_S) -> Proc:
    """Run a child in its own process group, timed from spawn to exit; the group is killed on timeout/Ctrl-C."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _CHILDREN.append(proc)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        out, err = proc.communicate()
        return Proc(-1, out, err + f"\n(timed out after {timeout:.0f} s)", time.perf_counter() - t0)
    finally:
        kill(proc)
    return Proc(proc.returncode, out, err, time.perf_counter() - t0)


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group while its leader still runs (so the group id is still ours)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def kill_all() -> None:
    for proc in list(_CHILDREN):
        kill(proc)


def last_lines(text: str, n: int = 6) -> str:
    return "\n".join(line for line in text.strip().splitlines()[-n:])


def docker(*args: str, timeout: float = 300) -> Proc:
    return run(["docker", *args], timeout=timeout)


# ---------------------------------------------------------------------------------------------- machine


def cpu_times() -> tuple[int, int, int]:
    """(total, idle + iowait, steal) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    return total, fields[3] + fields[4], fields[7] if len(fields) > 7 else 0


@dataclass
class Load:
    """Load average before a sample, and the machine's CPU use while it ran (everyone's, ours included)."""

    load_1m: float
    start: tuple[int, int, int] = (0, 0, 0)
    busy_pct: float | None = None
    steal_pct: float | None = None

    @classmethod
    def begin(cls) -> Load:
        return cls(round(os.getloadavg()[0], 2), cpu_times())

    def end(self) -> None:
        total, idle, steal = (b - a for a, b in zip(self.start, cpu_times(), strict=True))
        if total > 0:
            self.busy_pct = round(100 * (total - idle - steal) / total, 1)
            self.steal_pct = round(100 * steal / total, 1)


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "packager", "edge_module"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{rev}{' + uncommitted changes' if dirty else ''}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


# ---------------------------------------------------------------------------------------------- registry


class Registry:
    """Just enough of the distribution API to read manifests back (no proxy: 127.0.0.1 only)."""

    def __init__(self, host: str):
        self.host = host
        self._open = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

    def get(self, path: str, accept: str = MANIFEST_TYPES) -> dict[str, Any]:
        req = urllib.request.Request(f"http://{self.host}{path}", headers={"Accept": accept})
        with self._open(req, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def manifest(self, repo: str, ref: str) -> dict[str, Any]:
        return self.get(f"/v2/{repo}/manifests/{ref}")

    def image_layers(self, repo: str, ref: str) -> set[str]:
        """Every layer digest of ``repo:ref`` (an index: of all its platforms)."""
        doc = self.manifest(repo, ref)
        if "manifests" in doc:
            return {d for m in doc["manifests"] for d in self.image_layers(repo, m["digest"])}
        return {la["digest"] for la in doc.get("layers", [])}


def read_services() -> dict[str, str]:
    if not SERVICES_ENV.is_file():
        raise SystemExit(
            f"error: {SERVICES_ENV} is missing: start the dev services first (as root: bash scripts/dev-services.sh)"
        )
    env = {}
    for line in SERVICES_ENV.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("'\"")
    return env


def check_services(services: dict[str, str]) -> tuple[Registry, str, str]:
    """The registry, the base image and dockerd must be up; otherwise exit with what to run."""
    host = services.get("EDGEPACK_TEST_REGISTRY", "127.0.0.1:5000")
    base = services.get("EDGEPACK_TEST_BASE_IMAGE", f"{host}/library/python:3.11-slim")
    if not host.startswith(("127.0.0.1:", "localhost:")):
        raise SystemExit(f"error: the test registry {host} is not on 127.0.0.1: this benchmark only talks to loopback")
    hint = "start the dev services (as root: bash scripts/dev-services.sh)"
    registry = Registry(host)
    try:
        registry.get("/v2/", accept="application/json")
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"error: the registry at http://{host}/v2/ does not answer ({e}): {hint}") from None
    repo, _, tag = base[len(host) + 1 :].rpartition(":")
    try:
        index = registry.manifest(repo, tag)
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"error: base image {base} is not in the registry ({e}): {hint}") from None
    have = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index.get("manifests", [])}
    if not set(PLATFORMS) <= have:
        raise SystemExit(f"error: base image {base} has platforms {sorted(have)}, not {list(PLATFORMS)}: {hint}")
    if not shutil.which("docker"):
        raise SystemExit(f"error: the docker client is not installed: {hint}")
    ping = docker("version", "--format", "{{.Server.Version}}", timeout=30)
    if ping.code != 0:
        raise SystemExit(f"error: dockerd does not answer ({last_lines(ping.stderr, 2)}): {hint}")
    return registry, base, ping.stdout.strip()


# ---------------------------------------------------------------------------------------------- models


def make_mlp(path: Path, dims: list[int], seed: int) -> None:
    """An ONNX MLP (Gemm + Relu, softmax) with random weights from ``seed``, like ../shared/bench/make_model.py."""
    from tests.support.scorers import make_mlp as mlp_bytes

    path.write_bytes(mlp_bytes(tuple(dims), seed))


def make_digits(path: Path, factor: float) -> None:
    """digits-linear.onnx with its first weight tensor scaled by ``factor`` (a new version, same size)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(DIGITS)
    w = model.graph.initializer[0]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * factor, w.name))
    onnx.save(model, path)


# ---------------------------------------------------------------------------------------------- results


@dataclass
class Sample:
    seconds: float
    load_1m: float
    busy_pct: float | None = None
    steal_pct: float | None = None
    bytes_sent: int | None = None
    blobs_uploaded: int | None = None
    blobs_mounted: int | None = None
    blobs_skipped: int | None = None
    phases: dict[str, float] = field(default_factory=dict)
    model: str = ""
    round: int = 0


@dataclass
class Row:
    case: str
    how: str  # subprocess (wall clock of the CLI, start-up included) or in-process
    platforms: str
    scored: bool = True
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ratio: float | None = None  # docker rows: docker median / edgepack median of the same platforms
    failed: bool = False

    def seconds(self) -> list[float]:
        return [s.seconds for s in self.samples]

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds()) if self.samples else None

    def summary(self) -> dict[str, Any]:
        secs = self.seconds()
        stats = {"median_s": self.median, "min_s": min(secs), "max_s": max(secs)} if secs else {}
        return {**asdict(self), **{k: round(v, 3) for k, v in stats.items()}, "n": len(secs)}


def add_sample(row: Row, sample: Sample) -> Sample:
    row.samples.append(sample)
    extra = ""
    if sample.bytes_sent is not None:
        extra = f", {human(sample.bytes_sent)} sent, {sample.blobs_uploaded} uploaded"
    _log(
        f"  {row.case} [{row.how}]: {sample.seconds:.2f} s{extra} (load {sample.load_1m:.2f}, busy {sample.busy_pct}%)"
    )
    return sample


def human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


# ---------------------------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, registry: Registry, base: str):
        self.args = args
        self.work = work
        self.registry = registry
        self.base = base
        self.ws = work / "ws"
        self.run_id = uuid.uuid4().hex[:8]
        self.platforms = ",".join(PLATFORMS)
        self.docker_tags: list[str] = []
        self.repos: list[str] = []
        scripts = Path(sysconfig.get_path("scripts")) / "edgepack"
        # the console script pip installed next to this Python (a pyenv shim would add its own start-up)
        self.edgepack = (
            [str(scripts)] if scripts.is_file() else [sys.executable, "-c", "from packager.cli import main; main()"]
        )
        self.warm_cache = work / "cache-warm"
        self._base_layers: set[str] | None = None
        self.mlp_size = 0
        self.new_mlp_versions: list[int] = []  # never built: one per model-only sample
        self.new_digits_versions: list[int] = []

    # -- running the CLI
    def env(self, cache: Path) -> dict[str, str]:
        return {**os.environ, "EDGEPACK_CACHE_DIR": str(cache)}

    def cli(self, cache: Path, *args: str) -> tuple[float, dict[str, Any]]:
        """``edgepack --workspace WS ARGS --json`` as a child process; (seconds, parsed JSON)."""
        proc = run([*self.edgepack, "--workspace", str(self.ws), *args, "--json"], env=self.env(cache))
        if proc.code != 0:
            raise CaseFailed(f"edgepack {' '.join(args[:1])} exited {proc.code}: {last_lines(proc.stderr)}")
        try:
            return proc.seconds, json.loads(proc.stdout)
        except ValueError:
            raise CaseFailed(f"edgepack {args[0]} printed no JSON: {last_lines(proc.stdout + proc.stderr)}") from None

    def inprocess(self, cache: Path, *args: str) -> tuple[float, dict[str, Any]]:
        """The same through ``packager.cli.main`` in this process (no interpreter start-up, imports done)."""
        from packager.cli import main

        out, err = io.StringIO(), io.StringIO()
        old = os.environ.get("EDGEPACK_CACHE_DIR")
        os.environ["EDGEPACK_CACHE_DIR"] = str(cache)
        code: Any = 0
        t0 = time.perf_counter()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(["--workspace", str(self.ws), *args, "--json"])
        except SystemExit as e:
            code = e.code
        finally:
            seconds = time.perf_counter() - t0
            if old is None:
                os.environ.pop("EDGEPACK_CACHE_DIR", None)
            else:
                os.environ["EDGEPACK_CACHE_DIR"] = old
        if code not in (0, None):
            raise CaseFailed(f"edgepack {args[0]} (in-process) exited {code}: {last_lines(err.getvalue())}")
        return seconds, json.loads(out.getvalue())

    def register(self, name: str, path: Path) -> int:
        _, doc = self.cli(self.warm_cache, "model", "register", "-n", name, "-p", str(path))
        return int(doc["version"])

    # -- caches and repositories
    def seeded_cache(self, name: str) -> Path:
        """A new cache holding only hard links to the warm-up's ``deps/`` (pip will not run, every layer is tarred)."""
        cache = self.work / f"cache-{name}"
        shutil.copytree(self.warm_cache / "deps", cache / "deps", copy_function=link_or_copy, symlinks=True)
        return cache

    def repo(self, name: str) -> str:
        repo = f"{self.registry.host}/{REPO_PREFIX}{self.run_id}-{name}"
        self.repos.append(repo)
        return repo

    def image_args(self, models: list[str], platforms: str, *where: str) -> list[str]:
        return [*(a for m in models for a in ("-m", m)), "--base", self.base, "--platform", platforms, *where]

    def base_layers(self) -> set[str]:
        if self._base_layers is None:
            repo, _, tag = self.base[len(self.registry.host) + 1 :].rpartition(":")
            self._base_layers = self.registry.image_layers(repo, tag)
        return self._base_layers

    # -- docker
    def remove_docker_images(self, also_earlier_runs: bool = False) -> None:
        """``docker rmi`` the images this run tagged (and, at start, those of earlier runs of this script)."""
        tags = list(self.docker_tags)
        if also_earlier_runs:
            listed = docker("images", "--format", "{{.Repository}}:{{.Tag}}", timeout=60).stdout.split()
            tags += [t for t in listed if t.startswith(f"{self.registry.host}/{REPO_PREFIX}")]
        for tag in dict.fromkeys(tags):
            if docker("image", "inspect", tag, timeout=60).code == 0:
                rm = docker("rmi", tag, timeout=120)
                if rm.code != 0:
                    _log(f"  warning: docker rmi {tag}: {last_lines(rm.stderr, 2)}")
        self.docker_tags = [t for t in self.docker_tags if t not in tags]

    def docker_cache_hits(self, tags: list[str], since: float) -> list[str]:
        """COPY steps of ``tags`` whose layer is older than the case: the classic builder's cache answered them."""
        hits = []
        for tag in tags:
            proc = docker("history", "--no-trunc", "--format", "{{json .}}", tag, timeout=60)
            for line in proc.stdout.splitlines():
                entry = json.loads(line)
                if " COPY " not in entry.get("CreatedBy", ""):
                    continue
                created = dt.datetime.fromisoformat(entry["CreatedAt"].replace("Z", "+00:00")).timestamp()
                if created < since - 2:
                    hits.append(f"{tag}: {entry['CreatedBy'].split(' COPY ', 1)[1][:60]}")
        return hits

    def pushed_bytes(self, repo: str, digests: list[str]) -> tuple[int, int]:
        """(bytes, blobs) of the configs and non-base layers of the pushed manifests: what a push must upload."""
        name = repo[len(self.registry.host) + 1 :]
        total, blobs = 0, 0
        for digest in digests:
            doc = self.registry.manifest(name, digest)
            for blob in [doc["config"], *doc["layers"]]:
                if blob["digest"] not in self.base_layers():
                    total += int(blob["size"])
                    blobs += 1
        return total, blobs


def link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def push_sample(seconds: float, doc: dict[str, Any], load: Load, model: str = "", rnd: int = 0) -> Sample:
    push = doc.get("push") or {}
    phases = dict(doc.get("seconds") or {})
    if push:
        phases["push"] = push.get("seconds")
    return Sample(
        seconds=seconds,
        load_1m=load.load_1m,
        busy_pct=load.busy_pct,
        steal_pct=load.steal_pct,
        bytes_sent=push.get("bytes_sent"),
        blobs_uploaded=push.get("blobs_uploaded"),
        blobs_mounted=push.get("blobs_mounted"),
        blobs_skipped=push.get("blobs_skipped"),
        phases=phases,
        model=model,
        round=rnd,
    )


# ---------------------------------------------------------------------------------------------- cases


def case_startup(bench: Bench) -> Row:
    row = Row("CLI start-up (edgepack --version)", "subprocess", "-", scored=False)
    for _ in range(bench.args.repeats):
        load = Load.begin()
        proc = run([*bench.edgepack, "--version"], timeout=60)
        load.end()
        if proc.code != 0:
            row.failed = True
            row.notes.append(last_lines(proc.stderr, 2))
            break
        add_sample(row, Sample(proc.seconds, load.load_1m, load.busy_pct, load.steal_pct))
    row.notes.append(" ".join(bench.edgepack[:1]))
    return row


def case_warmup(bench: Bench, model: str) -> Row:
    row = Row("warm-up: fills the dependency cache", "subprocess", bench.platforms, scored=False)
    source = bench.args.deps_from
    seeded = 0
    if source is not None and (source / "deps").is_dir():
        for entry in sorted((source / "deps").iterdir()):
            if (entry / "stage.json").is_file() and (entry / "site-packages").is_dir():
                dest = bench.warm_cache / "deps" / entry.name
                shutil.copytree(entry, dest, copy_function=link_or_copy, symlinks=True)
                seeded += 1
    before = set(os.listdir(bench.warm_cache / "deps")) if (bench.warm_cache / "deps").is_dir() else set()
    _log(f"warm-up (load {os.getloadavg()[0]:.2f}): {seeded} staged install(s) linked from {source}")
    load = Load.begin()
    seconds, doc = bench.cli(
        bench.warm_cache,
        "build-and-push",
        *bench.image_args([model], bench.platforms, "-t", bench.repo("warmup") + ":t"),
    )
    load.end()
    add_sample(row, push_sample(seconds, doc, load, model))
    ran_pip = set(os.listdir(bench.warm_cache / "deps")) - before
    row.notes.append(
        f"pip ran for {len(ran_pip)} platform(s)" if ran_pip else f"no pip: staged deps linked from {source}"
    )
    return row


def case_name(kind: str, platforms: str, rnd: int) -> str:
    """Repository and cache suffix: ``oci-2p-r1``, ``docker-arm64-r2``..."""
    plats = platforms.split(",")
    return f"{kind}-{len(plats)}p-r{rnd}" if len(plats) > 1 else f"{kind}-{plats[0].split('/', 1)[1]}-r{rnd}"


def case_cold_oci(bench: Bench, row: Row, model: str, platforms: str, rnd: int, output: str = "push") -> Path:
    """A cold edgepack build (cache seeded with deps only); returns the cache and, via the row, the repository."""
    name = case_name("oci" if output == "push" else "layout", platforms, rnd)
    cache = bench.seeded_cache(name)
    if output == "push":
        repo = bench.repo(name)
        where = ["-t", f"{repo}:t"]
        command = "build-and-push"
    else:
        repo = ""
        where = ["--output", f"oci:{bench.work / ('layout-' + name)}", "-t", "t"]
        command = "build"
    _log(f"{row.case}, {platforms}, round {rnd} (load {os.getloadavg()[0]:.2f})")
    load = Load.begin()
    try:
        seconds, doc = bench.cli(cache, command, *bench.image_args([model], platforms, *where))
    except CaseFailed as e:
        row.failed = True
        row.notes.append(str(e))
        _log(f"  failed: {e}")
        return cache
    load.end()
    add_sample(row, push_sample(seconds, doc, load, model, rnd))
    return cache


def case_cold_docker(bench: Bench, row: Row, model: str, platforms: str, rnd: int) -> None:
    name = case_name("docker", platforms, rnd)
    cache = bench.seeded_cache(name)
    repo = bench.repo(name)
    plats = platforms.split(",")
    tags = [f"{repo}:t-{p.split('/', 1)[1].replace('/', '')}" for p in plats]
    bench.remove_docker_images()  # nothing an earlier case built may serve as build cache
    _log(f"{row.case}, {platforms}, round {rnd} (load {os.getloadavg()[0]:.2f})")
    load = Load.begin()
    since = time.time()
    try:
        bench.docker_tags += tags
        seconds, doc = bench.cli(
            cache, "build-and-push", "--backend", "docker", *bench.image_args([model], platforms, "-t", f"{repo}:t")
        )
        load.end()
        digests = [doc["platforms"][p]["digest"] for p in plats]
    except CaseFailed as e:
        row.notes.append(f"--backend docker failed: {e}; measured by hand (package + docker build + push)")
        _log(f"  --backend docker failed: {e}\n  measuring package + docker build + docker push instead")
        bench.remove_docker_images()
        load = Load.begin()
        since = time.time()
        try:
            seconds, digests = docker_by_hand(bench, cache, model, platforms, tags)
        except CaseFailed as e2:
            row.failed = True
            row.notes.append(f"by hand too: {e2}")
            _log(f"  failed: {e2}")
            shutil.rmtree(cache, ignore_errors=True)
            return
        load.end()
        doc = {"seconds": {"docker by hand": seconds}}
    sample = push_sample(seconds, doc, load, model, rnd)
    try:
        sample.bytes_sent, sample.blobs_uploaded = bench.pushed_bytes(repo, digests)
    except (urllib.error.URLError, OSError, KeyError) as e:
        row.notes.append(f"could not read the pushed manifests back: {e}")
    add_sample(row, sample)
    hits = bench.docker_cache_hits(tags, since)
    if hits:
        row.notes.append(f"DOUBTFUL round {rnd}: docker's build cache answered {len(hits)} COPY step(s): {hits[0]}")
        _log(f"  warning: docker's build cache answered: {'; '.join(hits)}")
    bench.remove_docker_images()
    shutil.rmtree(cache, ignore_errors=True)


def docker_by_hand(bench: Bench, cache: Path, model: str, platforms: str, tags: list[str]) -> tuple[float, list[str]]:
    """The fallback: ``edgepack package -o DIR``, then ``docker build --platform`` and ``docker push`` per platform."""
    t0 = time.perf_counter()
    ctx = bench.work / f"contexts-{uuid.uuid4().hex[:6]}"
    _, doc = bench.cli(cache, "package", *bench.image_args([model], platforms, "-o", str(ctx)))
    digests = []
    for (plat, path), tag in zip(doc["contexts"].items(), tags, strict=True):
        built = docker("build", "--platform", plat, "--network", "host", "-t", tag, path, timeout=CASE_TIMEOUT_S)
        if built.code != 0:
            raise CaseFailed(f"docker build --platform {plat}: {last_lines(built.stdout + built.stderr)}")
        pushed = docker("push", tag, timeout=CASE_TIMEOUT_S)
        if pushed.code != 0:
            raise CaseFailed(f"docker push {tag}: {last_lines(pushed.stdout + pushed.stderr)}")
        digests += [w for w in pushed.stdout.replace("digest:", " ").split() if w.startswith("sha256:")][:1]
    seconds = time.perf_counter() - t0
    shutil.rmtree(ctx, ignore_errors=True)
    return seconds, digests


def rebuild_cases(bench: Bench, cache: Path, repo: str, rows: list[Row]) -> None:
    """no-op, model-only (new versions of the MLP, then of digits) and switch, all to ``repo:t`` with ``cache``."""
    n = bench.args.repeats
    target = ["-t", f"{repo}:t"]
    plats = bench.platforms

    def sample(row: Row, model: str, inprocess: bool = False) -> None:
        load = Load.begin()
        try:
            fn = bench.inprocess if inprocess else bench.cli
            seconds, doc = fn(cache, "build-and-push", *bench.image_args([model], plats, *target))
        except CaseFailed as e:
            row.failed = True
            row.notes.append(str(e))
            _log(f"  failed: {e}")
            return
        load.end()
        add_sample(row, push_sample(seconds, doc, load, model))

    _log(f"rebuilds to {repo}:t (load {os.getloadavg()[0]:.2f})")
    noop = Row("no-op rebuild + push (same inputs)", "subprocess", plats, notes=[f"to {repo}:t"])
    noop_in = Row("no-op rebuild + push (same inputs)", "in-process", plats)
    with contextlib.redirect_stderr(io.StringIO()):
        bench.inprocess(cache, "build-and-push", *bench.image_args(["mlp:1"], plats, *target))  # imports, untimed
    for _ in range(n):
        sample(noop, "mlp:1")
        sample(noop_in, "mlp:1", inprocess=True)
    rows += [noop, noop_in]

    mlp = Row(f"model-only rebuild + push (MLP, {human(bench.mlp_size)}, new version)", "subprocess", plats)
    mlp_in = Row(mlp.case, "in-process", plats)
    versions = iter(bench.new_mlp_versions)
    for _ in range(n):
        sample(mlp, f"mlp:{next(versions)}")
        sample(mlp_in, f"mlp:{next(versions)}", inprocess=True)
    rows += [mlp, mlp_in]

    digits = Row(
        f"model-only rebuild + push (digits, {human(DIGITS.stat().st_size)}, new version)", "subprocess", plats
    )
    sample(Row("(untimed: the repo's tag to digits:1)", "subprocess", plats), "digits:1")
    for version in bench.new_digits_versions:
        sample(digits, f"digits:{version}")
    rows.append(digits)

    switch = Row("model switch to a built + pushed version (mlp:1 <-> mlp:2)", "subprocess", plats)
    sample(Row("(untimed: builds and pushes mlp:2 once)", "subprocess", plats), "mlp:2")
    for i in range(n):
        sample(switch, f"mlp:{1 + i % 2}")
    rows.append(switch)


# ---------------------------------------------------------------------------------------------- output


def add_ratios(rows: list[Row]) -> None:
    edgepack = {r.platforms: r for r in rows if r.case.startswith("cold build + push") and r.samples}
    for row in rows:
        if row.case.startswith("Docker backend") and row.samples and row.platforms in edgepack:
            row.ratio = row.median / edgepack[row.platforms].median  # type: ignore[operator]


def table(rows: list[Row]) -> str:
    def num(value: float | None, spec: str = ".2f") -> str:
        return "-" if value is None else format(value, spec)

    def sent(row: Row) -> tuple[str, str]:
        values = [s.bytes_sent for s in row.samples if s.bytes_sent is not None]
        if not values:
            return "-", "-"
        lo, hi = min(values), max(values)
        text = human(int(statistics.median(values)))
        if human(lo) != human(hi):
            text = f"{human(lo)}..{human(hi)}"
        up = [s for s in row.samples if s.blobs_uploaded is not None]
        counts = {(s.blobs_uploaded, s.blobs_mounted, s.blobs_skipped) for s in up}
        blob_text = "/".join("-" if v is None else str(v) for v in sorted(counts, key=str)[0]) if counts else "-"
        if len(counts) > 1:
            blob_text += " (varies)"
        if row.case.startswith("Docker backend"):
            text = "~" + text
        return text, blob_text

    header = ["case", "run as", "platforms", "n", "median s", "min s", "max s", "bytes sent", "up/mnt/skip", "load"]
    header += ["busy %", "docker/edge", "notes"]
    body = []
    for r in rows:
        secs = r.seconds()
        bytes_text, blobs_text = sent(r)
        loads = [s.load_1m for s in r.samples]
        busy = [s.busy_pct for s in r.samples if s.busy_pct is not None]
        body.append(
            [
                r.case + ("" if r.scored else " [not scored]"),
                r.how,
                r.platforms.replace("linux/", ""),
                str(len(secs)),
                num(r.median),
                num(min(secs) if secs else None),
                num(max(secs) if secs else None),
                bytes_text,
                blobs_text,
                f"{min(loads):.1f}-{max(loads):.1f}" if loads else "-",
                f"{statistics.median(busy):.0f}" if busy else "-",
                f"{r.ratio:.1f}x" if r.ratio else "-",
                ("FAILED: " if r.failed else "") + "; ".join(r.notes),
            ]
        )
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    widths[-1] = len(header[-1])
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    for b in body:
        lines.append(
            "  ".join(
                c.rjust(w) if 3 <= i <= 11 else c.ljust(w) for i, (c, w) in enumerate(zip(b, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> tuple[list[str], dict[str, Any]]:
    lines, doc = [], {}
    mlp = next((r for r in rows if r.case.startswith("model-only") and "MLP" in r.case and r.how == "subprocess"), None)
    if mlp and mlp.samples:
        worst = max(mlp.seconds())
        ok = mlp.median <= GOAL_REBUILD_S  # type: ignore[operator]
        doc["model_only_rebuild"] = {"median_s": mlp.median, "max_s": worst, "goal_s": GOAL_REBUILD_S, "met": ok}
        lines.append(
            f"goal 1, model-only rebuild + push of a 2-platform image <= {GOAL_REBUILD_S:g} s: "
            f"median {mlp.median:.2f} s, max {worst:.2f} s over {len(mlp.samples)} "
            f"(CLI start-up included) -> {'MET' if ok else 'NOT MET'}"
            + ("" if worst <= GOAL_REBUILD_S else " (the max is over)")
        )
    else:
        lines.append("goal 1: no model-only figure (the case failed)")
    docker = next((r for r in rows if r.case.startswith("Docker backend") and r.platforms.count(",") == 1), None)
    edge = next((r for r in rows if r.case.startswith("cold build + push") and r.platforms.count(",") == 1), None)
    if docker and edge and docker.ratio:
        paired = {s.round: s.seconds for s in edge.samples}
        per_round = [d.seconds / paired[d.round] for d in docker.samples if d.round in paired]
        ok = docker.ratio >= GOAL_RATIO
        doubtful = any(n.startswith("DOUBTFUL") for n in docker.notes)
        doc["cold_vs_docker"] = {
            "edgepack_median_s": edge.median,
            "docker_median_s": docker.median,
            "ratio": docker.ratio,
            "ratio_per_round": per_round,
            "goal": GOAL_RATIO,
            "met": ok,
            "doubtful": doubtful,
        }
        lines.append(
            f"goal 2, cold build + push (deps warm) >= {GOAL_RATIO:g}x faster than the Docker backend: "
            f"{docker.median:.1f} s / {edge.median:.2f} s = {docker.ratio:.1f}x "
            f"(rounds: {', '.join(f'{x:.1f}x' for x in per_round)}) -> {'MET' if ok else 'NOT MET'}"
            + (" (DOUBTFUL: docker's build cache was used)" if doubtful else "")
        )
    else:
        lines.append("goal 2: no ratio (a cold case failed)")
    return lines, doc


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="samples of each rebuild case (default 5)")
    parser.add_argument(
        "--cold-repeats", type=int, default=2, help="rounds of the cold cases, edgepack and docker in turn (default 2)"
    )
    parser.add_argument("--mlp", default=DEFAULT_MLP, help=f"layer sizes of the generated MLP (default {DEFAULT_MLP})")
    parser.add_argument(
        "--deps-from",
        default=None,
        help="an edgepack cache whose staged deps/ seed the warm-up, or 'none' to run pip "
        "(default: $EDGEPACK_CACHE_DIR or ~/.cache/edgepack)",
    )
    parser.add_argument("--no-per-platform", action="store_true", help="skip the one-platform cold cases")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (workspace, caches, layouts)")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON on stdout (table on stderr)")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.cold_repeats < 1:
        parser.error("--repeats and --cold-repeats must be >= 1")
    try:
        args.mlp_dims = [int(x) for x in args.mlp.split(",")]
    except ValueError:
        parser.error("--mlp: comma-separated layer sizes, e.g. 64,2048,1024,10")
    if len(args.mlp_dims) < 2 or min(args.mlp_dims) < 1:
        parser.error("--mlp needs at least two positive sizes")
    if args.deps_from == "none":
        args.deps_from = None
    else:
        sys.path.insert(0, str(ROOT))
        from packager.image.spec import cache_dir

        args.deps_from = Path(args.deps_from) if args.deps_from else cache_dir()
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for var in ("NO_PROXY", "no_proxy"):  # the registry is on loopback: never through a proxy
        os.environ[var] = ",".join(x for x in ("127.0.0.1", "localhost", os.environ.get(var, "")) if x)
    try:
        registry, base, docker_version = check_services(read_services())
    except SystemExit as e:  # a prerequisite is missing: say which, exit 2 like the other benchmarks
        print(e.code, file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    started = time.perf_counter()
    load0 = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="edgepack-build-bench-"))
    bench = Bench(args, work, registry, base)
    rows: list[Row] = []
    rebuild_repo = ""
    try:
        _log(
            f"work folder {work}; run {bench.run_id}; {os.cpu_count()} cpus, load {load0[0]:.2f} {load0[1]:.2f} "
            f"{load0[2]:.2f}; docker {docker_version}; registry {registry.host}; base {base}"
        )
        bench.remove_docker_images(also_earlier_runs=True)

        # the workspace: digits, the MLP v1 (for cold, no-op), v2 (switch) and one new version per model-only sample
        models = work / "models"
        models.mkdir()
        bench.register("digits", DIGITS)
        n_mlp = 2 + 2 * args.repeats
        versions = []
        for seed in range(1, n_mlp + 1):
            path = models / f"mlp-{seed}.onnx"
            make_mlp(path, args.mlp_dims, seed)
            versions.append(bench.register("mlp", path))
        bench.mlp_size = (models / "mlp-1.onnx").stat().st_size
        bench.new_mlp_versions = versions[2:]
        for i in range(args.repeats):
            path = models / f"digits-{i + 2}.onnx"
            make_digits(path, 1.0 + (i + 1) / 8)
            bench.new_digits_versions.append(bench.register("digits", path))
        _log(f"registered digits ({DIGITS.stat().st_size} B) and mlp ({human(bench.mlp_size)}) x {n_mlp}")

        rows.append(case_startup(bench))
        try:
            rows.append(case_warmup(bench, "mlp:1"))
        except CaseFailed as e:
            raise SystemExit(f"error: the warm-up build failed, nothing to measure: {e}") from None

        cold = Row("cold build + push (deps warm)", "subprocess", bench.platforms)
        dock = Row("Docker backend build + push", "subprocess", bench.platforms)
        layout = Row("cold build to oci:DIR (deps warm, no push)", "subprocess", bench.platforms)
        singles = {
            p: (
                Row("cold build + push (deps warm)", "subprocess", p),
                Row("Docker backend build + push", "subprocess", p),
            )
            for p in ([] if args.no_per_platform else PLATFORMS)
        }
        rows += [cold, dock, layout, *(r for pair in singles.values() for r in pair)]
        rebuild_cache: Path | None = None
        for rnd in range(1, args.cold_repeats + 1):
            cache = case_cold_oci(bench, cold, "mlp:1", bench.platforms, rnd)
            if rnd == 1 and cold.samples:
                rebuild_cache, rebuild_repo = cache, bench.repos[-1]
            else:
                shutil.rmtree(cache, ignore_errors=True)
            case_cold_docker(bench, dock, "mlp:1", bench.platforms, rnd)
            shutil.rmtree(case_cold_oci(bench, layout, "mlp:1", bench.platforms, rnd, output="layout"))
            for folder in work.glob("layout-*"):
                shutil.rmtree(folder, ignore_errors=True)
            for p, (edge_row, docker_row) in singles.items():
                shutil.rmtree(case_cold_oci(bench, edge_row, "mlp:1", p, rnd), ignore_errors=True)
                case_cold_docker(bench, docker_row, "mlp:1", p, rnd)

        if rebuild_cache is not None:
            rebuild_cases(bench, rebuild_cache, rebuild_repo, rows)
        else:
            _log("the cold build failed: no rebuild cases")
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    finally:
        kill_all()
        with contextlib.suppress(Exception):
            bench.remove_docker_images()
        if args.keep:
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    add_ratios(rows)
    lines, goals = verdict(rows)
    elapsed = time.perf_counter() - started
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in load0],
            "docker": docker_version,
        },
        "settings": {
            "edgepack": git_revision(),
            "command": bench.edgepack,
            "registry": registry.host,
            "base": base,
            "platforms": list(PLATFORMS),
            "mlp": args.mlp_dims,
            "mlp_bytes": getattr(bench, "mlp_size", None),
            "repeats": args.repeats,
            "cold_repeats": args.cold_repeats,
            "repositories": f"{registry.host}/{REPO_PREFIX}{bench.run_id}-*",
            "rebuild_repository": rebuild_repo,
        },
        "results": [r.summary() for r in rows],
        "goals": goals,
        "elapsed_s": round(elapsed, 1),
    }
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        print(json.dumps(report, indent=1))
    print("\n" + table(rows), file=out)
    print("\n" + "\n".join(lines), file=out)
    print(
        f"\n{report['date']}, {os.cpu_count()} cpus ({report['machine']['cpu']}), load {load0[0]:.2f} at start; "
        f"docker {docker_version}; edgepack {report['settings']['edgepack']}; run took {elapsed:.0f} s",
        file=out,
    )
    return 0 if not any(r.failed for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
