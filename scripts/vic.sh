#!/usr/bin/env bash
# Real load with its observed temperature (issue #16): Victoria 2014, day-ahead, train
# 2014-01-08 .. 2014-09-30, evaluate 2014-10-01 .. 2014-12-31, with and without the temperature
# (the observed value stands in for a perfect forecast: no as-issued forecast exists for it).
# Prints the test MAPE of the model, both issue-time seasonal naives and the boosted trees, and
# the cut the temperature gives the model.
# The calendar marks Victoria's public holidays (`[regions.VIC] holidays = "au-vic"`); set
# VIC_CONFIG to more TOML lines for the config file (e.g. "[model]\nmembers = 3").
# Usage: scripts/vic.sh [path/to/energy] (default: $CARGO_TARGET_DIR/debug/energy, or
# target/debug/energy). Reads ../shared/realdata in place (or $ENERGY_REALDATA).
set -euo pipefail
energy="${1:-${CARGO_TARGET_DIR:-target}/debug/energy}"
realdata="${ENERGY_REALDATA:-../shared/realdata}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[regions.VIC]\nholidays = "au-vic"\n%b\n' "${VIC_CONFIG:-}" > "$work/energy.toml"
"$energy" --config "$work/energy.toml" --store "$work/store" -q collect --source file \
  --path "$realdata/series/VIC_2014_halfhourly_demand_GW_temperature_C.csv" --region VIC \
  --timezone Etc/GMT-10 --stamps start --column-kind temperature_c=TEMP > /dev/null
printf '%-8s %8s %9s %10s %8s %9s %8s\n' weather model naive24 naive168 boosted coverage seconds
for weather in temperature none; do
  flag=()
  [ "$weather" = none ] && flag=(--weather none)
  start=$(date +%s)
  "$energy" --config "$work/energy.toml" --store "$work/store" -q --json train --source file --region VIC --start 2014-01-08 \
    --end 2014-09-30 --protocol day-ahead --operator-kind none "${flag[@]}" \
    --model-dir "$work/model-$weather" > "$work/train-$weather.json"
  "$energy" --config "$work/energy.toml" --store "$work/store" -q --json evaluate --model-dir "$work/model-$weather" --source file \
    --region VIC --start 2014-10-01 --end 2014-12-31 > "$work/$weather.json"
  seconds=$(( $(date +%s) - start ))
  python3 - "$work/$weather.json" "$weather" "$seconds" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s = {x["name"]: x for x in r["scores"]}
m = s["model"]
print("%-8s %8.2f %9.2f %10.2f %8.2f %8.0f%% %8s" % (
    sys.argv[2], m["mape_percent"], s["seasonal naive (24 h)"]["mape_percent"],
    s["seasonal naive (168 h)"]["mape_percent"], s["boosted trees"]["mape_percent"],
    100 * m["coverage_p10_p90"], sys.argv[3]))
b = s.get("regression base (the model's starting point)")
if b: print("         regression base alone: %.2f" % b["mape_percent"])
PY
done
python3 - "$work/temperature.json" "$work/none.json" <<'PY'
import json, sys
mape = lambda path: {x["name"]: x for x in json.load(open(path))["scores"]}["model"]["mape_percent"]
with_t, without = mape(sys.argv[1]), mape(sys.argv[2])
print("temperature cuts the model's MAPE by %.0f %% (%.2f -> %.2f)" % (100 * (1 - with_t / without), without, with_t))
PY
