#!/usr/bin/env bash
# Real load, day-ahead protocol (issue #15): import the EIA-930 series files of CISO and PJM,
# train on 2015-07-01 .. 2018-12-31, backtest 2019-01-01 .. 2019-08-30 (one forecast per day),
# and print the test MAPE of the model, both issue-time seasonal naives, the boosted-trees
# baseline and the operator's own day-ahead forecast, with the model's p10-p90 coverage.
# Usage: scripts/realdata.sh [path/to/energy] (default: $CARGO_TARGET_DIR/debug/energy, or
# target/debug/energy). Reads ../shared/realdata in place (or $ENERGY_REALDATA). REAL_CONFIG
# adds TOML lines to the config file (e.g. "[model]\nday_ahead_stride = 24").
set -euo pipefail
energy="${1:-${CARGO_TARGET_DIR:-target}/debug/energy}"
realdata="${ENERGY_REALDATA:-../shared/realdata}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%b\n' "${REAL_CONFIG:-}" > "$work/energy.toml"
printf '%-6s %8s %9s %10s %8s %9s %8s %9s %8s\n' region model naive24 naive168 boosted operator "÷naive24" coverage seconds
for region in CISO PJM; do
  "$energy" --config "$work/energy.toml" --store "$work/store" -q collect --source file --path "$realdata/series/${region}_2015-2019_D_DF.csv" \
    --region "$region" --time-column date_time --value-column "demand (MW)" > /dev/null
  start=$(date +%s)
  "$energy" --config "$work/energy.toml" --store "$work/store" -q --json train --source file --region "$region" \
    --start 2015-07-01 --end 2018-12-31 --protocol day-ahead --operator-kind FORECAST_DEMAND__MW \
    --model-dir "$work/model-$region" > "$work/train-$region.json"
  "$energy" --config "$work/energy.toml" --store "$work/store" -q --json evaluate --model-dir "$work/model-$region" \
    --source file --region "$region" --start 2019-01-01 --end 2019-08-30 > "$work/$region.json"
  seconds=$(( $(date +%s) - start ))
  python3 - "$work/$region.json" "$region" "$seconds" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in r["scores"]}
m = s["model"]
print("%-6s %8.2f %9.2f %10.2f %8.2f %9.2f %8.3f %8.0f%% %8s" % (
    sys.argv[2], m["mape_percent"], s["seasonal naive (24 h)"]["mape_percent"],
    s["seasonal naive (168 h)"]["mape_percent"], s["boosted trees"]["mape_percent"],
    s["operator day-ahead forecast"]["mape_percent"],
    m["mape_percent"] / s["seasonal naive (24 h)"]["mape_percent"], 100 * m["coverage_p10_p90"], sys.argv[3]))
b = s.get("regression base (the model's starting point)")
if b: print("       regression base alone: %.2f" % b["mape_percent"])
print("       model coverage by lead hour %:", " ".join("%.0f" % (100 * c) for c in m["coverage_by_lead"]))
PY
done
