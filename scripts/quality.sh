#!/usr/bin/env bash
# Forecast quality on the three fixed synthetic windows of issue #15, with the main job's
# settings (`energy train --collect`, every model default): test MAPE of the model, both
# seasonal naives, the boosted-trees baseline and the noise floor, p10-p90 test coverage, and
# training time.
# Usage: scripts/quality.sh [path/to/energy] (default: target/debug/energy, or
# $CARGO_TARGET_DIR/debug/energy); QUALITY_WINDOWS="START:END ..." runs other windows;
# QUALITY_CONFIG sets TOML lines for a config file (e.g. "[model]\nbase = \"regression\"").
set -euo pipefail
energy="${1:-${CARGO_TARGET_DIR:-target}/debug/energy}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%b\n' "${QUALITY_CONFIG:-}" > "$work/energy.toml"
printf '%-25s %8s %9s %10s %8s %7s %9s %8s\n' window model naive24 naive168 boosted floor coverage seconds
for window in ${QUALITY_WINDOWS:-2025-06-04:2025-11-30 2025-10-03:2026-03-31 2026-03-05:2026-08-31}; do
  start=${window%%:*}
  end=${window##*:}
  "$energy" --config "$work/energy.toml" --store "$work/store-$start" train --collect --start "$start" --end "$end" \
    --model-dir "$work/model-$start" --json -q > "$work/$start.json"
  python3 - "$work/$start.json" "$start..$end" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in r["test_scores"]}
# the floor of the weather the model was given (as-issued forecasts: their error counts)
key = "mape_next_24h_issued_percent" if r.get("as_issued_weather") else "mape_next_24h_percent"
floor = r["noise_floor"][key] if r.get("noise_floor") else float("nan")
print("%-25s %8.2f %9.2f %10.2f %8.2f %7.2f %8.0f%% %8.0f" % (
    sys.argv[2], s["model"]["mape_percent"], s["seasonal naive (24 h)"]["mape_percent"],
    s["seasonal naive (168 h)"]["mape_percent"], s["boosted trees"]["mape_percent"], floor, 100 * s["model"]["coverage_p10_p90"],
    r["total_seconds"]))
PY
done
