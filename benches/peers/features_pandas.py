#!/usr/bin/env python3
"""The hourly feature table of `energy features`, rebuilt with pandas and numpy.

A peer implementation for benchmarking: it reads one region's load series (kind ``D``) and,
when the store holds it, its temperature (kind ``TEMP``) from the hive-partitioned Parquet
store with pyarrow, builds the same table as the Rust crate (``src/features/``) and writes it
as Parquet (zstd), like::

    energy --store STORE features --region SYN1 --out table.parquet
    python3 features_pandas.py STORE --region SYN1 --out table.parquet

The table, one row per hour of the complete UTC grid from the first to the last stored load
hour (interval-end timestamps), in this column order:

- ``timestamp`` (UTC, µs), ``value_raw`` (the stored value, null where no row),
- ``value``: the load cleaned *causally* (trailing medians, imputation from earlier hours),
- ``target``: the load cleaned with hindsight (centered medians, interpolation, seasonal fill),
- ``flags`` (int8 bit set, see ``FLAG_*``),
- calendar columns of the local hour the interval *starts* in (``hour_sin`` … ``holiday``),
- ``lag_24``, ``lag_48``, ``lag_168`` and past-only rolling mean/std/min/max of ``value``
  over 24 and 168 hours,
- ``temp``: the temperature, cleaned causally (no physical bounds).

Where the Rust code walks rows in a loop that has no pandas equivalent (the same-hour median
of the surrounding days, gap imputation that reuses already imputed hours), this port uses
numpy: a stacked matrix of shifted copies for the medians, and a vectorised fixed-point
iteration for the imputation (see :func:`_fill_until_stable`), which reaches exactly the
values of the sequential loop.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

HOUR_US = 3_600_000_000

# Flag bits of the `flags` column (src/features/mod.rs).
FLAG_MISSING = 1
FLAG_OUT_OF_BOUNDS = 2
FLAG_OUTLIER = 4
FLAG_INTERPOLATED = 8
FLAG_SEASONAL_FILL = 16
FLAG_INPUT_IMPUTED = 32
FLAGS_IMPUTED = FLAG_MISSING | FLAG_OUT_OF_BOUNDS | FLAG_OUTLIER

# FeatureConfig::default()
MAX_INTERPOLATE_HOURS = 6
OUTLIER_WINDOW = 169
OUTLIER_THRESHOLD = 6.0
UPPER_BOUND_MW = 1.0e6

# src/features/clean.rs
LOAD_KINDS = ("D", "DF", "ACTUAL", "DAM", "2DA", "7DA")
MAD_TO_STD = 1.4826
LOCAL_WINDOW = 7
SCALE_FLOOR = 1e-3

LAG_HOURS = (24, 48, 168)
ROLLING_WINDOWS = (24, 168)
CALENDAR_COLUMNS = (
    "hour_sin", "hour_cos", "dow_sin", "dow_cos", "doy_sin", "doy_cos", "weekend", "holiday",
)

# src/time.rs region_zone: balancing authorities and CAISO areas by zone; SYN<n> cycles.
_ZONE_OF = {
    **dict.fromkeys(
        ["CISO", "CAL", "BANC", "LDWP", "IID", "TIDC", "BPAT", "PACW", "PGE", "PSEI", "SCL", "TPWR",
         "AVA", "CHPD", "DOPD", "GCPD", "NEVP", "NW"], "America/Los_Angeles"),
    **dict.fromkeys(["AZPS", "SRP", "TEPC", "WALC"], "America/Phoenix"),
    **dict.fromkeys(["PACE", "PSCO", "WACM", "PNM", "EPE", "IPCO", "NWMT"], "America/Denver"),
    **dict.fromkeys(["ERCO", "TEX", "MISO", "SWPP", "SPA", "AECI", "CENT", "MIDW"], "America/Chicago"),
}
_SYNTHETIC_ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles")


class FeatureError(Exception):
    """The table cannot be built (no such series, no rows, duplicate timestamps)."""


def region_zone(region: str) -> str:
    """The IANA zone of a region (unknown codes: America/New_York)."""
    if region in _ZONE_OF:
        return _ZONE_OF[region]
    if region.startswith("CA ISO") or "-TAC" in region:
        return "America/Los_Angeles"
    if region.startswith("SYN") and region[3:].isdigit():
        return _SYNTHETIC_ZONES[max(int(region[3:]) - 1, 0) % 4]
    return "America/New_York"


# ---------------------------------------------------------------------------------------------
# Store


def _encode(value: str) -> str:
    """Percent-encode a partition value as the store does (anything but A-Za-z0-9._-)."""
    return "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "._-") else f"%{b:02X}"
        for b in value.encode()
    )


def series_dir(store: Path, source: str, region: str, kind: str) -> Path:
    return store / f"source={_encode(source)}" / f"region={_encode(region)}" / f"kind={_encode(kind)}"


def series_files(store: Path, source: str, region: str, kind: str) -> list[Path]:
    """The data files of one series (temporary files of a writer are not `*.parquet`)."""
    directory = series_dir(store, source, region, kind)
    return sorted(directory.glob("**/*.parquet")) if directory.is_dir() else []


def read_series(files: list[Path], after_us: int | None = None, until_us: int | None = None):
    """Sorted interval-end timestamps (int64 µs) and values (pyarrow float64, nulls kept) of
    one series, limited to ``after_us < t <= until_us`` when given."""
    dataset = ds.dataset([str(f) for f in files], format="parquet")
    flt = None
    if after_us is not None:
        t = ds.field("timestamp").cast(pa.int64())
        flt = (t > after_us) & (t <= until_us)
    table = dataset.to_table(columns=["timestamp", "value"], filter=flt)
    table = table.sort_by("timestamp")
    timestamps = table["timestamp"].cast(pa.int64()).to_numpy()
    values = table["value"].cast(pa.float64())
    return timestamps, values


def reindex(timestamps: np.ndarray, values: pa.ChunkedArray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stored values on the grid (NaN where there is no row or the value is null) and where a
    non-null value is stored (so that `value_raw` can keep a stored NaN apart from a null).
    Rows off the grid are ignored; duplicate timestamps are an error, as in the Rust join."""
    stored = pd.DataFrame(
        {"value": values.to_numpy(zero_copy_only=False), "present": values.is_valid().to_numpy(zero_copy_only=False)},
        index=timestamps,
    )
    if not stored.index.is_unique:
        raise FeatureError("reindexing: duplicate timestamps in the store")
    on_grid = stored.reindex(grid)
    return on_grid["value"].to_numpy(), on_grid["present"].fillna(False).to_numpy(dtype=bool)


# ---------------------------------------------------------------------------------------------
# Cleaning (src/features/clean.rs)


def _discard(raw: np.ndarray, bounds: tuple[float, float] | None):
    """Usable values (NaN elsewhere) and the MISSING / OUT_OF_BOUNDS flags."""
    flags = np.zeros(len(raw), dtype=np.uint8)
    finite = np.isfinite(raw)
    flags[~finite] |= FLAG_MISSING
    value = np.where(finite, raw, np.nan)
    if bounds is not None:
        outside = finite & ((raw < bounds[0]) | (raw > bounds[1]))
        flags[outside] |= FLAG_OUT_OF_BOUNDS
        value[outside] = np.nan
    return value, flags


def _shifted(value: np.ndarray, offset: int) -> np.ndarray:
    """``out[i] = value[i + offset]`` (NaN outside the array)."""
    out = np.full_like(value, np.nan)
    if offset >= 0:
        out[: len(value) - offset] = value[offset:]
    else:
        out[-offset:] = value[: len(value) + offset]
    return out


def same_hour_median(value: np.ndarray, days: int, centered: bool) -> np.ndarray:
    """Median of the finite values at the same hour on the ``days`` days before and after each
    hour (the hour itself left out), NaN with fewer than 3; not ``centered``: the ``2 × days``
    days before only. Vectorised: sort a (hours × days) matrix of shifted copies, NaN last."""
    if centered:
        offsets = [s * 24 * k for k in range(1, days + 1) for s in (-1, 1)]
    else:
        offsets = [-24 * k for k in range(1, 2 * days + 1)]
    around = np.sort(np.column_stack([_shifted(value, o) for o in offsets]), axis=1)
    count = np.isfinite(around).sum(axis=1)
    rows = np.arange(len(value))
    low = around[rows, np.maximum(count - 1, 0) // 2]
    high = around[rows, np.minimum(count // 2, around.shape[1] - 1)]
    # (a + a) / 2 == a exactly, so one formula serves odd and even counts
    return np.where(count >= 3, 0.5 * (low + high), np.nan)


def robust_z(value: np.ndarray, centered: bool) -> np.ndarray:
    """Robust z of each hour against the same-hour and the 7-hour medians (0 where it cannot
    be computed); centered windows, or trailing ones (hours <= t) when not ``centered``."""
    window = max(OUTLIER_WINDOW, 3)
    base = pd.Series(same_hour_median(value, max(window // 48, 1), centered))
    x = pd.Series(value)
    seasonal = (x - base).abs()
    local = (x - x.rolling(LOCAL_WINDOW, min_periods=LOCAL_WINDOW // 2 + 1, center=centered).median()).abs()
    mad = seasonal.rolling(window, min_periods=max(window // 4, 3), center=centered).median()
    scale = np.maximum(MAD_TO_STD * mad, SCALE_FLOOR * np.maximum(base.abs(), 1.0))
    z = np.minimum(seasonal, local) / scale
    return z.fillna(0.0).to_numpy()


def _nan_runs(value: np.ndarray):
    """The runs of non-finite hours: start and end (exclusive) of each run, and for every such
    hour (in order) its position, its run and its offset in the run."""
    bad = ~np.isfinite(value)
    edges = np.diff(bad.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    positions = np.flatnonzero(bad)
    run = np.repeat(np.arange(len(starts)), ends - starts)
    return starts, ends, positions, run, positions - starts[run]


def _at(value: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``value[index]``, NaN where the index falls outside the array."""
    inside = (index >= 0) & (index < len(value))
    return np.where(inside, value[np.clip(index, 0, len(value) - 1)], np.nan)


def _first_finite(*candidates: np.ndarray) -> np.ndarray:
    """Element-wise the first finite candidate, else NaN."""
    out = np.full_like(candidates[0], np.nan)
    for candidate in reversed(candidates):
        out = np.where(np.isfinite(candidate), candidate, out)
    return out


def _fill_until_stable(value: np.ndarray, positions: np.ndarray, rule) -> None:
    """Set ``value[positions] = rule(value)`` until nothing changes.

    The Rust loops fill hour by hour, each hour from hours filled before it (24 or 168 hours
    away, never itself). Evaluating the rule for all positions at once and repeating is a
    Jacobi iteration on that dependency DAG: after k rounds every hour whose chain of filled
    predecessors is shorter than k has its final value, and a round that changes nothing is
    the unique fixed point, so the result is exactly the sequential one. Rounds: the longest
    chain, about a gap's length / 24 + 1.
    """
    if len(positions) == 0:
        return
    while True:
        new = rule(value)
        old = value[positions]
        if np.array_equal(new, old, equal_nan=True):
            return
        value[positions] = new


def impute(value: np.ndarray, flags: np.ndarray, max_interpolate_hours: int) -> None:
    """Fill non-finite hours in place with hindsight (`clean::impute`): linear interpolation of
    short interior gaps; other hours the same hour a week, else a day, earlier, then a week,
    else a day, later."""
    n = len(value)
    starts, ends, positions, run, offset = _nan_runs(value)
    lengths = ends - starts
    short_run = (starts > 0) & (ends < n) & (lengths <= max_interpolate_hours)
    short = short_run[run]

    p, r = positions[short], run[short]
    left, right = value[starts[r] - 1], value[ends[r]]
    w = (offset[short] + 1) / (lengths[r] + 1)
    value[p] = left + w * (right - left)
    flags[p] |= FLAG_INTERPOLATED

    gap = positions[~short]
    _fill_until_stable(value, gap, lambda v: _first_finite(_at(v, gap - 168), _at(v, gap - 24)))
    flags[gap[np.isfinite(value[gap])]] |= FLAG_SEASONAL_FILL
    rest = gap[~np.isfinite(value[gap])]
    _fill_until_stable(value, rest, lambda v: _first_finite(_at(v, rest + 168), _at(v, rest + 24)))
    flags[rest[np.isfinite(value[rest])]] |= FLAG_SEASONAL_FILL


def impute_causal(value: np.ndarray, max_interpolate_hours: int) -> None:
    """Fill non-finite hours in place from earlier hours only (`clean::impute_causal`): up to
    `max_interpolate_hours` after the last good hour j, the same hour a day earlier shifted by
    the level change since j (else the value at j); later, a week, else a day, earlier.
    Nothing before the first good hour. (Its INTERPOLATED / SEASONAL_FILL flags are not part
    of the table, which keeps only whether the input was imputed, so none are returned.)"""
    starts, _, positions, run, offset = _nan_runs(value)
    interior = starts[run] > 0
    i, k = positions[interior], offset[interior]
    j = starts[run[interior]] - 1
    near = k + 1 <= max_interpolate_hours
    good = value[j]

    def rule(v: np.ndarray) -> np.ndarray:
        day_i, day_j = _at(v, i - 24), _at(v, j - 24)
        shifted = np.where(np.isfinite(day_i) & np.isfinite(day_j), day_i + (good - day_j), good)
        return np.where(near, shifted, _first_finite(_at(v, i - 168), day_i))

    _fill_until_stable(value, i, rule)


def clean(raw: np.ndarray, bounds) -> tuple[np.ndarray, np.ndarray]:
    """Hindsight cleaning: the `target` values and their flags."""
    value, flags = _discard(raw, bounds)
    outlier = robust_z(value, centered=True) > OUTLIER_THRESHOLD
    flags[outlier] |= FLAG_OUTLIER
    value[outlier] = np.nan
    impute(value, flags, MAX_INTERPOLATE_HOURS)
    return value, flags


def clean_causal(raw: np.ndarray, bounds) -> tuple[np.ndarray, np.ndarray]:
    """Causal cleaning (inputs): values and the discard flags (missing, bounds, outlier)."""
    value, flags = _discard(raw, bounds)
    outlier = robust_z(value, centered=False) > OUTLIER_THRESHOLD
    flags[outlier] |= FLAG_OUTLIER
    value[outlier] = np.nan
    impute_causal(value, MAX_INTERPOLATE_HOURS)
    return value, flags


# ---------------------------------------------------------------------------------------------
# Calendar (src/features/calendar.rs, src/time.rs)


def us_federal_holidays(year: int) -> list[dt.date]:
    """US federal holidays of `year`, observed dates (Saturday → Friday, Sunday → Monday)."""

    def fixed(month: int, day: int) -> dt.date:
        date = dt.date(year, month, day)
        shift = {5: -1, 6: 1}.get(date.weekday(), 0)
        return date + dt.timedelta(days=shift)

    def nth(month: int, weekday: int, n: int) -> dt.date:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))

    may_31 = dt.date(year, 5, 31)
    days = [
        fixed(1, 1),
        nth(1, 0, 3),  # Martin Luther King Jr. Day
        nth(2, 0, 3),  # Washington's Birthday
        may_31 - dt.timedelta(days=may_31.weekday()),  # Memorial Day
        fixed(7, 4),
        nth(9, 0, 1),  # Labor Day
        nth(10, 0, 2),  # Columbus Day
        fixed(11, 11),
        nth(11, 3, 4),  # Thanksgiving
        fixed(12, 25),
    ]
    if year >= 2021:
        days.append(fixed(6, 19))  # Juneteenth
    return sorted(days)


def holiday_keys(first_year: int, last_year: int) -> np.ndarray:
    """Day keys (year * 1000 + day of year) of the holidays of the years around a span; the
    union over years includes a Dec 31 that observes the next New Year, as `is_us_holiday`."""
    dates = {d for y in range(first_year - 1, last_year + 2) for d in us_federal_holidays(y)}
    return np.array(sorted(d.year * 1000 + d.timetuple().tm_yday for d in dates))


def _periodic(x, period: float) -> tuple[np.ndarray, np.ndarray]:
    angle = 2.0 * np.pi * np.asarray(x, dtype=np.float64) / period
    return np.sin(angle), np.cos(angle)


def calendar(grid: np.ndarray, zone: str) -> dict[str, np.ndarray]:
    """Calendar columns of the local hour each interval starts in (DST-correct)."""
    local = pd.DatetimeIndex(pd.to_datetime(grid - HOUR_US, unit="us", utc=True)).tz_convert(zone)
    weekday = local.day_of_week.to_numpy()  # Monday = 0
    day_of_year = local.day_of_year.to_numpy()
    year = local.year.to_numpy()
    columns = {}
    columns["hour_sin"], columns["hour_cos"] = _periodic(local.hour.to_numpy(), 24.0)
    columns["dow_sin"], columns["dow_cos"] = _periodic(weekday, 7.0)
    columns["doy_sin"], columns["doy_cos"] = _periodic(day_of_year - 1, 365.25)
    columns["weekend"] = (weekday >= 5).astype(np.float64)
    keys = holiday_keys(int(year.min()), int(year.max())) if len(year) else np.array([], dtype=np.int64)
    columns["holiday"] = np.isin(year * 1000 + day_of_year, keys).astype(np.float64)
    return columns


# ---------------------------------------------------------------------------------------------
# The table (src/features/mod.rs from_rows, lags.rs)


def build(store: Path, region: str, source: str = "synthetic", kind: str = "D") -> pd.DataFrame:
    """The feature table of one region, as `energy features` builds it."""
    load_files = series_files(store, source, region, kind)
    if not load_files:
        raise FeatureError(f"no data for series {source}:{region}:{kind} in the store `{store}`")
    timestamps, values = read_series(load_files)
    if len(timestamps) == 0:
        raise FeatureError(f"series {source}:{region}:{kind} has no rows")
    grid = np.arange(timestamps[0], timestamps[-1] + 1, HOUR_US, dtype=np.int64)
    raw, raw_present = reindex(timestamps, values, grid)

    bounds = (0.0, UPPER_BOUND_MW) if kind in LOAD_KINDS else None
    target, flags = clean(raw, bounds)
    value, causal_flags = clean_causal(raw, bounds)
    flags |= np.where(causal_flags & FLAGS_IMPUTED != 0, FLAG_INPUT_IMPUTED, 0).astype(np.uint8)

    exogenous = {}
    temp_files = series_files(store, source, region, "TEMP")
    if temp_files:
        t, v = read_series(temp_files, int(grid[0]) - HOUR_US, int(grid[-1]))
        if v.null_count == len(v):
            raise FeatureError(f"series {source}:{region}:TEMP has no rows in the load's range")
        exogenous["temp"], _ = clean_causal(reindex(t, v, grid)[0], None)

    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(grid, unit="us", utc=True),
            # nullable: null where no row or a stored null, a stored NaN stays NaN
            "value_raw": pd.arrays.FloatingArray(np.where(raw_present, raw, 0.0), ~raw_present),
            "value": value,
            "target": target,
            "flags": flags.astype(np.int8),
            **calendar(grid, region_zone(region)),
        }
    )
    for hours in LAG_HOURS:
        frame[f"lag_{hours}"] = frame["value"].shift(hours)
    past = frame["value"].shift(1)
    for window in ROLLING_WINDOWS:
        rolling = past.rolling(window, min_periods=window)
        frame[f"roll{window}_mean"] = rolling.mean()
        frame[f"roll{window}_std"] = rolling.std()
        frame[f"roll{window}_min"] = rolling.min()
        frame[f"roll{window}_max"] = rolling.max()
    for name, column in exogenous.items():
        frame[name] = column
    return frame


def write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Write the table as Parquet (zstd level 3, as the Rust side), NaN stored as null."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.replace_schema_metadata(None), path, compression="zstd", compression_level=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store", type=Path, help="store root folder")
    parser.add_argument("--region", required=True, help="region code, e.g. SYN1")
    parser.add_argument("--source", default="synthetic")
    parser.add_argument("--kind", default="D", help="the load series' kind")
    parser.add_argument("--out", type=Path, help="write the feature table here (.parquet)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    try:
        frame = build(args.store, args.region, args.source, args.kind)
    except FeatureError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    built = time.perf_counter() - started
    if args.out is not None:
        write_parquet(frame, args.out)
    summary = {
        "series": f"{args.source}:{args.region}:{args.kind}",
        "rows": len(frame),
        "columns": list(frame.columns),
        "seconds": built,
        "seconds_with_write": time.perf_counter() - started,
        "out": str(args.out) if args.out else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"features of {summary['series']}: {len(frame)} rows, {len(frame.columns)} columns, "
              f"built in {built:.3f} s" + (f", wrote {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
