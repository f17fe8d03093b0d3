#!/usr/bin/env bash
# Several runners on one PostgreSQL ledger through a real rate-limiting
# proxy (issue 18): RUNNERS `refleet run` processes start together on the
# same ITEMS-row export, each with its own --out, all on one ledger, all
# sending through nginx `limit_req` at LIMIT requests/s with a burst of
# PROXY_BURST (answering 429 above it) to the simulator, which does not
# limit. Each runner is given `--rate LIMIT`: the vendor's limit for the
# account, which the runners share through the ledger.
#
# Prints and checks: every runner's exit code and that every row of its
# results.csv is terminal, duplicate activations (the simulator's count),
# 429s (nginx's log), and the combined request rate while submitting (all
# requests between the first and the last POST /v1/reactivations, from
# nginx's log), which must be at least 90 % of LIMIT.
#
#   benches/runners_via_proxy.sh                   # 3 runners, 5,000 rows, 20/s, burst 5
#   RUNNERS=3 ITEMS=5000 LIMIT=20 PROXY_BURST=5 NO_BUILD=1 benches/runners_via_proxy.sh
#   RUNNERS=1 RUN_RATE=60 benches/runners_via_proxy.sh   # control: over the limit, the proxy says 429
#
# Needs nginx (apt-get install nginx-light) and Debian's PostgreSQL server
# (`.ci/run` installs it); see benches/pg.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
die() {
  echo "runners_via_proxy: $*" >&2
  exit 2
}

REFLEET=${REFLEET:-target/release/refleet}
BENCH_DIR=${BENCH_DIR:-target/bench}
ITEMS=${ITEMS:-5000}
SEED=${SEED:-42}
RUNNERS=${RUNNERS:-3}
LIMIT=${LIMIT:-20}
PROXY_BURST=${PROXY_BURST:-5}
# The runners' --rate: the proxy's limit, unless a control run sets more.
RUN_RATE=${RUN_RATE:-$LIMIT}
BATCH=${BATCH:-100}
# The simulator does not limit: the proxy does.
RATE=100000
SIM_BURST=10000
command -v nginx >/dev/null || die "nginx is not installed (apt-get install nginx-light)"

work=$(mktemp -d)
chmod 755 "$work"
nginx_pid=
cleanup() {
  [[ -n $nginx_pid ]] && kill "$nginx_pid" 2>/dev/null || true
  pg_stop
  [[ -n ${sim:-} ]] && kill "$sim" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# shellcheck source=benches/pg.sh
source benches/pg.sh
# shellcheck source=benches/common.sh
source benches/common.sh

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The ledger: a throwaway cluster on a free loopback port.
pg_start "$work/pg"

# The proxy: nginx limit_req in front of the simulator.
nport=$(free_port)
mkdir -p "$work/nginx"
{
  [[ $EUID -eq 0 ]] && echo "user root;"
  cat <<EOF
worker_processes 1;
error_log $work/nginx/error.log;
pid $work/nginx/nginx.pid;
events { worker_connections 1024; }
http {
  log_format timed '\$msec \$status \$request_method \$uri';
  access_log $work/nginx/access.log timed;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  limit_req_zone \$server_name zone=vendor:1m rate=${LIMIT}r/s;
  limit_req_status 429;
  server {
    # The zone's key: one name, so every request counts against one limit
    # (an empty key would not be limited at all).
    server_name vendor;
    listen 127.0.0.1:$nport;
    location / {
      limit_req zone=vendor burst=$PROXY_BURST nodelay;
      proxy_pass http://127.0.0.1:$port;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
} >"$work/nginx/nginx.conf"
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 50); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$nport),1)" 2>/dev/null && break
  sleep 0.1
done

echo "rows $ITEMS (seed $SEED); $RUNNERS runners on one ledger; nginx limit_req ${LIMIT}r/s burst $PROXY_BURST; run --rate $RUN_RATE --batch-size $BATCH"
pids=()
started=$(date +%s.%N)
for i in $(seq "$RUNNERS"); do
  REFLEET_API_TOKEN=bench "$REFLEET" run "$data/inventory.csv" --contracts "$data/contracts.csv" \
    --out "$work/out$i" --api-url "http://127.0.0.1:$nport" --state "$ledger" \
    --rate "$RUN_RATE" --batch-size "$BATCH" --quiet 2>"$work/run$i.log" &
  pids+=($!)
done
codes=()
for p in "${pids[@]}"; do
  rc=0
  wait "$p" || rc=$?
  codes+=("$rc")
done
ended=$(date +%s.%N)
sim_stats=$(stats 2>/dev/null || echo '{}')

python3 - "$work" "$RUNNERS" "$LIMIT" "$sim_stats" "$started" "$ended" "${codes[@]}" <<'PY'
import csv, json, sys
work, runners, limit, sim_stats, started, ended, *codes = sys.argv[1:]
runners, limit = int(runners), float(limit)
stats = json.loads(sim_stats or "{}")
ok = True

terminal = {"invalid", "ineligible", "active", "rejected", "escalated"}
for i in range(1, runners + 1):
    out = f"{work}/out{i}"
    rows = list(csv.DictReader(open(f"{out}/results.csv")))
    open_rows = [r for r in rows if r["state"] not in terminal]
    paid = sum(1 for r in rows if r["state"] == "active" and r.get("source") == "this_run")
    summary = json.load(open(f"{out}/summary.json"))
    print(f"runner {i}: exit {codes[i-1]}, {len(rows)} rows, {len(open_rows)} not terminal, "
          f"paid {paid} of {sum(1 for r in rows if r['state'] == 'active')} active, "
          f"{summary['requests']['sent']} requests, {summary['requests']['throttled']} throttled, "
          f"{summary['timings']['total_seconds']:.1f} s")
    if codes[i-1] != "0" or open_rows:
        ok = False
        print(open(f"{work}/run{i}.log").read()[-2000:])

log = [l.split() for l in open(f"{work}/nginx/access.log")]
times = [float(l[0]) for l in log]
throttled = sum(1 for l in log if l[1] == "429")
posts = [float(l[0]) for l in log if l[2] == "POST" and l[3] == "/v1/reactivations"]
if posts:
    first, last = posts[0], posts[-1]
    within = [t for t in times if first <= t <= last]
    rate = (len(within) - 1) / (last - first) if last > first else 0.0
else:
    first = last = rate = 0.0
    within = []
# The most requests in any one second, by the proxy's clock.
most, j = 0, 0
for k, t in enumerate(times):
    while times[j] < t - 1.0:
        j += 1
    most = max(most, k - j + 1)
dups = stats.get("duplicate_activations")
print(f"proxy: {len(log)} requests, {throttled} answered 429; while submitting ({last - first:.1f} s, "
      f"{len(within)} requests): {rate:.2f}/s of {limit:g}/s ({100 * rate / limit:.1f} %); "
      f"most in one second {most}")
print(f"simulator: {stats.get('requests', 'n/a')} requests, {stats.get('activations', 'n/a')} activations, "
      f"{dups} duplicate activations; wall {float(ended) - float(started):.1f} s")
checks = [
    ("every runner exit 0, every row terminal", ok),
    ("0 duplicate activations", dups == 0),
    ("0 answered 429", throttled == 0),
    ("combined rate while submitting >= 90 % of the limit", rate >= 0.9 * limit),
]
for name, passed in checks:
    print(f"{'PASS' if passed else 'FAIL'}: {name}")
sys.exit(0 if all(p for _, p in checks) else 1)
PY
