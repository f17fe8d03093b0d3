#!/usr/bin/env bash
# `refleet run` against the simulator (issue 17): wall time, phase timings,
# requests/s, client CPU per request, peak RSS, duplicate activations,
# whether every row ended in a terminal state, and the bytes the journal and
# the audit log cost per item; PASS/FAIL against the issue's targets.
#
#   benches/run_throughput.sh [ITEMS] [RATE]     default: 1000000 1000
#
# Default (issue 17's configuration): `refleet gen --rows 1000000 --seed 42`,
# simulator `refleet sim --rate-limit 1000 --burst 100` (faults off), client
# `refleet run --rate 1000 --burst 100 --batch-size 500 --concurrency 16`.
# RATE is both the simulator's --rate-limit and the client's --rate.
#
# The issue-5/16 configuration (100k rows, 200/s, client burst 1) is
#
#   SEED=5 SIM_BURST=10 BURST=1 BATCH=100 benches/run_throughput.sh 100000 200
#
# Environment (each also settable as NAME=value before the command):
#   ITEMS, RATE    as the arguments (the arguments win)
#   SEED           `refleet gen --seed` (default 42)
#   SIM_BURST      the simulator's --burst (default 100)
#   BURST          the client's --burst (default 100)
#   BATCH          the client's --batch-size (default 500)
#   CONCURRENCY    the client's --concurrency (default 16)
#   EXTRA_ARGS     more `refleet run` flags, split on spaces (e.g. --no-reconcile)
#   AS_OF          --as-of (default 2026-11-24)
#   REFLEET        binary (default target/release/refleet); NO_BUILD=1 skips
#                  `cargo build --release`
#   BENCH_DIR      where the inventory is generated and kept and the run's
#                  --out and journal go (default target/bench)
#   MAX_WALL       wall-time target in seconds (default 90; a run exiting
#                  non-zero FAILs it whatever its time)
#   MAX_BYTES      journal + audit log target in bytes per item (default 400)
#
# Targets (issue 17, meaningful at the default configuration): wall <= 90 s,
# every row of results.csv terminal (active, rejected, escalated, invalid,
# ineligible), 0 duplicate activations, journal + audit log <= 400 bytes per
# item (items = the journal's `items` rows, eligible + manual review). Each
# is printed with PASS/FAIL; the script exits 1 if any FAILs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ITEMS=${1:-${ITEMS:-1000000}}
RATE=${2:-${RATE:-1000}}
SEED=${SEED:-42}
SIM_BURST=${SIM_BURST:-100}
BURST=${BURST:-100}
BATCH=${BATCH:-500}
CONCURRENCY=${CONCURRENCY:-16}
AS_OF=${AS_OF:-2026-11-24}
REFLEET=${REFLEET:-target/release/refleet}
BENCH_DIR=${BENCH_DIR:-target/bench}
MAX_WALL=${MAX_WALL:-90}
MAX_BYTES=${MAX_BYTES:-400}
read -r -a extra <<<"${EXTRA_ARGS:-}"

die() { echo "run_throughput.sh: $*" >&2; exit 1; }
# shellcheck source=benches/common.sh
source benches/common.sh
trap 'kill $sim 2>/dev/null || true' EXIT

# Its own --out and journal, new each time: the bench measures a first run.
out="$BENCH_DIR/run-$ITEMS-s$SEED-out"
rm -rf "$out"
mkdir -p "$out"
timing="$BENCH_DIR/run-$ITEMS-s$SEED.time"
echo "rows $ITEMS (seed $SEED); sim --rate-limit $RATE --burst $SIM_BURST; run --rate $RATE --burst $BURST --batch-size $BATCH --concurrency $CONCURRENCY ${extra[*]}"
rc=0
REFLEET_API_TOKEN=bench /usr/bin/time -f '%e %U %S %M' -o "$timing" \
  "$REFLEET" run "$data/inventory.csv" --contracts "$data/contracts.csv" --as-of "$AS_OF" \
  --out "$out" --state "$out/journal.sqlite" --api-url "http://127.0.0.1:$port" \
  --rate "$RATE" --burst "$BURST" --batch-size "$BATCH" --concurrency "$CONCURRENCY" \
  "${extra[@]}" --quiet || rc=$?
sim_stats=$(stats 2>/dev/null || echo '{}')

python3 - "$out" "$timing" "$RATE" "$sim_stats" "$ITEMS" "$rc" "$MAX_WALL" "$MAX_BYTES" <<'PY'
import csv, glob, json, os, sqlite3, sys
from datetime import datetime

out, timing, rate, sim_stats, items_in, rc, max_wall, max_bytes = sys.argv[1:9]
rate = float(rate); items_in = int(items_in); rc = int(rc)
max_wall = float(max_wall); max_bytes = float(max_bytes)
journal = os.path.join(out, "journal.sqlite")
try:
    stats = json.loads(sim_stats)
except ValueError:
    stats = {}
try:
    summary = json.load(open(os.path.join(out, "summary.json")))
except (OSError, ValueError) as e:
    print(f"summary.json: unreadable ({e})")
    summary = {}

# GNU time puts "Command exited with non-zero status N" before the format's
# line when the command fails: the figures are on the last line.
wall = user = sys_ = rss_kb = None
try:
    last = [l for l in open(timing).read().splitlines() if l.strip()][-1]
    wall, user, sys_, rss_kb = (float(x) for x in last.split())
except (OSError, IndexError, ValueError) as e:
    print(f"timing: unreadable ({e})")

def fmt(x, spec, unit=""):
    return "n/a" if x is None else f"{x:{spec}}{unit}"

print(f"exit code {rc}; outcome {summary.get('outcome', 'n/a')}")
states = {k: v for k, v in summary.get("items_by_state", {}).items() if v}
print(f"rows {items_in}, {summary.get('eligible', 'n/a')} eligible, "
      f"{summary.get('ineligible', 'n/a')} ineligible; journal states {states}")

# Every phase timing summary.json has, whatever their names.
print(f"wall {fmt(wall, '.2f', ' s')}")
for k, v in summary.get("timings", {}).items():
    name = k[:-len("_seconds")] if k.endswith("_seconds") else k
    print(f"  {name:<16} {v:.2f} s" if isinstance(v, (int, float)) else f"  {name:<16} {v}")

req = summary.get("requests", {})
sent = req.get("sent")
print(f"requests {fmt(sent, 'd')} sent by the client, {fmt(req.get('throttled'), 'd')} throttled; "
      f"achieved {fmt(req.get('achieved_rate'), '.1f', '/s')} (summary.json), "
      f"{fmt(sent / wall if sent and wall else None, '.1f', '/s')} over the whole wall time")
print(f"simulator: {stats.get('requests', 'n/a')} requests, {stats.get('reactivation_requests', 'n/a')} submissions, "
      f"{stats.get('rate_limited', 'n/a')} 429s, {stats.get('activations', 'n/a')} activations, "
      f"{stats.get('duplicate_activations', 'n/a')} duplicate activations")

# The rate while there was work to send: every request (polls included)
# between the first and the last submission, from the journal's attempts.
# That table may shrink or go: then n/a.
try:
    db = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    ts = lambda a: datetime.fromisoformat(a.replace("Z", "+00:00"))
    subs = [ts(a) for (a,) in db.execute("SELECT at FROM attempts WHERE kind = 'submit' ORDER BY at")]
    if len(subs) < 2:
        raise ValueError(f"{len(subs)} submissions in the attempts table")
    n = sum(1 for (a,) in db.execute("SELECT at FROM attempts") if subs[0] <= ts(a) <= subs[-1])
    window = (subs[-1] - subs[0]).total_seconds()
    busy = (n - 1) / window
    print(f"rate while submitting {busy:.1f}/s = {100 * busy / rate:.1f} % of the server's {rate:g}/s "
          f"({n} requests in {window:.2f} s)")
except Exception as e:  # noqa: BLE001 - any failure is "n/a", not a crash
    print(f"rate while submitting n/a ({type(e).__name__}: {e})")

cpu = None if user is None else user + sys_
print(f"client CPU {fmt(cpu, '.2f', ' s')} (user {fmt(user, '.2f')} + sys {fmt(sys_, '.2f')}) = "
      f"{fmt(1e3 * cpu / sent if cpu is not None and sent else None, '.3f', ' ms')} per request "
      f"(validation, plan, journal, reports included); "
      f"peak RSS {fmt(rss_kb / 1024 if rss_kb is not None else None, '.0f', ' MiB')}")

# Every row of results.csv in a terminal state.
TERMINAL = {"active", "rejected", "escalated", "invalid", "ineligible"}
by_state, rows = {}, 0
try:
    with open(os.path.join(out, "results.csv"), newline="") as f:
        r = csv.reader(f)
        col = next(r).index("state")
        for line in r:
            rows += 1
            by_state[line[col]] = by_state.get(line[col], 0) + 1
    others = {k: v for k, v in by_state.items() if k not in TERMINAL}
    print(f"results.csv: {rows} rows, by state {dict(sorted(by_state.items()))}; "
          f"not terminal: {sum(others.values())} {others if others else ''}".rstrip())
    all_terminal = not others and rows == items_in
    if rows != items_in:
        print(f"results.csv has {rows} rows for {items_in} input rows")
except (OSError, ValueError, StopIteration) as e:
    print(f"results.csv: unreadable ({e})")
    all_terminal = False

# Bytes on disk per journal item (eligible + manual review).
def size(p):
    try:
        return os.path.getsize(p)
    except OSError:
        return 0
jbytes = size(journal) + size(journal + "-wal")
audits = sorted(set(glob.glob(os.path.join(out, "audit.jsonl")) + glob.glob(os.path.join(out, "audit-*.jsonl"))))
abytes = sum(size(p) for p in audits)
try:
    n_items = sqlite3.connect(f"file:{journal}?mode=ro", uri=True).execute("SELECT COUNT(*) FROM items").fetchone()[0]
    whence = "journal items"
except Exception as e:  # noqa: BLE001
    n_items = summary.get("eligible") or 0
    whence = f"summary.json eligible (journal: {e})"
per = lambda b: b / n_items if n_items else float("nan")
wal = f" incl. -wal {size(journal + '-wal')} B" if os.path.exists(journal + "-wal") else ""
print(f"per item ({n_items} {whence}): journal {jbytes} B{wal} = {per(jbytes):.1f} B, "
      f"audit log {abytes} B ({', '.join(os.path.basename(p) for p in audits) or 'none'}) = {per(abytes):.1f} B, "
      f"together {per(jbytes + abytes):.1f} B")

dups = stats.get("duplicate_activations")
checks = [
    (f"wall <= {max_wall:g} s", wall is not None and rc == 0 and wall <= max_wall,
     f"{fmt(wall, '.2f', ' s')}" + ("" if rc == 0 else f", exit code {rc}")),
    ("every row terminal", all_terminal, f"{rows} rows, {sum(v for k, v in by_state.items() if k not in TERMINAL)} not terminal"),
    ("0 duplicate activations", dups == 0, f"{dups if dups is not None else 'n/a'}"),
    (f"journal + audit log <= {max_bytes:g} B/item", n_items > 0 and per(jbytes + abytes) <= max_bytes,
     f"{per(jbytes + abytes):.1f} B/item"),
]
for name, ok, got in checks:
    print(f"{'PASS' if ok else 'FAIL'}  {name}: {got}")
sys.exit(0 if all(ok for _, ok, _ in checks) else 1)
PY
