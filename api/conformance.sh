#!/usr/bin/env bash
# Conformance: the document is valid OpenAPI (openapi-spec-validator), and
# `refleet sim` conforms to it (schemathesis, every check on). Both come from
# PyPI into a venv if missing. The script starts the simulator on
# a free loopback port with a token, runs schemathesis on the served
# /openapi.json, stops the simulator and exits with schemathesis's status.
#
#   api/conformance.sh                      # default run
#   MAX_EXAMPLES=500 api/conformance.sh     # longer (default: schemathesis's own, 100 per operation)
#   REFLEET_BIN=target/release/refleet api/conformance.sh   # skip the build
#   SIM_ARGS="--rate-limit 50 --error-rate 0.05" api/conformance.sh   # with faults on
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${REFLEET_CONFORMANCE_VENV:-target/conformance-venv}"
# A venv that no longer runs (moved or copied: its scripts name the old
# interpreter path) is made afresh.
if ! "$VENV/bin/schemathesis" --version >/dev/null 2>&1 \
  || ! "$VENV/bin/openapi-spec-validator" --help >/dev/null 2>&1; then
  rm -rf "$VENV"
  echo "== installing schemathesis and openapi-spec-validator into $VENV"
  if [ ! -x "$VENV/bin/pip" ] && ! { command -v python3 >/dev/null && python3 -m venv "$VENV"; }; then
    # A fresh Debian/Ubuntu lacks venv (ensurepip) or Python itself.
    if command -v apt-get >/dev/null; then
      SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3 python3-venv >/dev/null
      rm -rf "$VENV"
      python3 -m venv "$VENV"
    else
      echo "python3 with the venv module is needed" >&2
      exit 1
    fi
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis>=4.32,<5" "openapi-spec-validator>=0.7"
fi
"$VENV/bin/schemathesis" --version

echo "== openapi-spec-validator api/openapi.json"
"$VENV/bin/openapi-spec-validator" api/openapi.json

BIN="${REFLEET_BIN:-}"
if [ -z "$BIN" ]; then
  cargo build --quiet --bin refleet
  BIN=target/debug/refleet
fi

TOKEN="conformance-$$"
SIM_LOG="$(mktemp)"
# shellcheck disable=SC2086 # SIM_ARGS is a list of flags
REFLEET_SIM_TOKEN="$TOKEN" "$BIN" sim --listen 127.0.0.1:0 ${SIM_ARGS:-} >"$SIM_LOG" 2>&1 &
SIM_PID=$!
cleanup() {
  kill "$SIM_PID" 2>/dev/null || true
  wait "$SIM_PID" 2>/dev/null || true
  rm -f "$SIM_LOG"
}
trap cleanup EXIT

URL=""
for _ in $(seq 1 100); do
  URL="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$SIM_LOG" | head -n 1 || true)"
  [ -n "$URL" ] && break
  sleep 0.1
done
if [ -z "$URL" ]; then
  echo "refleet sim did not start:" >&2
  cat "$SIM_LOG" >&2
  exit 1
fi
head -n 1 "$SIM_LOG"

echo "== schemathesis run $URL/openapi.json --checks all${MAX_EXAMPLES:+ --max-examples $MAX_EXAMPLES}"
status=0
# The hook keeps "one Idempotency-Key per distinct request" (see its docstring).
PYTHONPATH="api${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=conformance_hooks \
REFLEET_CONFORMANCE_TOKEN="$TOKEN" \
"$VENV/bin/schemathesis" --config-file api/schemathesis.toml run "$URL/openapi.json" \
  --url "$URL" \
  --checks all \
  ${MAX_EXAMPLES:+--max-examples "$MAX_EXAMPLES"} \
  ${SCHEMATHESIS_SEED:+--seed "$SCHEMATHESIS_SEED"} \
  || status=$?

echo "== what the simulator saw (GET /v1/_sim/stats)"
REFLEET_CONFORMANCE_TOKEN="$TOKEN" "$VENV/bin/python" -c 'import os, sys, urllib.request; print(urllib.request.urlopen(urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["REFLEET_CONFORMANCE_TOKEN"]})).read().decode())' \
  "$URL/v1/_sim/stats" || true
exit "$status"
