#!/usr/bin/env bash
# Throughput and peak memory of `refleet validate` and `refleet quote` against
# the Python Polars baselines (benches/polars_baseline.py) on the same
# generated inventory and contracts.
#
#   benches/throughput.sh [ROWS...]          default: 1000000 10000000
#
# Environment:
#   BENCH=WHICH    validate, quote or all (default all)
#   SHAPE=SHAPE    the inventory's shape (default default): `default` is
#                  `refleet gen`'s 400 rows per account (1 M rows: 2,500
#                  accounts, 15,000 contracts, 2,500 quotes); `small-contracts`
#                  is `gen --account-rows 20` (1 M rows: 50,000 accounts,
#                  300,000 contracts, 50,000 quotes)
#   AS_OF=DATE     --as-of for both quote runs (default 2026-11-24; fixed so
#                  the eligible set, and so the work, does not drift by day)
#   THREADS=N      refleet --threads N and POLARS_MAX_THREADS=N (unset: all cores)
#   BENCH_DIR=DIR  where inventories are generated and kept (default target/bench)
#   REFLEET=PATH   binary to measure (default target/release/refleet)
#   NO_BUILD=1     skip `cargo build --release`
#   PYTHON=PATH    interpreter for the baseline (default python3)
#   POLARS_VERSION=V  the Polars release measured against (default 2.2.0,
#                  the newest when the figures in benches/RESULTS.md were
#                  taken); installed with pip when PYTHON has no polars, and
#                  the script stops when PYTHON has another release.
#                  `installed`: whatever PYTHON has
#   REPEAT=N       runs of each tool per benchmark, alternating refleet and
#                  polars (default 3); the tables show each tool's median run
#                  by wall time, and every run's wall time is printed too
#
# Acceptance: refleet/polars must be <= 0.5 for both wall time and peak RSS,
# for each benchmark. Every ratio is printed with PASS/FAIL; the script exits 1
# if any FAILs, so it can gate a change. When the binary has no `quote`
# subcommand, refleet's quote run is skipped and said so (no ratio, no verdict,
# not a FAIL); polars's quote run is still measured.
set -euo pipefail

# Paths below (target/, benches/) are relative to the repository root.
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REFLEET=${REFLEET:-target/release/refleet}
PYTHON=${PYTHON:-python3}
BENCH_DIR=${BENCH_DIR:-target/bench}
TIME=/usr/bin/time
MAX_RATIO=0.5
BENCH=${BENCH:-all}
AS_OF=${AS_OF:-2026-11-24}
REPEAT=${REPEAT:-3}
[[ $REPEAT =~ ^[1-9][0-9]*$ ]] || { echo "throughput.sh: REPEAT must be a positive integer" >&2; exit 1; }

if [[ $# -gt 0 ]]; then ROWS=("$@"); else ROWS=(1000000 10000000); fi

die() { echo "throughput.sh: $*" >&2; exit 1; }

SHAPE=${SHAPE:-default}
case $SHAPE in
    default) shape_args=() ;;
    small-contracts) shape_args=(--account-rows 20) ;;
    *) die "SHAPE must be default or small-contracts, got '$SHAPE'" ;;
esac

case $BENCH in
    validate) do_validate=1 do_quote=0 ;;
    quote) do_validate=0 do_quote=1 ;;
    all) do_validate=1 do_quote=1 ;;
    *) die "BENCH must be validate, quote or all, got '$BENCH'" ;;
esac

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

# "User time (seconds): 1.23" + "System time (seconds): 0.45" -> seconds of
# CPU: less sensitive than wall time to other work on a shared machine.
cpu_seconds() {
    awk -F': *' '/User time \(seconds\)|System time \(seconds\)/ { s += $2 }
        END { printf "%.2f\n", s }' "$1"
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

# pick_median NAME: of NAME.1.time .. NAME.$REPEAT.time, copies the run
# with the median wall time to NAME.time and prints every run's wall time.
pick_median() {
    local name=$1 i walls=() median
    for ((i = 1; i <= REPEAT; i++)); do
        walls+=("$(wall_seconds "$name.$i.time") $i")
    done
    median=$(printf '%s\n' "${walls[@]}" | sort -n | awk -v k=$(((REPEAT + 1) / 2)) 'NR == k { print $2 }')
    cp "$name.$median.time" "$name.time"
    printf '  %s: wall s per run: %s (median: run %s)\n' "$(basename "$name")" \
        "$(printf '%s\n' "${walls[@]}" | awk '{ printf "%s%s", sep, $1; sep = ", " }')" "$median"
}

# table_row TOOL ROWS FILE_MIB TIMEFILE: one line of a results table.
table_row() {
    local w r c
    w=$(wall_seconds "$4")
    r=$(peak_rss_mib "$4")
    c=$(cpu_seconds "$4")
    awk -v t="$1" -v n="$2" -v mib="$3" -v w="$w" -v r="$r" -v c="$c" 'BEGIN {
        ws = (w > 0) ? w : 0.01   # time -v has 10 ms resolution
        printf "%-8s %12d %10.1f %8.2f %8.2f %12.0f %8.1f %12.1f", t, n, mib, w, c, n / ws, mib / ws, r
    }'
}

# add_comparison ARRAY ROWS REFLEET_TIMEFILE POLARS_TIMEFILE: appends the
# ratios and their verdicts to ARRAY; sets failed=1 on a FAIL.
add_comparison() {
    local -n out=$1
    local n=$2 wr wp rr rp wall_ratio rss_ratio wall_verdict rss_verdict
    wr=$(wall_seconds "$3"); wp=$(wall_seconds "$4")
    rr=$(peak_rss_mib "$3"); rp=$(peak_rss_mib "$4")
    wall_ratio=$(ratio "$wr" "$wp")
    rss_ratio=$(ratio "$rr" "$rp")
    wall_verdict=$(verdict "$wr" "$wp")
    rss_verdict=$(verdict "$rr" "$rp")
    [[ $wall_verdict == PASS && $rss_verdict == PASS ]] || failed=1
    out+=("$(printf '  refleet/polars %s at %d rows: wall %s %s, peak RSS %s %s (need <= %s)' \
        "$polars_version" "$n" "$wall_ratio" "$wall_verdict" "$rss_ratio" "$rss_verdict" "$MAX_RATIO")")
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

# The reference is one Polars release, named: a newer one can move the bar
# (benches/RESULTS.md, "A new machine, and Polars 2.2.0"), so the release
# is changed here on purpose, with the figures measured again.
POLARS_VERSION=${POLARS_VERSION:-2.2.0}
installed=$("$PYTHON" -c 'import polars; print(polars.__version__)' 2>/dev/null) || installed=
if [[ -z $installed ]]; then
    [[ $POLARS_VERSION != installed ]] || die "POLARS_VERSION=installed, but $PYTHON has no polars"
    echo "polars: not installed, pip install --quiet polars==$POLARS_VERSION"
    "$PYTHON" -m pip install --quiet "polars==$POLARS_VERSION"
elif [[ $POLARS_VERSION != installed && $installed != "$POLARS_VERSION" ]]; then
    die "$PYTHON has polars $installed, the reference is $POLARS_VERSION: point PYTHON at one with polars $POLARS_VERSION (python3 -m venv /tmp/pv && /tmp/pv/bin/pip install polars==$POLARS_VERSION; PYTHON=/tmp/pv/bin/python), or set POLARS_VERSION=installed to measure against $installed"
fi
# Named in every verdict.
polars_version=$("$PYTHON" -c 'import polars; print(polars.__version__)')
echo "polars: $polars_version ($PYTHON)"

refleet_threads=()
polars_env=()
if [[ -n ${THREADS:-} ]]; then
    refleet_threads=(--threads "$THREADS")
    # Polars reads this once at import, so it must be in the environment.
    polars_env=(env "POLARS_MAX_THREADS=$THREADS")
fi
echo "threads: ${THREADS:-all cores} ($(nproc) online)"
echo "bench: $BENCH, shape: $SHAPE"

refleet_quote=1
if [[ $do_quote == 1 ]] && ! "$REFLEET" quote --help >/dev/null 2>&1; then
    echo "refleet quote not available: skipped"
    refleet_quote=0
fi

results=()
quote_results=()
failed=0
for n in "${ROWS[@]}"; do
    [[ $n =~ ^[0-9]+$ ]] || die "ROWS must be integers, got '$n'"
    dir=$BENCH_DIR/$n
    [[ $SHAPE == default ]] || dir=$BENCH_DIR/$n-$SHAPE
    inv=$dir/inventory.csv
    con=$dir/contracts.csv
    mkdir -p "$dir"

    # Generating 10M rows costs more than validating them: keep the files.
    # gen is deterministic, so regenerating for a missing contracts file
    # rewrites the same inventory.
    if [[ -s $inv && ( $do_quote == 0 || -s $con ) ]]; then
        echo "data: reusing $dir"
    else
        echo "data: $REFLEET gen --rows $n --seed 42 --out $dir --defects 0.03 ${shape_args[*]}"
        "$REFLEET" gen --rows "$n" --seed 42 --out "$dir" --defects 0.03 "${shape_args[@]}"
        [[ -s $inv ]] || die "gen did not write $inv"
        [[ $do_quote == 0 || -s $con ]] || die "gen did not write $con"
    fi
    bytes=$(stat -c %s "$inv")
    file_mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f\n", b / 1048576 }')

    # Both tools should read from the page cache, not whichever runs first
    # paying for the disk.
    cat "$inv" >/dev/null

    if [[ $do_validate == 1 ]]; then
        for ((i = 1; i <= REPEAT; i++)); do
            echo "run $i/$REPEAT: refleet validate ($n rows)"
            rm -rf "$dir/out-refleet"
            run_timed "$dir/refleet.$i" "$dir/refleet.log" -- \
                "$REFLEET" validate "$inv" --out "$dir/out-refleet" --quiet "${refleet_threads[@]}"

            echo "run $i/$REPEAT: polars baseline ($n rows)"
            run_timed "$dir/polars.$i" "$dir/polars.log" -- \
                "${polars_env[@]}" "$PYTHON" benches/polars_baseline.py validate "$inv"
        done
        sed 's/^/  polars: /' "$dir/polars.log"
        pick_median "$dir/refleet"
        pick_median "$dir/polars"

        for tool in refleet polars; do
            results+=("$(table_row "$tool" "$n" "$file_mib" "$dir/$tool.time")")
        done
        add_comparison results "$n" "$dir/refleet.time" "$dir/polars.time"
    fi

    if [[ $do_quote == 1 ]]; then
        # Both inputs are read, so file MiB (and MiB/s) counts the contracts too.
        qbytes=$((bytes + $(stat -c %s "$con")))
        qfile_mib=$(awk -v b="$qbytes" 'BEGIN { printf "%.1f\n", b / 1048576 }')
        cat "$con" >/dev/null

        [[ $refleet_quote == 1 ]] || echo "run: refleet quote ($n rows): skipped, refleet quote not available"
        for ((i = 1; i <= REPEAT; i++)); do
            if [[ $refleet_quote == 1 ]]; then
                echo "run $i/$REPEAT: refleet quote ($n rows)"
                rm -rf "$dir/out-refleet-quote"
                run_timed "$dir/refleet-quote.$i" "$dir/refleet-quote.log" -- \
                    "$REFLEET" quote "$inv" --contracts "$con" --out "$dir/out-refleet-quote" \
                    --as-of "$AS_OF" --quiet "${refleet_threads[@]}"
            fi

            echo "run $i/$REPEAT: polars quote baseline ($n rows)"
            run_timed "$dir/polars-quote.$i" "$dir/polars-quote.log" -- \
                "${polars_env[@]}" "$PYTHON" benches/polars_baseline.py quote "$inv" "$con" --as-of "$AS_OF"
        done
        sed 's/^/  polars: /' "$dir/polars-quote.log"
        [[ $refleet_quote == 1 ]] && pick_median "$dir/refleet-quote"
        pick_median "$dir/polars-quote"

        if [[ $refleet_quote == 1 ]]; then
            quote_results+=("$(table_row refleet "$n" "$qfile_mib" "$dir/refleet-quote.time")")
        fi
        quote_results+=("$(table_row polars "$n" "$qfile_mib" "$dir/polars-quote.time")")
        if [[ $refleet_quote == 1 ]]; then
            add_comparison quote_results "$n" "$dir/refleet-quote.time" "$dir/polars-quote.time"
        else
            quote_results+=("$(printf '  refleet/polars %s at %d rows: skipped (refleet quote not available)' "$polars_version" "$n")")
        fi
    fi
done

header() {
    printf '%-8s %12s %10s %8s %8s %12s %8s %12s\n' tool rows "file MiB" "wall s" "cpu s" "rows/s" "MiB/s" "peak RSS MiB"
}
if [[ $do_validate == 1 ]]; then
    echo
    echo "validate:"
    header
    printf '%s\n' "${results[@]}"
fi
if [[ $do_quote == 1 ]]; then
    echo
    echo "quote (as of $AS_OF):"
    header
    printf '%s\n' "${quote_results[@]}"
fi
exit "$failed"
