#!/usr/bin/env bash
# Throughput and peak memory of `refleet validate` against the Python Polars
# baseline (benches/polars_baseline.py) on the same generated inventory.
#
#   benches/throughput.sh [ROWS...]          default: 1000000 10000000
#
# Environment:
#   THREADS=N      refleet --threads N and POLARS_MAX_THREADS=N (unset: all cores)
#   BENCH_DIR=DIR  where inventories are generated and kept (default target/bench)
#   REFLEET=PATH   binary to measure (default target/release/refleet)
#   NO_BUILD=1     skip `cargo build --release`
#   PYTHON=PATH    interpreter for the baseline (default python3)
#
# Acceptance: refleet/polars must be <= 0.5 for both wall time and peak RSS.
# Every ratio is printed with PASS/FAIL; the script exits 1 if any FAILs, so
# it can gate a change.
set -euo pipefail

# Paths below (target/, benches/) are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REFLEET=${REFLEET:-target/release/refleet}
PYTHON=${PYTHON:-python3}
BENCH_DIR=${BENCH_DIR:-target/bench}
TIME=/usr/bin/time
MAX_RATIO=0.5

if [[ $# -gt 0 ]]; then ROWS=("$@"); else ROWS=(1000000 10000000); fi

die() { echo "throughput.sh: $*" >&2; exit 1; }

# "Elapsed (wall clock) time (h:mm:ss or m:ss): 1:02.34" -> seconds.
# GNU time prints m:ss.ss under an hour and h:mm:ss above it.
wall_seconds() {
    local t
    t=$(sed -n 's/.*Elapsed (wall clock) time.*): *//p' "$1")
    [[ -n $t ]] || die "no wall clock time in $1"
    awk -v t="$t" 'BEGIN {
        n = split(t, p, ":")
        if (n == 2)      s = p[1] * 60 + p[2]
        else if (n == 3) s = p[1] * 3600 + p[2] * 60 + p[3]
        else             exit 1
        printf "%.2f\n", s
    }' || die "cannot parse wall clock time '$t' in $1"
}

# "Maximum resident set size (kbytes): 123456" -> MiB.
peak_rss_mib() {
    local kb
    kb=$(sed -n 's/.*Maximum resident set size (kbytes): *//p' "$1")
    [[ $kb =~ ^[0-9]+$ ]] || die "no peak RSS in $1"
    awk -v kb="$kb" 'BEGIN { printf "%.1f\n", kb / 1024 }'
}

# run_timed NAME LOG -- CMD...: runs CMD under `time -v`, its report in
# NAME.time. `-o` keeps time's report out of the tool's own stderr, which
# goes to LOG. Rejected rows are not an error (refleet exits 0), and 3 means
# "finished, some items failed": both are a completed run worth timing.
run_timed() {
    local name=$1 log=$2 rc=0
    shift 3
    "$TIME" -v -o "$name.time" "$@" >"$log" 2>&1 || rc=$?
    if [[ $rc -ne 0 && $rc -ne 3 ]]; then
        echo "--- $* exited $rc; last lines of $log:" >&2
        tail -n 20 "$log" >&2
        die "benchmark command failed"
    fi
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f\n", a / b; else print "inf" }'; }
# On the unrounded ratio, so 0.5004 is not printed as a PASS at 0.500.
verdict() { awk -v a="$1" -v b="$2" -v m="$MAX_RATIO" 'BEGIN { print (b > 0 && a / b <= m) ? "PASS" : "FAIL" }'; }

[[ -x $TIME ]] || die "$TIME not found (Debian: apt-get install time)"

if [[ ${NO_BUILD:-} == 1 ]]; then
    echo "build: skipped (NO_BUILD=1)"
else
    echo "build: cargo build --release"
    cargo build --release
fi
[[ -x $REFLEET ]] || die "$REFLEET is not an executable (set REFLEET= or build first)"

if ! "$PYTHON" -c 'import polars' 2>/dev/null; then
    echo "polars: not installed, pip install --quiet polars"
    "$PYTHON" -m pip install --quiet polars
fi

refleet_threads=()
polars_env=()
if [[ -n ${THREADS:-} ]]; then
    refleet_threads=(--threads "$THREADS")
    # Polars reads this once at import, so it must be in the environment.
    polars_env=(env "POLARS_MAX_THREADS=$THREADS")
fi
echo "threads: ${THREADS:-all cores} ($(nproc) online)"

results=()
failed=0
declare -A wall rss
for n in "${ROWS[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] || die "ROWS must be integers, got '$n'"
    dir=$BENCH_DIR/$n
    inv=$dir/inventory.csv
    mkdir -p "$dir"

    # Generating 10M rows costs more than validating them: keep the file.
    if [[ -s $inv ]]; then
        echo "data: reusing $inv"
    else
        echo "data: $REFLEET gen --rows $n --seed 42 --out $dir --defects 0.03"
        "$REFLEET" gen --rows "$n" --seed 42 --out "$dir" --defects 0.03
        [[ -s $inv ]] || die "gen did not write $inv"
    fi
    bytes=$(stat -c %s "$inv")
    file_mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f\n", b / 1048576 }')

    # Both tools should read from the page cache, not whichever runs first
    # paying for the disk.
    cat "$inv" >/dev/null

    echo "run: refleet validate ($n rows)"
    rm -rf "$dir/out-refleet"
    run_timed "$dir/refleet" "$dir/refleet.log" -- \
        "$REFLEET" validate "$inv" --out "$dir/out-refleet" --quiet "${refleet_threads[@]}"

    echo "run: polars baseline ($n rows)"
    run_timed "$dir/polars" "$dir/polars.log" -- \
        "${polars_env[@]}" "$PYTHON" benches/polars_baseline.py validate "$inv"
    sed 's/^/  polars: /' "$dir/polars.log"

    for tool in refleet polars; do
        wall[$tool]=$(wall_seconds "$dir/$tool.time")
        rss[$tool]=$(peak_rss_mib "$dir/$tool.time")
        results+=("$(awk -v t="$tool" -v n="$n" -v mib="$file_mib" -v w="${wall[$tool]}" -v r="${rss[$tool]}" 'BEGIN {
            ws = (w > 0) ? w : 0.01   # time -v has 10 ms resolution
            printf "%-8s %12d %10.1f %8.2f %12.0f %8.1f %12.1f", t, n, mib, w, n / ws, mib / ws, r
        }')")
    done

    wall_ratio=$(ratio "${wall[refleet]}" "${wall[polars]}")
    rss_ratio=$(ratio "${rss[refleet]}" "${rss[polars]}")
    wall_verdict=$(verdict "${wall[refleet]}" "${wall[polars]}")
    rss_verdict=$(verdict "${rss[refleet]}" "${rss[polars]}")
    [[ $wall_verdict == PASS && $rss_verdict == PASS ]] || failed=1
    results+=("$(printf '  refleet/polars at %d rows: wall %s %s, peak RSS %s %s (need <= %s)' \
        "$n" "$wall_ratio" "$wall_verdict" "$rss_ratio" "$rss_verdict" "$MAX_RATIO")")
done

echo
printf '%-8s %12s %10s %8s %12s %8s %12s\n' tool rows "file MiB" "wall s" "rows/s" "MiB/s" "peak RSS MiB"
printf '%s\n' "${results[@]}"
exit "$failed"
