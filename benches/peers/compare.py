#!/usr/bin/env python3
"""Rust (polars) versus pandas: the hourly feature table, side by side.

One run:

1. collects a synthetic store with ``energy collect`` (N regions × D days, load and
   temperature; with defects by default, so that cleaning and imputation have work to do),
2. times ``energy --store S features --region SYNk --out rust_SYNk.parquet`` per region,
3. times ``python3 features_pandas.py S --region SYNk --out pandas_SYNk.parquet`` per region,
4. checks that the two tables agree, column by column,
5. prints rows, seconds, the ratio pandas / Rust and rows per second for each side.

Both sides are timed the same way: the wall time of one process per region, from start to
exit, so each includes start-up, reading the store and writing its Parquet file (the Python
side also pays for importing pandas and pyarrow, measured and shown separately). With
``--repeat N`` each region's time is the best of N runs; totals are sums over regions.

Usage::

    python3 benches/peers/compare.py                       # 10 regions × 1826 days
    python3 benches/peers/compare.py --regions 2 --days 365 --energy target/debug/energy
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PANDAS_SCRIPT = HERE / "features_pandas.py"

# Columns compared within a relative tolerance where both sides are non-null.
CALENDAR_COLUMNS = ["hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos", "weekend", "holiday"]
DERIVED_COLUMNS = [
    "lag_24", "lag_48", "lag_168",
    "roll24_mean", "roll24_std", "roll24_min", "roll24_max",
    "roll168_mean", "roll168_std", "roll168_min", "roll168_max",
]
CLEANED_COLUMNS = ["value_raw", "value", "target", "temp"]
# |a − b| <= TOLERANCE × max(|a|, |b|, 1): relative, and absolute for values within [-1, 1].
TOLERANCE = 1e-6
# Cleaned values must match on at least this fraction of rows for the run to pass.
MIN_MATCH_FRACTION = 0.999


def default_energy() -> Path:
    release = ROOT / "target" / "release" / "energy"
    return release if release.exists() else ROOT / "target" / "debug" / "energy"


def run(command: list[str]) -> tuple[float, str]:
    """Run a command; its wall time (s) and stdout. A failure stops the benchmark."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(command)}\n{done.stderr.strip()}")
    return seconds, done.stdout


def collect(energy: Path, store: Path, regions: list[str], days: int, defects: list[str]) -> float:
    command = [str(energy), "--store", str(store), "-q", "collect", "--source", "synthetic", "--days", str(days)]
    for region in regions:
        command += ["--region", region]
    seconds, _ = run(command + defects)
    return seconds


def time_side(commands: dict[str, list[str]], repeat: int) -> tuple[dict[str, float], dict[str, float]]:
    """Best-of-`repeat` times of each region's command: the process wall time, and the time
    the program reports for building the table alone (its `--json` `seconds`: no start-up,
    no Parquet writing)."""
    wall = {region: float("inf") for region in commands}
    build = {region: float("inf") for region in commands}
    for _ in range(repeat):
        for region, command in commands.items():
            seconds, stdout = run(command)
            wall[region] = min(wall[region], seconds)
            build[region] = min(build[region], float(json.loads(stdout)["seconds"]))
    return wall, build


def as_float(table, name: str) -> np.ndarray:
    """A column as float64, NaN for null."""
    return table[name].cast("float64").to_numpy(zero_copy_only=False)


def close(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rows where a and b agree: equal (infinities included), both null (NaN; a stored NaN
    reads as NaN too), or both finite within the tolerance."""
    finite = np.isfinite(a) & np.isfinite(b)
    within = np.zeros(len(a), dtype=bool)
    scale = np.maximum(np.maximum(np.abs(a[finite]), np.abs(b[finite])), 1.0)
    within[finite] = np.abs(a[finite] - b[finite]) <= TOLERANCE * scale
    return within | (a == b) | (np.isnan(a) & np.isnan(b))


def compare_tables(rust_path: Path, pandas_path: Path) -> dict:
    """Column-by-column agreement of two feature tables."""
    rust, peer = pq.read_table(rust_path), pq.read_table(pandas_path)
    report = {
        "rows": [rust.num_rows, peer.num_rows],
        "same_columns": rust.column_names == peer.column_names,
        "same_types": rust.schema.equals(peer.schema),
        "columns": {},
        "mismatches": [],
    }
    if rust.num_rows != peer.num_rows or not report["same_columns"]:
        report["columns_rust"], report["columns_pandas"] = rust.column_names, peer.column_names
        return report
    report["same_timestamps"] = rust["timestamp"].equals(peer["timestamp"])
    report["columns"]["flags"] = float(np.mean(as_float(rust, "flags") == as_float(peer, "flags")))
    for name in CALENDAR_COLUMNS + DERIVED_COLUMNS + CLEANED_COLUMNS:
        if name not in rust.column_names:
            continue
        a, b = as_float(rust, name), as_float(peer, name)
        agree = close(a, b)
        report["columns"][name] = float(agree.mean())
        if name in CLEANED_COLUMNS:
            report.setdefault("identical", {})[name] = float(np.mean((a == b) | (np.isnan(a) & np.isnan(b))))
        if name in ("value", "target", "temp"):
            # show where they differ, to tell a port error from rounding
            for i in np.flatnonzero(~agree)[:3]:
                report["mismatches"].append({
                    "column": name, "row": int(i), "timestamp": str(rust["timestamp"][int(i)]),
                    "rust": None if np.isnan(a[i]) else float(a[i]),
                    "pandas": None if np.isnan(b[i]) else float(b[i]),
                    "rust_flags": int(rust["flags"][int(i)].as_py()), "pandas_flags": int(peer["flags"][int(i)].as_py()),
                })
        report.setdefault("null_rows_differ", {})[name] = int((np.isnan(a) != np.isnan(b)).sum())
    return report


def agreement_ok(report: dict) -> bool:
    """Same rows, columns and timestamps; calendar columns equal on every row; the cleaned
    columns, flags, lags and rolling statistics (which follow `value`) on nearly every row."""
    rows_rust, rows_pandas = report["rows"]
    if rows_rust != rows_pandas or not report["same_columns"] or not report.get("same_timestamps", False):
        return False
    return all(
        fraction >= (1.0 if name in CALENDAR_COLUMNS else MIN_MATCH_FRACTION)
        for name, fraction in report["columns"].items()
    )


def python_import_seconds() -> float:
    """Wall time of a Python process that only imports what the pandas side imports."""
    best = float("inf")
    for _ in range(3):
        seconds, _ = run([sys.executable, "-c", "import numpy, pandas, pyarrow, pyarrow.dataset, pyarrow.parquet"])
        best = min(best, seconds)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time `energy features` against a pandas port and check they agree.")
    parser.add_argument("--energy", type=Path, default=default_energy(),
                        help="the energy binary (default: target/release/energy if built, else target/debug/energy)")
    parser.add_argument("--regions", type=int, default=10, help="synthetic regions SYN1..SYNn (default 10)")
    parser.add_argument("--days", type=int, default=1826, help="days of data per region (default 1826, 5 years)")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs per region (default 1)")
    parser.add_argument("--no-defects", action="store_true",
                        help="collect clean synthetic data (default: 1%% missing hours, 0.2%% spikes, DST gaps)")
    parser.add_argument("--keep", type=Path, help="keep the store and the tables in this folder")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON document")
    args = parser.parse_args(argv)
    if not args.energy.exists():
        sys.exit(f"no energy binary at `{args.energy}` (build it, or pass --energy)")
    if args.regions < 1 or args.days < 1 or args.repeat < 1:
        sys.exit("--regions, --days and --repeat must be at least 1")

    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    regions = [f"SYN{k}" for k in range(1, args.regions + 1)]
    defects = [] if args.no_defects else ["--missing-rate", "0.01", "--spike-rate", "0.002", "--dst-gap"]
    workdir = Path(tempfile.mkdtemp(prefix="energy-peers-")) if args.keep is None else args.keep
    workdir.mkdir(parents=True, exist_ok=True)
    store = workdir / "store"
    try:
        say(f"collecting {len(regions)} regions × {args.days} days into {store} ...")
        collect_seconds = collect(args.energy, store, regions, args.days, defects)

        rust_out = {r: workdir / f"rust_{r}.parquet" for r in regions}
        pandas_out = {r: workdir / f"pandas_{r}.parquet" for r in regions}
        rust_commands = {
            r: [str(args.energy), "--store", str(store), "-q", "--json", "features", "--region", r, "--out", str(rust_out[r])]
            for r in regions
        }
        pandas_commands = {
            r: [sys.executable, str(PANDAS_SCRIPT), str(store), "--region", r, "--out", str(pandas_out[r]), "--json"]
            for r in regions
        }
        say(f"timing Rust ({args.energy}) ...")
        rust_seconds, rust_build = time_side(rust_commands, args.repeat)
        say("timing pandas ...")
        pandas_seconds, pandas_build = time_side(pandas_commands, args.repeat)

        say("comparing tables ...")
        agreement = {r: compare_tables(rust_out[r], pandas_out[r]) for r in regions}
        rows = sum(report["rows"][0] for report in agreement.values())
        columns = sorted({c for report in agreement.values() for c in report["columns"]})
        worst = {c: min(report["columns"].get(c, 1.0) for report in agreement.values()) for c in columns}
        ok = all(agreement_ok(report) for report in agreement.values())

        rust_total, pandas_total = sum(rust_seconds.values()), sum(pandas_seconds.values())
        result = {
            "energy": str(args.energy),
            "regions": len(regions),
            "days": args.days,
            "defects": not args.no_defects,
            "repeat": args.repeat,
            "rows": rows,
            "collect_seconds": collect_seconds,
            "rust_seconds": rust_total,
            "pandas_seconds": pandas_total,
            "ratio_pandas_over_rust": pandas_total / rust_total,
            "rust_rows_per_second": rows / rust_total,
            "pandas_rows_per_second": rows / pandas_total,
            "rust_build_seconds": sum(rust_build.values()),
            "pandas_build_seconds": sum(pandas_build.values()),
            "python_import_seconds_per_process": python_import_seconds(),
            "per_region": {
                r: {
                    "rows": agreement[r]["rows"][0],
                    "rust_seconds": rust_seconds[r],
                    "pandas_seconds": pandas_seconds[r],
                    "rust_build_seconds": rust_build[r],
                    "pandas_build_seconds": pandas_build[r],
                }
                for r in regions
            },
            "agreement_ok": ok,
            "worst_match_fraction": worst,
            "identical_fraction": {
                c: min(report.get("identical", {}).get(c, 1.0) for report in agreement.values())
                for c in CLEANED_COLUMNS
            },
            "mismatches": [m | {"region": r} for r in regions for m in agreement[r]["mismatches"]][:10],
            "schemas_equal": all(report["same_types"] for report in agreement.values()),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)

    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_result(result)
    return 0 if result["agreement_ok"] else 1


def print_result(result: dict) -> None:
    rows = result["rows"]
    print(f"\nfeature table: {result['regions']} regions × {result['days']} days, {rows} rows "
          f"({'with' if result['defects'] else 'without'} defects), best of {result['repeat']}; "
          f"binary {result['energy']}")
    header = f"{'':<24} {'rows':>9} {'Rust s':>8} {'pandas s':>9} {'pandas/Rust':>12} {'Rust rows/s':>12} {'pandas rows/s':>14}"
    print(header)
    for label, key in (("process (wall, total)", "seconds"), ("build only (in process)", "build_seconds")):
        rust, pandas = result[f"rust_{key}"], result[f"pandas_{key}"]
        print(f"{label:<24} {rows:>9} {rust:>8.3f} {pandas:>9.3f} {pandas / rust:>12.2f} "
              f"{rows / rust:>12.0f} {rows / pandas:>14.0f}")
    print(f"(a Python process that only imports numpy, pandas and pyarrow takes "
          f"{result['python_import_seconds_per_process']:.3f} s; the pandas side starts {result['regions']})")

    fractions = result["worst_match_fraction"]
    print(f"\nagreement, worst region: rows equal within {TOLERANCE:g} relative (nulls equal)")
    below = {name: f for name, f in fractions.items() if f < 1.0}
    if below:
        for name, fraction in below.items():
            print(f"  {name:<13} {fraction:.6f}")
        print(f"  the other {len(fractions) - len(below)} columns: every row")
    else:
        print(f"  all {len(fractions)} compared columns (flags included): every row")
    identical = ", ".join(f"{name} {f:.4%}" for name, f in result["identical_fraction"].items())
    print(f"  bit-identical rows: {identical}")
    for m in result["mismatches"]:
        print(f"  differs: {m}")
    print(f"schemas equal: {result['schemas_equal']}; agreement {'OK' if result['agreement_ok'] else 'FAILED'}")


if __name__ == "__main__":
    sys.exit(main())
