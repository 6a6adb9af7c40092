"""Before/after in one run: a benchmark script run on two revisions, alternately, side by side.

    python3 benchmarks/ab.py --base issue11-base -- http_scoring.py --only edgepack --duration 10
    python3 benchmarks/ab.py --base HEAD~3 --rounds 3 -- mqtt_scoring.py --paho 1.6 --duration 10
    python3 benchmarks/ab.py --base HEAD~3 --copy-script --rounds 5 -- http_inprocess.py

The base revision is checked out into a temporary git worktree (beside a link to ``../shared``, which
the benchmarks read); the other side is this working tree, uncommitted changes included. Rounds
alternate base, this tree, base, this tree... so that a noisy minute hits both sides. Each side runs
``benchmarks/SCRIPT ... --json`` from its own tree (so it serves its own code); rows are matched by
their identity fields and the table shows the median of the rounds, and after/before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IDENTITY = ("section", "server", "route", "workers", "config", "responder", "paho", "broker", "load")
METRICS = (("rps", "higher"), ("p50_ms", "lower"), ("p99_ms", "lower"))


def rows_of(doc: object) -> list[dict]:
    """Result rows from a benchmark's JSON (a list of rows, or ``{"results": [...]}``)."""
    rows = doc.get("results", []) if isinstance(doc, dict) else doc
    return [r for r in rows if isinstance(r, dict) and isinstance(r.get("rps"), int | float)]


def identity(row: dict) -> tuple:
    return tuple((k, str(row[k])) for k in IDENTITY if row.get(k) not in (None, ""))


def run_side(tree: Path, script: str, args: list[str]) -> list[dict]:
    cmd = [sys.executable, str(tree / "benchmarks" / script), *args, "--json"]
    print(f"$ (cd {tree}) {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=tree, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"error: {script} failed on {tree} (exit {done.returncode})")
    return rows_of(json.loads(done.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the revision to compare against (a commit, tag or branch)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating [2]")
    parser.add_argument("--json", action="store_true", help="print the table's numbers as JSON on stdout")
    parser.add_argument(
        "--copy-script",
        action="store_true",
        help="run this tree's copy of the script on the base too (a benchmark newer than the base)",
    )
    parser.add_argument("script", help="a script in benchmarks/ that accepts --json (after --)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the script's own arguments")
    opts = parser.parse_args()
    if not (ROOT / "benchmarks" / opts.script).is_file():
        parser.error(f"no benchmarks/{opts.script}")
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", opts.base], capture_output=True, text=True, check=False
    )
    if rev.returncode != 0:
        parser.error(f"unknown revision {opts.base!r}: {rev.stderr.strip()}")
    base_rev = rev.stdout.strip()
    results: dict[str, list[list[dict]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="edgepack-ab-") as tmp:
        base_tree = Path(tmp) / "repo"
        if (ROOT.parent / "shared").exists():
            (Path(tmp) / "shared").symlink_to(ROOT.parent / "shared")
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(base_tree), base_rev], check=True
        )
        if opts.copy_script:
            shutil.copy2(ROOT / "benchmarks" / opts.script, base_tree / "benchmarks" / opts.script)
        try:
            for _ in range(opts.rounds):
                results["before"].append(run_side(base_tree, opts.script, opts.args))
                results["after"].append(run_side(ROOT, opts.script, opts.args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base_tree)], check=False)
    table = []
    keys = list(dict.fromkeys(identity(r) for rounds in results.values() for rows in rounds for r in rows))
    for key in keys:
        line: dict = {"case": " ".join(v for _, v in key)}
        for metric, _ in METRICS:
            for side in ("before", "after"):
                rows_of_side = (r for rows in results[side] for r in rows if identity(r) == key)
                values = [r[metric] for r in rows_of_side if r.get(metric) is not None]
                line[f"{metric}_{side}"] = statistics.median(values) if values else None
            b, a = line[f"{metric}_before"], line[f"{metric}_after"]
            line[f"{metric}_ratio"] = round(a / b, 3) if a is not None and b else None
        table.append(line)
    if opts.json:
        print(json.dumps({"base": base_rev, "rounds": opts.rounds, "script": opts.script, "rows": table}, indent=1))
        return 0
    print(f"\nmedian of {opts.rounds} alternating round(s): before = {base_rev}, after = this working tree")
    print(f"{'case':48} {'req/s before':>13} {'after':>10} {'ratio':>6} {'p99 before':>11} {'after':>7}")
    for line in table:
        rb, ra, rr = line["rps_before"], line["rps_after"], line["rps_ratio"]
        pb, pa = line["p99_ms_before"], line["p99_ms_after"]
        print(
            f"{line['case'][:48]:48} {rb or 0:>13,.0f} {ra or 0:>10,.0f} {rr or 0:>6.3f} "
            f"{pb if pb is not None else '-':>11} {pa if pa is not None else '-':>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
