#!/usr/bin/env bash
# Start/stop a throwaway PostgreSQL server on 127.0.0.1 for the test suite.
#
#   scripts/pg.sh start [DIR [PORT]]   init (if needed) and start a server in DIR
#   scripts/pg.sh stop DIR             stop the server in DIR (no-op if not running)
#   scripts/pg.sh status DIR           exit 0 if the server in DIR is running
#
# DIR defaults to a fresh `mktemp -d` under /tmp, PORT to 55432. Layout of DIR:
# DIR/data (cluster), DIR/log (server log), DIR/.s.PGSQL.PORT (unix socket).
# The cluster has a superuser role `carehub` (trust auth, loopback only) and a
# database `carehub_test`; fsync etc. are off, so it is for tests only, unless
# CAREHUB_PG_CONF names a settings file (deploy/postgresql/carehub.conf): then that
# file is included and decides durability (fsync, synchronous_commit, WAL archive,
# its /var/lib/carehub/wal-archive becoming DIR/wal-archive), as a real install does.
#
# Server binaries: pg_ctl/initdb on PATH, else the highest version under
# /usr/lib/postgresql/*/bin, else `apt-get install postgresql` (Debian/Ubuntu).
# PostgreSQL refuses to run as root, so as root the server runs as the `postgres`
# OS user if it exists, else as a system user `carehub-pg` created with useradd.
#
# Exit codes: 0 ok, 1 error, 2 usage, 75 the port is already in use.
set -euo pipefail

PG_ROLE=carehub
PG_DB=carehub_test
PG_LIBDIR=${CAREHUB_PG_LIBDIR:-/usr/lib/postgresql}   # overridable for testing
MARKER=.carehub-pg

log() { printf 'pg.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() {
  sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2
  exit 2
}

# --- locating / installing the server binaries -------------------------------

# Print the directory holding pg_ctl+initdb, or return 1.
find_bindir() {
  local p d
  if p=$(command -v pg_ctl) && command -v initdb >/dev/null; then
    d=$(dirname "$(readlink -f "$p")")   # resolve symlinks like /usr/local/bin/pg_ctl
    if [[ -x $d/initdb ]]; then
      printf '%s\n' "$d"
      return 0
    fi
    dirname "$p"   # pg_ctl and initdb are both on PATH, just not side by side
    return 0
  fi
  # Highest version first: 9.6 < 10 < 15 < 16 with sort -V.
  while IFS= read -r d; do
    if [[ -x $d/pg_ctl && -x $d/initdb ]]; then
      printf '%s\n' "$d"
      return 0
    fi
  done < <(compgen -G "$PG_LIBDIR/*/bin" | sort -Vr)
  return 1
}

install_postgres() {
  command -v apt-get >/dev/null ||
    die "no PostgreSQL server binaries (pg_ctl/initdb) found and no apt-get; install PostgreSQL"
  local -a sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
      die "no PostgreSQL server binaries found; run: sudo apt-get install postgresql"
    fi
    sudo=(sudo -n)
  fi
  log "no PostgreSQL server binaries found; installing the 'postgresql' apt package"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends postgresql </dev/null >&2
}

BINDIR=
resolve_bindir() {
  if ! BINDIR=$(find_bindir); then
    install_postgres
    BINDIR=$(find_bindir) || die "installed postgresql but still no pg_ctl/initdb in $PG_LIBDIR/*/bin"
  fi
}

# A client tool (createdb, psql) from BINDIR, else from PATH.
client() {
  if [[ -x $BINDIR/$1 ]]; then
    printf '%s\n' "$BINDIR/$1"
  else
    command -v "$1" || return 1
  fi
}

# --- running as an unprivileged user -----------------------------------------

RUN_USER=   # empty: run as ourselves
pick_run_user() {
  [[ $(id -u) -eq 0 ]] || return 0
  if id -u postgres >/dev/null 2>&1 && [[ $(id -u postgres) -ne 0 ]]; then
    RUN_USER=postgres
  else
    if ! id -u carehub-pg >/dev/null 2>&1; then
      log "creating system user carehub-pg to run PostgreSQL (it refuses to run as root)"
      useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin carehub-pg
    fi
    RUN_USER=carehub-pg
  fi
}

# Run a command as RUN_USER (or directly), from DIR so that an unreadable
# current directory (e.g. /root/...) does not upset initdb/pg_ctl.
as_pg() {
  if [[ -z $RUN_USER ]]; then
    (cd "$DIR" && "$@")
  elif command -v runuser >/dev/null; then
    (cd "$DIR" && runuser -u "$RUN_USER" -- "$@")
  else
    (cd "$DIR" && su -s /bin/bash "$RUN_USER" -c "$(printf '%q ' "$@")")
  fi
}

# --- commands -----------------------------------------------------------------

DIR=
set_dir() {
  DIR=$1
  [[ $DIR == /* ]] || DIR=$PWD/$DIR
  DIR=${DIR%/}
  # pg_ctl hands -o to a shell, and unix socket paths are limited to ~107 bytes.
  [[ $DIR != *[[:space:]\'\"\\\$\`]* ]] || die "DIR must not contain spaces or quotes: $DIR"
  (( ${#DIR} <= 80 )) || die "DIR path too long for a unix socket (max 80 chars): $DIR"
}

cmd_start() {
  local port=${2:-55432}
  if [[ -n ${1:-} ]]; then
    set_dir "$1"
  else
    set_dir "$(mktemp -d "${TMPDIR:-/tmp}/carehub-pg.XXXXXX")"
    : >"$DIR/$MARKER"
  fi
  if ! [[ $port =~ ^[0-9]{1,5}$ ]] || (( port < 1 || port > 65535 )); then
    die "bad PORT: $port"
  fi

  mkdir -p "$DIR"
  # Refuse to take over (chown, initdb into) a directory that is not ours.
  if [[ ! -e $DIR/$MARKER ]]; then
    [[ -z $(ls -A "$DIR") ]] || die "$DIR is not empty and was not created by pg.sh"
    : >"$DIR/$MARKER"
  fi

  resolve_bindir
  pick_run_user
  if [[ -n $RUN_USER ]]; then
    chown "$RUN_USER:" "$DIR" "$DIR/$MARKER"
    chmod 700 "$DIR"
    as_pg test -w "$DIR" ||
      die "user $RUN_USER cannot write $DIR (is a parent directory private?); use a DIR under /tmp"
  fi

  local pgdata=$DIR/data
  if as_pg "$BINDIR/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    die "a server is already running in $pgdata (stop it with: $0 stop $DIR)"
  fi
  if [[ ! -f $pgdata/PG_VERSION ]]; then
    as_pg "$BINDIR/initdb" -D "$pgdata" -A trust -U "$PG_ROLE" --encoding=UTF8 \
      --locale=C --no-sync >"$DIR/initdb.log" 2>&1 ||
      { tail -n 20 "$DIR/initdb.log" >&2; die "initdb failed (log: $DIR/initdb.log)"; }
  fi

  local opts="-h 127.0.0.1 -p $port -k $DIR -c max_connections=200"
  if [[ -n ${CAREHUB_PG_CONF:-} ]]; then
    [[ -f $CAREHUB_PG_CONF ]] || die "CAREHUB_PG_CONF: no such file: $CAREHUB_PG_CONF"
    mkdir -p "$DIR/wal-archive"
    sed "s|/var/lib/carehub/wal-archive|$DIR/wal-archive|g" "$CAREHUB_PG_CONF" \
      >"$pgdata/carehub.conf"
    [[ -z $RUN_USER ]] || chown "$RUN_USER:" "$DIR/wal-archive" "$pgdata/carehub.conf"
    grep -qx "include_if_exists 'carehub.conf'" "$pgdata/postgresql.conf" ||
      echo "include_if_exists 'carehub.conf'" >>"$pgdata/postgresql.conf"
  else
    # Command-line settings win over the files: a cluster once started durable is not.
    opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
  fi
  local logsize=0 newlog
  [[ ! -f $DIR/log ]] || logsize=$(wc -c <"$DIR/log")
  if ! as_pg "$BINDIR/pg_ctl" -D "$pgdata" -l "$DIR/log" -w -t 120 -o "$opts" start >/dev/null; then
    newlog=$(tail -c "+$((logsize + 1))" "$DIR/log" 2>/dev/null || true)   # this attempt only
    printf '%s\n' "$newlog" | tail -n 20 >&2
    if grep -qE 'could not bind|Address already in use' <<<"$newlog"; then
      log "error: port $port on 127.0.0.1 is already in use"
      exit 75
    fi
    die "PostgreSQL failed to start (log: $DIR/log)"
  fi

  local createdb psql
  if createdb=$(client createdb); then
    # createdb fails if the database exists (re-used DIR): check first with psql.
    if ! { psql=$(client psql) && [[ $("$psql" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d postgres \
          -XAtqc "select 1 from pg_database where datname = '$PG_DB'") == 1 ]]; }; then
      "$createdb" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -O "$PG_ROLE" "$PG_DB"
    fi
  elif psql=$(client psql); then
    "$psql" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d postgres -XAtq -v ON_ERROR_STOP=1 \
      -c "create database $PG_DB owner $PG_ROLE" 2>/dev/null ||
      "$psql" -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d "$PG_DB" -XAtqc 'select 1' >/dev/null
  else
    die "neither createdb nor psql found next to $BINDIR/pg_ctl or on PATH"
  fi

  local version
  version=$("$BINDIR/pg_ctl" --version | awk '{print $3}')
  log "PostgreSQL $version up: postgresql://$PG_ROLE@127.0.0.1:$port/$PG_DB dir=$DIR" \
    "user=${RUN_USER:-$(id -un)} bin=$BINDIR (stop: $0 stop $DIR)"
}

cmd_stop() {
  [[ -n ${1:-} ]] || usage
  set_dir "$1"
  local pgdata=$DIR/data
  [[ -f $pgdata/PG_VERSION ]] || { log "no cluster in $DIR, nothing to stop"; return 0; }
  BINDIR=$(find_bindir) || die "no pg_ctl found"
  # Run as whoever owns the cluster.
  if [[ $(id -u) -eq 0 ]]; then
    RUN_USER=$(stat -c %U "$pgdata")
    [[ $RUN_USER != root ]] || RUN_USER=
  fi
  if ! as_pg "$BINDIR/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
    log "no server running in $DIR"
    return 0
  fi
  as_pg "$BINDIR/pg_ctl" -D "$pgdata" -m fast -w -t 60 stop >/dev/null ||
    as_pg "$BINDIR/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null
  log "PostgreSQL in $DIR stopped"
}

cmd_status() {
  [[ -n ${1:-} ]] || usage
  set_dir "$1"
  [[ -f $DIR/data/PG_VERSION ]] || exit 3
  BINDIR=$(find_bindir) || die "no pg_ctl found"
  if [[ $(id -u) -eq 0 ]]; then
    RUN_USER=$(stat -c %U "$DIR/data")
    [[ $RUN_USER != root ]] || RUN_USER=
  fi
  as_pg "$BINDIR/pg_ctl" -D "$DIR/data" status
}

case ${1:-} in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) usage ;;
esac
