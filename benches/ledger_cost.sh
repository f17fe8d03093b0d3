#!/usr/bin/env bash
# What the shared ledger costs (issue 18): the same ITEMS-row `refleet run`,
# a first run each time, once on a SQLite journal and once on a PostgreSQL
# ledger (a throwaway cluster on loopback, see benches/pg.sh), each against
# a simulator that holds nothing yet. Prints per store: wall time, plan time, requests, client
# CPU (user + sys of refleet alone, not of the server) per request, peak
# RSS, and what the store holds on disk.
#
#   benches/ledger_cost.sh                     # 100,000 rows, sim 1000/s
#   ITEMS=100000 RATE=1000 NO_BUILD=1 benches/ledger_cost.sh
#
# The client runs as issue 17's bench does (--rate RATE --burst 100
# --batch-size 500 --concurrency 16); the simulator limits at RATE with a
# burst of 100, faults off. Exits 1 if either run fails or leaves a row
# that is not terminal, or the simulator counts a duplicate activation.
set -euo pipefail
cd "$(dirname "$0")/.."
die() {
  echo "ledger_cost: $*" >&2
  exit 2
}

REFLEET=${REFLEET:-target/release/refleet}
BENCH_DIR=${BENCH_DIR:-target/bench}
ITEMS=${ITEMS:-100000}
SEED=${SEED:-42}
RATE=${RATE:-1000}
SIM_BURST=100
AS_OF=${AS_OF:-2026-11-24}

work=$(mktemp -d)
chmod 755 "$work"
cleanup() {
  pg_stop
  [[ -n ${sim:-} ]] && kill "$sim" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# shellcheck source=benches/pg.sh
source benches/pg.sh
# shellcheck source=benches/common.sh
source benches/common.sh
pg_start "$work/pg"

echo "rows $ITEMS (seed $SEED); sim --rate-limit $RATE --burst $SIM_BURST; run --rate $RATE --burst 100 --batch-size 500 --concurrency 16"
dups=0
for store in sqlite postgres; do
  case $store in
    sqlite) state=$work/sqlite/journal.sqlite ;;
    postgres)
      # A vendor that holds nothing yet, as for the first.
      dups=$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["duplicate_activations"])')
      kill "$sim"
      wait "$sim" 2>/dev/null || true
      start_sim
      state=$ledger
      ;;
  esac
  rc=0
  REFLEET_API_TOKEN=bench /usr/bin/time -f '%e %U %S %M' -o "$work/$store.time" \
    "$REFLEET" run "$data/inventory.csv" --contracts "$data/contracts.csv" --as-of "$AS_OF" \
    --out "$work/$store" --state "$state" --api-url "http://127.0.0.1:$port" \
    --rate "$RATE" --burst 100 --batch-size 500 --concurrency 16 --quiet || rc=$?
  echo "$rc" >"$work/$store.rc"
done
dups=$((dups + $(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["duplicate_activations"])')))
db_bytes=$("$pg_bindir/psql" -X -q -A -t -d "$ledger" -c "SELECT pg_database_size(current_database())")

python3 - "$work" "$ITEMS" "$dups" "$db_bytes" <<'PY'
import csv, json, os, sys
work, items, dups, db_bytes = sys.argv[1:5]
items = int(items)
ok = dups == "0"
terminal = {"invalid", "ineligible", "active", "rejected", "escalated"}
for store in ("sqlite", "postgres"):
    out = f"{work}/{store}"
    rc = open(f"{work}/{store}.rc").read().strip()
    wall, user, sys_, rss = (float(x) for x in open(f"{work}/{store}.time").read().split()[-4:])
    s = json.load(open(f"{out}/summary.json"))
    sent = s["requests"]["sent"]
    rows = list(csv.DictReader(open(f"{out}/results.csv")))
    open_rows = sum(1 for r in rows if r["state"] not in terminal)
    if store == "sqlite":
        size = sum(os.path.getsize(os.path.join(f"{work}/sqlite", f))
                   for f in os.listdir(f"{work}/sqlite") if f.startswith(("journal.sqlite", "audit")))
    else:
        size = int(db_bytes or 0)
    print(f"{store:8} exit {rc}: wall {wall:.2f} s (plan {s['timings']['plan_seconds']:.2f} s, "
          f"submit {s['timings']['submit_seconds']:.2f} s, reports {s['timings']['results_seconds']:.2f} s); "
          f"{sent} requests; client CPU {user + sys_:.2f} s = {1e3 * (user + sys_) / sent:.2f} ms/request; "
          f"peak RSS {rss / 1024:.0f} MiB; store {size / 1e6:.1f} MB; {open_rows} rows not terminal")
    ok = ok and rc == "0" and open_rows == 0 and len(rows) == items
print(f"duplicate activations {dups}")
sys.exit(0 if ok else 1)
PY
