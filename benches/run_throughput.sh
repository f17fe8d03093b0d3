#!/usr/bin/env bash
# `refleet run` against the simulator: achieved request rate as a share of
# the server's limit R, client CPU time per request, and wall time.
#
#   benches/run_throughput.sh [ITEMS] [RATE]     default: 100000 200
#
# The simulator (`refleet sim`, faults off) enforces RATE requests/s with a
# burst of SIM_BURST (default 10: 50 ms at 200/s); refleet runs with --rate RATE --burst 1, so it should use the
# whole rate and never draw a 429. The inventory comes from `refleet gen`
# (deterministic); its eligible share is what gets submitted.
#
# Environment: REFLEET (binary, default target/release/refleet), NO_BUILD=1,
# BENCH_DIR (default target/bench), BATCH (items per request, default 100),
# CONCURRENCY (default 16).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ITEMS=${1:-100000}
RATE=${2:-200}
REFLEET=${REFLEET:-target/release/refleet}
BENCH_DIR=${BENCH_DIR:-target/bench}
BATCH=${BATCH:-100}
CONCURRENCY=${CONCURRENCY:-16}
AS_OF=2026-11-24

[[ -n ${NO_BUILD:-} ]] || cargo build --release --quiet
mkdir -p "$BENCH_DIR"
data="$BENCH_DIR/run-$ITEMS"
if [[ ! -f $data/inventory.csv ]]; then
  "$REFLEET" gen --rows "$ITEMS" --seed 5 --out "$data" --quiet
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REFLEET_SIM_TOKEN=bench "$REFLEET" sim --listen "127.0.0.1:$port" --rate-limit "$RATE" --burst "${SIM_BURST:-10}" --quiet &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
stats() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer bench"})).read().decode())' "http://127.0.0.1:$port/v1/_sim/stats"; }
for _ in $(seq 50); do
  stats >/dev/null 2>&1 && break
  sleep 0.1
done

# Its own journal in $out, new each time: the bench measures a first run.
out="$BENCH_DIR/run-$ITEMS-out"
rm -rf "$out"
timing="$BENCH_DIR/run-$ITEMS.time"
REFLEET_API_TOKEN=bench /usr/bin/time -f '%e %U %S %M' -o "$timing" \
  "$REFLEET" run "$data/inventory.csv" --contracts "$data/contracts.csv" --as-of "$AS_OF" \
  --out "$out" --state "$out/journal.sqlite" --api-url "http://127.0.0.1:$port" --rate "$RATE" --burst 1 \
  --batch-size "$BATCH" --concurrency "$CONCURRENCY" --quiet || true
stats=$(stats)

python3 - "$out/summary.json" "$timing" "$RATE" "$stats" "$ITEMS" "$out/journal.sqlite" <<'PY'
import json, sqlite3, sys
from datetime import datetime
summary = json.load(open(sys.argv[1]))
wall, user, sys_, rss_kb = open(sys.argv[2]).read().split()
rate = float(sys.argv[3]); stats = json.loads(sys.argv[4]); items = int(sys.argv[5])
req = summary["requests"]
states = {k: v for k, v in summary["items_by_state"].items() if v}
print(f"rows {items}, {summary['eligible']} eligible; states {states}")
print(f"outcome {summary['outcome']}; plan {summary['timings']['plan_seconds']:.2f} s, "
      f"submit+track {summary['timings']['submit_seconds']:.2f} s, wall {float(wall):.2f} s")
print(f"requests {req['sent']} ({stats['reactivation_requests']} submissions), "
      f"429s {stats['rate_limited']}, duplicate activations {stats['duplicate_activations']}")
# The rate while there was work to send: every request (polls included)
# between the first and the last submission, from the journal's attempts.
times = [datetime.fromisoformat(a.replace("Z", "+00:00")) for (a,) in
         sqlite3.connect(sys.argv[6]).execute("SELECT at FROM attempts ORDER BY at")]
subs = [datetime.fromisoformat(a.replace("Z", "+00:00")) for (a,) in
        sqlite3.connect(sys.argv[6]).execute("SELECT at FROM attempts WHERE kind = 'submit' ORDER BY at")]
window = (subs[-1] - subs[0]).total_seconds()
n = sum(1 for t in times if subs[0] <= t <= subs[-1])
busy = (n - 1) / window if window > 0 else float("nan")
print(f"rate while submitting {busy:.1f}/s = {100 * busy / rate:.1f} % of the server's {rate:g}/s "
      f"({n} requests in {window:.2f} s); whole run {req['achieved_rate']:.1f}/s")
cpu = float(user) + float(sys_)
print(f"client CPU {cpu:.2f} s = {1e3 * cpu / max(req['sent'], 1):.2f} ms per request (plan included); peak RSS {int(rss_kb) / 1024:.0f} MiB")
PY
