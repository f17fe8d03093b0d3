#!/usr/bin/env bash
# `refleet run --dry-run` against `refleet quote` on the same inventory
# (issue 17: "run --dry-run on 1 M rows costs at most 2x quote").
#
#   benches/dry_run_vs_quote.sh [ITEMS]     default: 1000000
#
# The inventory is `refleet gen --rows ITEMS --seed 42` (shared with
# benches/run_throughput.sh). Three commands, each REPEAT times, alternating
# (one of each per round), every one with the same --as-of and --contracts,
# its own fresh --out and --state in a temporary folder, and --quiet:
#
#   quote                      refleet quote
#   dry-run --no-reconcile     refleet run --dry-run --no-reconcile: refleet's
#                              own cost (validate, decide, quote, results.csv)
#   dry-run with lookups       refleet run --dry-run --api-url SIM --rate RATE
#                              --burst BURST: also looks every item up at the
#                              vendor, here a `refleet sim --rate-limit RATE
#                              --burst SIM_BURST`, so it includes vendor time
#                              bounded by that rate
#
# For each: every wall time, best and median wall, median CPU (user+sys), peak
# RSS (the highest of its runs); then the ratio of medians (and of bests) of
# the dry run without lookups to quote's, with PASS/FAIL for <= MAX_RATIO,
# and, for the dry run with lookups, the vendor's share of its time (its
# requests over RATE) and refleet's. Exits 1 if the ratio FAILs or a run
# fails.
#
# Environment: ITEMS (as the argument), SEED (default 42), REPEAT (default 3),
# RATE (simulator --rate-limit and client --rate, default 1000), SIM_BURST
# (default 100), BURST (client, default 100), BATCH (default 500),
# CONCURRENCY (default 16), AS_OF (default 2026-11-24), MAX_RATIO (default 2),
# REFLEET (default target/release/refleet), NO_BUILD=1, BENCH_DIR (default
# target/bench).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ITEMS=${1:-${ITEMS:-1000000}}
SEED=${SEED:-42}
REPEAT=${REPEAT:-3}
RATE=${RATE:-1000}
SIM_BURST=${SIM_BURST:-100}
BURST=${BURST:-100}
BATCH=${BATCH:-500}
CONCURRENCY=${CONCURRENCY:-16}
AS_OF=${AS_OF:-2026-11-24}
MAX_RATIO=${MAX_RATIO:-2}
REFLEET=${REFLEET:-target/release/refleet}
BENCH_DIR=${BENCH_DIR:-target/bench}

die() { echo "dry_run_vs_quote.sh: $*" >&2; exit 1; }
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || die "REPEAT must be a positive integer, got '$REPEAT'"
# shellcheck source=benches/common.sh
source benches/common.sh
work=$(mktemp -d "$BENCH_DIR/dry-vs-quote.XXXXXX")
trap 'kill $sim 2>/dev/null || true; rm -rf "$work"' EXIT
export REFLEET_API_TOKEN=bench

common=("$data/inventory.csv" --contracts "$data/contracts.csv" --as-of "$AS_OF" --quiet)
records="$work/records"
: >"$records"
# measure NAME REFLEET-ARGS...: one run in a fresh --out (and --state for
# run), its figures appended to $records; the last summary.json of each
# name is kept.
measure() {
  local name=$1; shift
  local dir="$work/$name" rc=0 last
  rm -rf "$dir"; mkdir -p "$dir"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$REFLEET" "$@" --out "$dir/out" || rc=$?
  last=$(grep -v '^Command' "$work/time" | tail -n 1)
  echo "$name $last $rc" >>"$records"
  [[ ! -f $dir/out/summary.json ]] || cp "$dir/out/summary.json" "$work/$name.summary.json"
  rm -rf "$dir"
}

echo "rows $ITEMS (seed $SEED), $REPEAT runs of each, alternating; lookups against sim --rate-limit $RATE --burst $SIM_BURST with run --rate $RATE --burst $BURST --batch-size $BATCH --concurrency $CONCURRENCY"
for i in $(seq "$REPEAT"); do
  measure quote quote "${common[@]}"
  measure dry-no-reconcile run "${common[@]}" --dry-run --no-reconcile \
    --state "$work/dry-no-reconcile/journal.sqlite"
  measure dry-lookups run "${common[@]}" --dry-run --api-url "http://127.0.0.1:$port" \
    --rate "$RATE" --burst "$BURST" --batch-size "$BATCH" --concurrency "$CONCURRENCY" \
    --state "$work/dry-lookups/journal.sqlite"
  echo "  round $i of $REPEAT done"
done
sim_stats=$(stats 2>/dev/null || echo '{}')

python3 - "$records" "$work" "$MAX_RATIO" "$RATE" "$sim_stats" <<'PY'
import json, os, statistics, sys
records, work, max_ratio, rate, sim_stats = sys.argv[1:6]
max_ratio = float(max_ratio); rate = float(rate)
runs = {}
for line in open(records):
    f = line.split()
    name, rc = f[0], int(f[-1])
    try:
        wall, user, sys_, rss = (float(x) for x in f[1:5])
    except ValueError:
        wall = user = sys_ = rss = float("nan")
    runs.setdefault(name, []).append((wall, user + sys_, rss / 1024, rc))

labels = {
    "quote": "quote",
    "dry-no-reconcile": "run --dry-run --no-reconcile",
    "dry-lookups": f"run --dry-run, lookups at {rate:g}/s",
}
med, best, failed = {}, {}, False
for name, label in labels.items():
    rs = runs.get(name, [])
    walls = [r[0] for r in rs]
    bad = [r[3] for r in rs if r[3] != 0]
    failed |= bool(bad) or not rs
    med[name] = statistics.median(walls) if walls else float("nan")
    best[name] = min(walls) if walls else float("nan")
    print(f"{label:<34} wall {', '.join(f'{w:.2f}' for w in walls)} s: best {best[name]:.2f}, "
          f"median {med[name]:.2f} s; CPU median {statistics.median(r[1] for r in rs) if rs else float('nan'):.2f} s; "
          f"peak RSS {max((r[2] for r in rs), default=float('nan')):.0f} MiB"
          + (f"; EXIT CODES {bad}" if bad else ""))

for name in ("dry-no-reconcile", "dry-lookups"):
    try:
        s = json.load(open(os.path.join(work, f"{name}.summary.json")))
    except (OSError, ValueError):
        continue
    t = ", ".join(f"{k.removesuffix('_seconds')} {v:.2f} s" if isinstance(v, (int, float)) else f"{k} {v}"
                  for k, v in s.get("timings", {}).items())
    lk = s.get("vendor_lookups") or {}
    extra = (f"; {lk.get('looked_up')} items looked up in {lk.get('requests')} requests "
             f"(>= {max(0, lk.get('requests', 0) - 1) / rate:.2f} s at {rate:g}/s)") if lk else ""
    print(f"  {labels[name]} (last run) timings: {t}{extra}")
try:
    st = json.loads(sim_stats)
    print(f"  simulator: {st.get('requests')} requests, {st.get('rate_limited')} 429s")
except ValueError:
    pass

# The verdict is on refleet's own cost. With the lookups a dry run also
# waits for the vendor: about ITEMS/500 requests, at least that many
# seconds over RATE whatever refleet does; their figures are shown beside
# (refleet's time beyond that floor) but are not a verdict.
name = "dry-no-reconcile"
r, rb = med[name] / med["quote"], best[name] / best["quote"]
ok = r <= max_ratio and not any(x[3] for x in runs.get(name, []) + runs.get("quote", []))
print(f"{'PASS' if ok else 'FAIL'}  {labels[name]} / quote (refleet's own cost): median {r:.2f}x, "
      f"best {rb:.2f}x (target <= {max_ratio:g}x)")
name = "dry-lookups"
try:
    lk = json.load(open(os.path.join(work, f"{name}.summary.json"))).get("vendor_lookups") or {}
    floor = max(0, lk.get("requests", 0) - 1) / rate
except (OSError, ValueError):
    floor = float("nan")
print(f"INFO  {labels[name]}: median {med[name]:.2f} s = {floor:.2f} s the vendor's rate takes at least "
      f"+ {med[name] - floor:.2f} s of refleet's ({(med[name] - floor) / med['quote']:.2f}x quote)")
sys.exit(0 if ok and not failed else 1)
PY
