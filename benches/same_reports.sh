#!/usr/bin/env bash
# Do two refleet binaries write the same reports? (issue 19: a refactor
# changes no report byte on any fixture, the sample data and a 1 M-row
# generated inventory, at 1, 2 and 3 threads.)
#
#   benches/same_reports.sh BEFORE AFTER [ROWS]
#
# BEFORE and AFTER are refleet binaries (e.g. one built from main before
# the change, copied aside, and target/release/refleet). ROWS (default 0:
# none) adds `refleet gen --rows ROWS --seed 42` to the inputs.
#
# For every input (fixtures/*.csv, fixtures/*.parquet, sample-data, the
# generated one) and every --threads in THREADS (default "1 2 3"), both
# binaries run:
#   validate --emit-valid           every file it writes
#   quote                           every file it writes
#   run --dry-run --no-reconcile    every file it writes
#   run (sample data only, built-in simulator, threads 2 only: a live run
#        is paced by the simulator's clock, so it runs once per binary)
# and the two output folders are compared file by file. What legitimately
# differs between two runs is masked first, and only that: in
# summary.json the `timings`, `journal`, `started_at` and `finished_at`
# keys, and for a live run `requests` and `vendor_lookups` (request
# counts and rates depend on the simulator's pacing); in report.html the
# lines that show timings, and for a live run the activation dates; in a
# live run's results.csv the request_id, confirmation_id, case_id, eta and
# activated_at columns (the simulator's ids and clock). Exits 1 on the first difference (printed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

before=${1:?usage: same_reports.sh BEFORE AFTER [ROWS]}
after=${2:?usage: same_reports.sh BEFORE AFTER [ROWS]}
rows=${3:-0}
THREADS=${THREADS:-"1 2 3"}
AS_OF=2026-11-24
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

inputs=(fixtures/*.csv fixtures/*.parquet sample-data/inventory.csv)
if [[ $rows -gt 0 ]]; then
  "$after" gen --rows "$rows" --seed 42 --as-of "$AS_OF" --out "$work/gen" >/dev/null
  inputs+=("$work/gen/inventory.csv")
fi

# normalise DIR LIVE: mask what two honest runs may differ in.
normalise() {
  local dir=$1 live=$2
  if [[ -f $dir/summary.json ]]; then
    python3 - "$dir/summary.json" "$live" <<'EOF'
import json, sys
path, live = sys.argv[1], sys.argv[2] == "1"
doc = json.load(open(path))
MASKED = {"timings", "journal", "started_at", "finished_at"}
if live:
    MASKED |= {"requests", "vendor_lookups"}
def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items()
                if k not in MASKED}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v
json.dump(strip(doc), open(path, "w"), indent=1, sort_keys=True)
EOF
  fi
  if [[ -f $dir/report.html ]]; then
    sed -i -E '/seconds|[0-9]+(\.[0-9]+)? s\b|per second|\/s\b/d' "$dir/report.html"
    # When the run ended (the page's header says it).
    sed -i -E 's/ ended <b>[^<]*<\/b>//' "$dir/report.html"
    [[ $live == 0 ]] || sed -i -E '/Activations per day/d' "$dir/report.html"
  fi
  if [[ $live == 1 && -f $dir/results.csv ]]; then
    python3 - "$dir/results.csv" <<'EOF'
import csv, sys
path = sys.argv[1]
rows = list(csv.reader(open(path, newline="")))
mask = [i for i, h in enumerate(rows[0]) if h in ("request_id", "confirmation_id", "case_id", "eta", "activated_at")]
for r in rows[1:]:
    for i in mask:
        if i < len(r) and r[i]:
            r[i] = "*"
csv.writer(open(path, "w", newline="")).writerows(rows)
EOF
  fi
}

# compare NAME LIVE ARGS...: run both binaries, compare their folders.
compare() {
  local name=$1 live=$2; shift 2
  local bin label rc
  for label in before after; do
    bin=$before; [[ $label == after ]] && bin=$after
    rm -rf "$work/$label" && mkdir -p "$work/$label"
    rc=0
    (cd "$work/$label" && HOME="$work/$label/home" "$bin" "$@" --out out --quiet \
      >stdout 2>stderr) || rc=$?
    mkdir -p "$work/$label/out"
    echo "$rc" >"$work/$label/out/exit_code"
    normalise "$work/$label/out" "$live"
  done
  if ! diff -r "$work/before/out" "$work/after/out" >"$work/diff"; then
    echo "DIFFERENT: $name"
    head -c 4000 "$work/diff"
    exit 1
  fi
  echo "same: $name ($(ls "$work/after/out" | wc -l) files)"
}

root=$PWD
# The sample's contracts and the fixtures' `C-1` of `ACME-1`: a contracts
# file that names none of an inventory's contracts stops a run (exit 2)
# before it plans anything, which would leave nothing to compare.
fixture_contracts="$work/contracts.csv"
{
  cat "$root/sample-data/contracts.csv"
  sed -n 2p "$root/sample-data/contracts.csv" | sed -E 's/^[^,]*,[^,]*,/C-1,ACME-1,/'
} >"$fixture_contracts"
for input in "${inputs[@]}"; do
  case $input in /*) abs=$input ;; *) abs="$root/$input" ;; esac
  contracts=$fixture_contracts
  [[ $input != "$work/gen/inventory.csv" ]] || contracts="$work/gen/contracts.csv"
  for t in $THREADS; do
    compare "validate $input --threads $t" 0 validate "$abs" --threads "$t" --emit-valid
    compare "quote $input --threads $t" 0 quote "$abs" --contracts "$contracts" \
      --as-of "$AS_OF" --threads "$t"
    compare "run --dry-run --no-reconcile $input --threads $t" 0 run "$abs" \
      --contracts "$contracts" --as-of "$AS_OF" --threads "$t" \
      --dry-run --no-reconcile --state journal.sqlite
  done
done
compare "run sample-data (simulator)" 1 run "$root/sample-data/inventory.csv" \
  --contracts "$root/sample-data/contracts.csv" --as-of "$AS_OF" --threads 2 --state journal.sqlite
echo "all reports the same"
