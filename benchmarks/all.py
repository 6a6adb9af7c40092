"""Every benchmark in ``benchmarks/``, one after another, and their headline figures in one table.

    python3 benchmarks/all.py [--markdown] [--json] [--full] [--only NAME]... [--skip NAME]... [--timeout S]

Runs each script with ``--json`` (sequentially: never two at once on the 2-core machine), short but
meaningful settings by default (``--quick``; ``--full`` runs each script with its own defaults), and
keeps the figures each issue set goals for: req/s and p99 for HTTP, round trips/s for MQTT, cold and
no-op build seconds, deploy -> 200 and update seconds, the router's ratio and added p99, FPGA
emulation's slowdown per format, INT8 vs FP32 size, accuracy and latency, and so on. The table
(rich, or markdown with ``--markdown``) has one row per figure: benchmark, figure, value, goal (when
one was named; met or NOT MET) and a note. A benchmark that fails, times out or misses a prerequisite
(wrk, mosquitto, ``../shared/bench``, the dev services...) gets one row "failed: <reason>" and the
run goes on. The 1-minute load average is printed before each benchmark; above 1.5 (someone else is
using the machine) its rows say so. ``--json`` prints every script's own report plus the figures
on stdout (the table then goes to stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED_BENCH = ROOT.parent / "shared" / "bench"
BUSY_LOAD = 1.5

Figure = dict[str, Any]


@dataclass
class Bench:
    """One benchmark script: how to run it and which figures to keep from its ``--json``."""

    name: str
    quick: list[str]
    timeout_s: float  # for the quick settings; --full multiplies it
    extract: Callable[[Any], list[Figure]]
    needs: Callable[[], str | None] = lambda: None  # a missing prerequisite, or None
    full: list[str] = field(default_factory=list)


def fig(figure: str, value: str, goal: str = "", met: bool | None = None) -> Figure:
    return {"figure": figure, "value": value, "goal": goal, "met": met}


def _num(x: float | None, digits: int = 0) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


# ---- prerequisites -------------------------------------------------------------------------------------


def _need_exe(*names: str) -> str | None:
    missing = [n for n in names if not shutil.which(n)]
    return f"{', '.join(missing)} not installed" if missing else None


def _need_shared() -> str | None:
    if (SHARED_BENCH / "make_model.py").is_file() and (SHARED_BENCH / "bodies.py").is_file():
        return None
    return f"{SHARED_BENCH} (make_model.py, bodies.py) is missing"


def _need_modules(*mods: str) -> str | None:
    missing = [m for m in mods if importlib.util.find_spec(m) is None]
    return f"python module(s) {', '.join(missing)} not installed" if missing else None


def _first(*checks: Callable[[], str | None]) -> Callable[[], str | None]:
    def check() -> str | None:
        return next((r for r in (c() for c in checks) if r), None)

    return check


# ---- headline figures per benchmark ---------------------------------------------------------------------


def http_scoring(doc: dict) -> list[Figure]:
    out = []
    for r in doc["results"]:
        if r["section"] != "main" or r["server"] not in ("edgepack", "in-process", "thin"):
            continue
        who = f"{r['server']} {r['route']}" + (
            f", {r['workers']} worker{'s' if r['workers'] != '1' else ''}" if r["server"] != "in-process" else ""
        )
        goal, met = "", None
        if r["server"] == "edgepack" and r["route"] == "/score" and r["workers"] == "1" and r["rps"]:
            goal, met = "≥ 15,000 on the issue's machine (≈ 10,000 here)", r["rps"] >= 10_000
        note = "; ".join(r.get("notes") or [])
        out.append(fig(f"{who}: req/s", _num(r["rps"]), goal, met) | {"note": note})
        if r["server"] != "in-process":
            out.append(fig(f"{who}: p50 / p99 ms", f"{_num(r['p50_ms'], 2)} / {_num(r['p99_ms'], 2)}"))
        if r.get("vs_thin"):
            out.append(fig(f"{who}: vs thin server", f"{r['vs_thin']:.2f}"))
    for name, reason in (doc.get("skipped") or {}).items():
        out.append(fig(name, f"skipped: {reason}"))
    return out


def http_inprocess(rows: list[dict]) -> list[Figure]:
    return [
        fig(f"{r['route']}: CPU per request (one-core ceiling)", f"{r['us_per_request']:.1f} µs ({r['rps']:,} req/s)")
        for r in rows
    ]


def quantize(doc: dict) -> list[Figure]:
    rows = {r["variant"]: r for r in doc["results"]}
    fp32, q = rows["FP32"], rows["QDQ per-tensor"]
    t = q.get("meets_targets", {})
    return [
        fig(
            "INT8 (QDQ per-tensor) size vs FP32",
            f"{q['size_bytes'] / 1000:,.0f} kB vs {fp32['size_bytes'] / 1000:,.0f} kB ({100 * q['size_ratio']:.1f} %)",
            "≤ 30 %",
            t.get("size<=30%"),
        ),
        fig(
            "accuracy FP32 → INT8",
            f"{100 * fp32['accuracy']:.2f} → {100 * q['accuracy']:.2f} % (drop {q['accuracy_drop_points']:.2f} pt)",
            "drop ≤ 1 pt",
            t.get("drop<=1pt"),
        ),
        fig(
            "batch-64 latency FP32 → INT8",
            f"{fp32['latency_b64_ms']:.3f} → {q['latency_b64_ms']:.3f} ms ({q['speedup_b64']:.1f}×)",
            "≥ 1.5× faster",
            t.get("b64>=1.5x"),
        ),
        fig(
            "batch-1 latency FP32 → INT8",
            f"{fp32['latency_b1_ms']:.3f} → {q['latency_b1_ms']:.3f} ms ({q['speedup_b1']:.1f}×)",
        ),
    ]


def build(doc: dict) -> list[Figure]:
    def row(prefix: str, how: str = "subprocess") -> dict | None:
        return next(
            (
                r
                for r in doc["results"]
                if r["case"].startswith(prefix) and r["how"] == how and r["platforms"].count(",") == 1
            ),
            None,
        )

    def secs(r: dict | None) -> str:
        if not r or not r.get("n"):
            return "failed" if r else "–"
        if r["n"] == 1:
            return f"{r['median_s']:.2f} s (1 sample)"
        return f"{r['median_s']:.2f} s (median of {r['n']}, {r['min_s']:.2f}-{r['max_s']:.2f})"

    goals = doc.get("goals", {})
    cold, mo = goals.get("cold_vs_docker"), goals.get("model_only_rebuild")
    out = [
        fig("cold build + push, 2 platforms (deps warm)", secs(row("cold build + push"))),
        fig("Docker backend build + push, 2 platforms", secs(row("Docker backend"))),
        fig(
            "cold build: Docker backend / edgepack",
            f"{cold['ratio']:.1f}×" if cold else "–",
            "≥ 5×",
            cold["met"] if cold else None,
        )
        | {"note": "DOUBTFUL: docker build cache used" if cold and cold.get("doubtful") else ""},
        fig("no-op rebuild + push", secs(row("no-op"))),
        fig(
            "model-only rebuild + push (MLP)",
            secs(row("model-only rebuild + push (MLP")),
            "≤ 3 s",
            mo["met"] if mo else None,
        ),
    ]
    return out


def mqtt_scoring(rows: list[dict]) -> list[Figure]:
    out = []
    for r in rows:
        who = f"{r['responder']}, paho {r['paho']}, broker {r['broker']}"
        if r["responder"] == "edgepack":
            vs = f", {r['vs_echo']:.2f} of echo" if r.get("vs_echo") else ""
            out.append(fig(f"{who}: round trips/s", f"{r['rps']:,.0f}{vs}", "≥ 3,000", r["rps"] >= 3000))
            out.append(fig(f"{who}: p50 / p99 ms", f"{r['p50_ms']} / {r['p99_ms']}"))
        else:
            out.append(fig(f"{who}: round trips/s (transport ceiling)", f"{r['rps']:,.0f}"))
    return out


def edge_hub(doc: dict) -> list[Figure]:
    out = [fig(f"{name}: messages/s", f"{r['per_s']:,.0f}") for name, r in doc["rows"].items()]
    for name, value in doc["ratios"].items():
        goal = "≥ 0.8" if name.startswith("end to end") else ""
        out.append(fig(name, f"{value:.2f}", goal, value >= 0.8 if goal else None))
    return out


def deploy_local(rows: list[dict]) -> list[Figure]:
    out = []
    for r in rows:
        goal = f"≤ {r['goal_s']:g} s"
        out.append(
            fig(f"{r['mode']}: deploy → first 200", f"{r['deploy_s']:.2f} s", goal, r["deploy_s"] <= r["goal_s"])
        )
        out.append(
            fig(f"{r['mode']}: update → new answer", f"{r['update_s']:.2f} s", goal, r["update_s"] <= r["goal_s"])
        )
    return out


def endpoint_router(doc: dict) -> list[Figure]:
    d, rt = doc["direct"], doc["router"]
    return [
        fig("direct: req/s, p99 ms", f"{d['rps']:,.0f}, {d['p99_ms']:.2f}"),
        fig("through the router: req/s, p99 ms", f"{rt['rps']:,.0f}, {rt['p99_ms']:.2f}"),
        fig("router / direct req/s", f"{doc['ratio']:.2f}", "≥ 0.8", doc["ratio"] >= 0.8),
        fig("p99 added by the router", f"{doc['p99_added_ms']:+.2f} ms", "≤ 1 ms", doc["p99_added_ms"] <= 1.0)
        | {"note": f"others' CPU + steal up to {doc['others_cpu_pct_max']:.0f} %"},
        fig("router CPU per request", f"{doc['router_cpu_us_per_request']:.0f} µs"),
    ]


def fpga_emulation(doc: dict) -> list[Figure]:
    per_format: dict[tuple[str, str], list[dict]] = {}
    for r in doc["results"]:
        if r["format"] != "onnxruntime float":
            per_format.setdefault((r["format"], r["threads"]), []).append(r)
    out = []
    for (fmt, threads), rs in per_format.items():
        value = ", ".join(f"{r['model']} {r['slowdown']:.1f}×" for r in rs)
        graded = fmt in ("int8", "msfp12", "msfp16")
        met = all(r["slowdown"] <= 5 for r in rs) if graded else None
        out.append(fig(f"{fmt} slowdown vs onnxruntime ({threads} thread)", value, "≤ 5×" if graded else "", met))
    return out


def fpga_formats(doc: dict) -> list[Figure]:
    return [
        fig(
            f"{r['format']}: fake_quantize weight / activations",
            f"{r['weight_ms']:.3f} / {r['activation_ms']:.3f} ms",
        )
        for r in doc["results"]
    ]


BENCHES = [
    Bench(
        "http_scoring",
        [
            "--only",
            "edgepack",
            "--only",
            "inprocess",
            "--duration",
            "5",
            "--warmup",
            "1",
            "--quiet-wait",
            "20",
            "--retries",
            "1",
        ],
        300,
        http_scoring,
        _first(lambda: _need_exe("wrk"), _need_shared),
    ),
    Bench("http_inprocess", ["--requests", "2000", "--repeats", "3"], 180, http_inprocess),
    Bench("quantize", ["--repeats", "50"], 300, quantize, lambda: _need_modules("sklearn")),
    Bench(
        "build",
        ["--repeats", "2", "--cold-repeats", "1", "--no-per-platform"],
        600,
        build,
        lambda: _need_exe("docker"),
    ),
    Bench(
        "mqtt_scoring",
        ["--paho", "1.6", "--duration", "5", "--warmup", "1"],
        300,
        mqtt_scoring,
        _first(lambda: _need_exe("mosquitto", "cc"), _need_shared),
    ),
    Bench(
        "edge_hub",
        ["--messages", "5000", "--scored", "2000", "--duration", "4"],
        300,
        edge_hub,
        _first(lambda: _need_exe("mosquitto"), _need_shared),
    ),
    Bench("deploy_local", ["--rounds", "2"], 600, deploy_local, lambda: _need_exe("docker")),
    Bench(
        "endpoint_router",
        ["--rounds", "2", "--duration", "3", "--quiet-wait", "20"],
        300,
        endpoint_router,
        _first(lambda: _need_exe("wrk"), _need_shared),
    ),
    Bench(
        "fpga_emulation",
        ["--threads", "one", "--repeats", "5"],
        600,
        fpga_emulation,
        lambda: _need_modules("torch", "sklearn", "threadpoolctl"),
    ),
    Bench("fpga_formats", ["--repeats", "10"], 120, fpga_formats),
]
NAMES = [b.name for b in BENCHES]


# ---- running ---------------------------------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _reason(rc: int, stderr: str) -> str:
    """The most telling line of a failed run's stderr."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    pick = next((ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else "")
    return f"exit {rc}: {pick[:200]}" if pick else f"exit {rc}"


def run_one(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    load = os.getloadavg()
    _log(f"== {bench.name}: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    result: dict[str, Any] = {"name": bench.name, "load_before": [round(x, 2) for x in load], "figures": []}
    missing = bench.needs()
    if missing:
        result.update(status="failed", reason=f"prerequisite missing: {missing}")
        return result
    cmd = [sys.executable, str(ROOT / "benchmarks" / f"{bench.name}.py"), *(bench.full if args.full else bench.quick)]
    cmd.append("--json")
    timeout = args.timeout or bench.timeout_s * (4 if args.full else 1)
    result["cmd"] = " ".join(cmd[1:])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
        try:
            stdout, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # the script stops its own children on SIGTERM
            try:
                proc.communicate(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            result.update(
                status="failed", reason=f"timed out after {timeout:.0f} s", seconds=round(time.perf_counter() - t0, 1)
            )
            return result
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
            raise
        err.seek(0)
        stderr = err.read()
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["rc"] = proc.returncode
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        result.update(
            status="failed", reason=_reason(proc.returncode, stderr) if proc.returncode else "no JSON on stdout"
        )
        result["stderr_tail"] = stderr[-2000:]
        return result
    result["report"] = report
    try:
        result["figures"] = bench.extract(report)
    except (KeyError, TypeError, ValueError, StopIteration) as e:
        result.update(status="failed", reason=f"unexpected JSON ({type(e).__name__}: {e})")
        return result
    # build.py exits 1 when a case failed but still reports the rest
    result["status"] = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: some cases failed"
    return result


# ---- output ----------------------------------------------------------------------------------------------


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        busy = r["load_before"][0] > BUSY_LOAD
        load_note = f"load {r['load_before'][0]:.1f} > {BUSY_LOAD}: noisy" if busy else ""
        if r["status"] == "failed":
            rows.append([r["name"], f"failed: {r['reason']}", "", "", load_note])
            continue
        for i, f in enumerate(r["figures"]):
            goal = f["goal"]
            if goal and f["met"] is not None:
                goal += ": met" if f["met"] else ": NOT MET"
            notes = [
                n
                for n in (
                    f.get("note"),
                    load_note if i == 0 else "",
                    r["status"] if i == 0 and r["status"] != "ok" else "",
                )
                if n
            ]
            rows.append([r["name"] if i == 0 else "", f["figure"], f["value"], goal, "; ".join(notes)])
    return rows


def markdown(rows: list[list[str]]) -> str:
    head = ["benchmark", "figure", "value", "goal", "note"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---|---|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(rows: list[list[str]], title: str, as_markdown: bool, file: Any) -> None:
    if as_markdown:
        print(f"{title}\n\n{markdown(rows)}", file=file)
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for name, justify in (
        ("benchmark", "left"),
        ("figure", "left"),
        ("value", "right"),
        ("goal", "left"),
        ("note", "left"),
    ):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        style = "red" if row[1].startswith("failed") or "NOT MET" in row[3] else None
        t.add_row(*row, style=style)
    Console(file=file, width=200).print(t)


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return out.stdout.strip() or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short but meaningful settings (the default)")
    mode.add_argument("--full", action="store_true", help="each script with its own defaults (about 25 min)")
    parser.add_argument(
        "--only",
        action="append",
        choices=NAMES,
        metavar="NAME",
        help=f"run only these (repeatable): {', '.join(NAMES)}",
    )
    parser.add_argument("--skip", action="append", choices=NAMES, metavar="NAME", help="leave these out (repeatable)")
    parser.add_argument("--timeout", type=float, help="seconds per benchmark (default: each its own, 2-10 min)")
    parser.add_argument("--markdown", action="store_true", help="a markdown table instead of rich's")
    parser.add_argument("--json", action="store_true", help="every script's report and the figures as JSON on stdout")
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be > 0")
    chosen = [b for b in BENCHES if (not args.only or b.name in args.only) and b.name not in (args.skip or [])]
    if not chosen:
        parser.error("--only/--skip leave no benchmark to run")

    started, t0 = dt.datetime.now(dt.UTC), time.perf_counter()
    results = []
    try:
        for bench in chosen:
            r = run_one(bench, args)
            status = r["status"] if r["status"] != "failed" else f"failed: {r['reason']}"
            _log(f"   {status} ({r.get('seconds', 0):.0f} s)")
            results.append(r)
    except KeyboardInterrupt:
        _log("interrupted: the table holds the benchmarks that finished")
    elapsed = time.perf_counter() - t0
    title = (
        f"edgepack {git_revision()}, {started.isoformat(timespec='seconds')}, {os.cpu_count()} cpus, "
        f"{'full' if args.full else 'quick'} settings, {len(results)} benchmark(s) in {elapsed:.0f} s"
    )
    rows = table_rows(results)
    out = sys.stderr if args.json else sys.stdout
    if args.json:
        doc = {
            "title": title,
            "elapsed_s": round(elapsed, 1),
            "mode": "full" if args.full else "quick",
            "benchmarks": results,
        }
        print(json.dumps(doc, indent=1, default=str))
    print_table(rows, title, args.markdown, out)
    return 0 if all(r["status"] != "failed" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
