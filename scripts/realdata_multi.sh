#!/usr/bin/env bash
# One model for many regions on real load (issue #19), day-ahead protocol: import the EIA-930
# series files of CISO and PJM into one store, train ONE model on both (2015-07-01 .. 2018-12-31)
# with the region one-hot and without it (--region-input none), backtest each region on
# 2019-01-01 .. 2019-08-30 (one forecast per day), and forecast Victoria 2014 zero-shot (a region
# neither model saw; its scaler fit on its own 2014-01 .. 2014-09 history, evaluated 2014-10-01 ..
# 2014-12-31). Compare with the per-region models of scripts/realdata.sh.
# Usage: scripts/realdata_multi.sh [path/to/energy] (default: $CARGO_TARGET_DIR/debug/energy, or
# target/debug/energy). Reads ../shared/realdata in place (or $ENERGY_REALDATA).
set -euo pipefail
energy="${1:-${CARGO_TARGET_DIR:-target}/debug/energy}"
realdata="${ENERGY_REALDATA:-../shared/realdata}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for region in CISO PJM; do
  "$energy" --store "$work/store" -q collect --source file --path "$realdata/series/${region}_2015-2019_D_DF.csv" \
    --region "$region" --time-column date_time --value-column "demand (MW)" > /dev/null
done
"$energy" --store "$work/store" -q collect --source file --region VIC --timezone Etc/GMT-10 --stamps start \
  --path "$realdata/series/VIC_2014_halfhourly_demand_GW_temperature_C.csv" > /dev/null
printf '%-8s %-6s %8s %9s %10s %9s %9s %8s\n' input region model naive24 naive168 operator coverage seconds
for input in one-hot none; do
  start=$(date +%s)
  "$energy" --store "$work/store" -q --json train --source file --region CISO --region PJM \
    --start 2015-07-01 --end 2018-12-31 --protocol day-ahead --operator-kind FORECAST_DEMAND__MW \
    --region-input "$input" --model-dir "$work/model-$input" > "$work/train-$input.json"
  seconds=$(( $(date +%s) - start ))
  for region in CISO PJM; do
    "$energy" --store "$work/store" -q --json evaluate --model-dir "$work/model-$input" \
      --source file --region "$region" --start 2019-01-01 --end 2019-08-30 > "$work/$input-$region.json"
  done
  "$energy" --store "$work/store" -q --json evaluate --model-dir "$work/model-$input" \
    --source file --region VIC --start 2014-10-01 --end 2014-12-31 --operator-kind none > "$work/$input-VIC.json"
  for region in CISO PJM VIC; do
    python3 - "$work/$input-$region.json" "$input" "$region" "$seconds" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in r["scores"]}
m = s["model"]
op = s.get("operator day-ahead forecast", {}).get("mape_percent", float("nan"))
print("%-8s %-6s %8.2f %9.2f %10.2f %9.2f %8.0f%% %8s%s" % (
    sys.argv[2], sys.argv[3], m["mape_percent"], s["seasonal naive (24 h)"]["mape_percent"],
    s["seasonal naive (168 h)"]["mape_percent"], op, 100 * m["coverage_p10_p90"], sys.argv[4],
    "  (zero-shot)" if "zero_shot" in r else ""))
PY
  done
done
