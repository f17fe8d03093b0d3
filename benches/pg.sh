# shellcheck shell=bash disable=SC2034  # sets variables for the scripts that source it
# Shared by the benchmark scripts (sourced, not run): a throwaway
# PostgreSQL cluster on a free loopback port, from Debian's server. As root
# the server runs as the user `refleet-pg` (PostgreSQL refuses root).
#
# Expects: a `die` function. Defines `pg_start DIR` (sets `ledger`, the
# URL of its database) and `pg_stop` (stops it at once; safe to call
# twice, and from an EXIT trap).

pg_bindir=${REFLEET_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
pg_as=()
pg_data=

pg_start() {
  local dir=$1 port
  [[ -x $pg_bindir/initdb ]] || die "no PostgreSQL server (apt-get install postgresql)"
  mkdir -p "$dir"
  if [[ $EUID -eq 0 ]]; then
    id refleet-pg >/dev/null 2>&1 || useradd --system --no-create-home refleet-pg
    chmod 755 "$dir"
    chown refleet-pg "$dir"
    pg_as=(runuser -u refleet-pg --)
  fi
  pg_data=$dir/data
  "${pg_as[@]}" "$pg_bindir/initdb" -D "$pg_data" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null
  ledger="postgres://postgres@127.0.0.1:$port/postgres"
}

pg_stop() {
  [[ -n $pg_data ]] || return 0
  "${pg_as[@]}" "$pg_bindir/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true
  pg_data=
}
