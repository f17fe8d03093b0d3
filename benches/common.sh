# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by the benchmark scripts (sourced, not run): the generated
# inventory and a simulator on a free loopback port.
#
# Expects: REFLEET, BENCH_DIR, ITEMS, SEED, RATE, SIM_BURST, and a `die`
# function. Sets: data (the inventory's folder), port, sim (its pid), and
# defines `stats` (the simulator's /v1/_sim/stats as JSON) and `start_sim`.

[[ $ITEMS =~ ^[1-9][0-9]*$ ]] || die "ITEMS must be a positive integer, got '$ITEMS'"
[[ -n ${NO_BUILD:-} ]] || cargo build --release --quiet
[[ -x $REFLEET ]] || die "no binary at $REFLEET"

mkdir -p "$BENCH_DIR"
# Deterministic: the same ITEMS and SEED give the same files, so they are kept.
data="$BENCH_DIR/gen-$ITEMS-s$SEED"
if [[ ! -f $data/inventory.csv || ! -f $data/contracts.csv ]]; then
  "$REFLEET" gen --rows "$ITEMS" --seed "$SEED" --out "$data" --quiet
fi

stats() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer bench"}), timeout=10).read().decode())' "http://127.0.0.1:$port/v1/_sim/stats"; }
# A simulator that knows nothing yet, on a new free port (call again for a
# fresh one after `kill $sim`).
start_sim() {
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  REFLEET_SIM_TOKEN=bench "$REFLEET" sim --listen "127.0.0.1:$port" --rate-limit "$RATE" --burst "$SIM_BURST" --quiet &
  sim=$!
  for _ in $(seq 100); do
    stats >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "the simulator did not come up on port $port"
}
start_sim
