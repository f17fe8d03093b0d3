#!/usr/bin/env bash
# A/B: two refleet binaries on the same inventory, alternating, for a change
# that must not cost speed (issue 19: "a change that costs more than 5 %
# needs a reason").
#
#   benches/ab.sh BEFORE AFTER INVENTORY CONTRACTS [COMMAND...]
#
# COMMAND is validate and/or quote (default both). Each binary runs REPEAT
# times (default 5) per command, alternating, each into a fresh --out, with
# --as-of AS_OF (default 2026-11-24) for quote and --threads THREADS when
# set. Prints every run's wall time, then per binary the median wall, median
# CPU (user+sys) and the highest peak RSS, and AFTER/BEFORE for each.
set -euo pipefail
before=${1:?usage: ab.sh BEFORE AFTER INVENTORY CONTRACTS [COMMAND...]}
after=${2:?}
inventory=${3:?}
contracts=${4:?}
shift 4
commands=("$@")
[[ ${#commands[@]} -gt 0 ]] || commands=(validate quote)
REPEAT=${REPEAT:-5}
AS_OF=${AS_OF:-2026-11-24}
threads=()
[[ -z ${THREADS:-} ]] || threads=(--threads "$THREADS")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for cmd in "${commands[@]}"; do
  args=("$cmd" "$inventory" --quiet "${threads[@]}")
  [[ $cmd != quote ]] || args+=(--contracts "$contracts" --as-of "$AS_OF")
  for i in $(seq "$REPEAT"); do
    for which in before after; do
      bin=$before; [[ $which == after ]] && bin=$after
      rm -rf "$work/out"
      /usr/bin/time -f '%e %U %S %M' -o "$work/t" "$bin" "${args[@]}" --out "$work/out" >/dev/null
      read -r wall user sys rss < <(tail -n 1 "$work/t")
      echo "$cmd $which $wall $(echo "$user + $sys" | bc) $rss" | tee -a "$work/runs"
    done
  done
  for which in before after; do
    w=$(awk -v c="$cmd" -v b="$which" '$1==c && $2==b {print $3}' "$work/runs" | median)
    u=$(awk -v c="$cmd" -v b="$which" '$1==c && $2==b {print $4}' "$work/runs" | median)
    m=$(awk -v c="$cmd" -v b="$which" '$1==c && $2==b {print $5}' "$work/runs" | sort -g | tail -n 1)
    echo "$cmd $which: median wall $w s, median CPU $u s, peak RSS $((m / 1024)) MiB" | tee -a "$work/summary"
    eval "${which}_w=$w ${which}_u=$u"
  done
  echo "$cmd after/before: wall $(echo "scale=3; $after_w / $before_w" | bc), CPU $(echo "scale=3; $after_u / $before_u" | bc)"
done
