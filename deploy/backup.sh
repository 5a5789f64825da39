#!/usr/bin/env bash
# Back up and restore CareHub: the database (PostgreSQL or SQLite) and the keys, with the
# latest signed audit checkpoint as a witness copy.
#
#   deploy/backup.sh backup DIR      write DIR/carehub-<UTC time>/ (checkpoint.json first,
#                                    then the database dump and keys) and print its path
#   deploy/backup.sh restore BACKUP  restore a backup into the (empty) database of
#                                    HUB_DATABASE_URL and the key file of HUB_AUDIT_KEY_FILE,
#                                    then check the audit trail against the backup's checkpoint
#
# Reads HUB_DATABASE_URL, HUB_AUDIT_KEY_FILE and HUB_AUDIT_TRUSTED_KEYS from the environment
# (systemd: EnvironmentFile=/etc/carehub/carehub.env). HUB is the hub command
# (default /opt/carehub/.venv/bin/hub, else `hub` on PATH). pg_dump/pg_restore must match the
# server's major version. The dump is a consistent snapshot (pg_dump runs in one
# transaction), so the hub may keep running while it is taken.
#
# SQLite (`hub demo`, the embedded default): the database file and its read-audit spools
# (<database>-audit-spool/*.db, the audit records of reads not yet moved into the trail) are
# copied with SQLite's online backup, the hub's Python beside HUB (PY to choose another), so
# the hub may keep running too. The spools are copied first and the database after: a record
# moved in between is then in both copies, and the database's mark of what was moved makes
# the restored hub drop the spool's copy instead of moving it twice (the other order would
# lose it). Restore wants the database file absent or empty.
#
# Keys: the audit key signs checkpoints; without it the trail still verifies (its public key
# is in the backup too) but nothing new can be sealed with the same key. Keep backups where
# the database's operators cannot rewrite them: the checkpoint.json in each one is what shows
# a later rewrite of the trail (`hub audit verify --witness`).
set -euo pipefail

die() { printf 'backup.sh: %s\n' "$*" >&2; exit 1; }
HUB=${HUB:-/opt/carehub/.venv/bin/hub}
[[ -x $HUB ]] || HUB=$(command -v hub) || die "no hub command (set HUB)"
: "${HUB_DATABASE_URL:?HUB_DATABASE_URL is not set}"
: "${HUB_AUDIT_KEY_FILE:?HUB_AUDIT_KEY_FILE is not set}"
case $HUB_DATABASE_URL in
  postgresql*) KIND=postgresql ;;
  sqlite*) KIND=sqlite ;;
  *) die "HUB_DATABASE_URL is neither PostgreSQL nor SQLite" ;;
esac
PG_URL=${HUB_DATABASE_URL/+psycopg/}   # libpq does not know SQLAlchemy's driver suffix
PY=${PY:-$(dirname "$HUB")/python}
[[ $KIND == postgresql || -x $PY ]] || PY=$(command -v python3) || die "no python (set PY)"

# sqlite_copy backup OUT | sqlite_copy restore IN: the SQLite database and its read-audit
# spools, spools first (see the top of this file), each with SQLite's online backup.
sqlite_copy() {
  "$PY" - "$1" "$2" <<'PYTHON'
import os
import sqlite3
import sys

from sqlalchemy.engine import make_url

mode, there = sys.argv[1], sys.argv[2]
database = make_url(os.environ["HUB_DATABASE_URL"]).database
if not database or database == ":memory:":
    sys.exit("backup.sh: HUB_DATABASE_URL names no SQLite database file")
spools = f"{os.path.abspath(database)}-audit-spool"


def copy(source: str, target: str) -> None:
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()


if mode == "backup":
    os.makedirs(os.path.join(there, "spool"))
    if os.path.isdir(spools):
        for name in sorted(os.listdir(spools)):
            if name.endswith(".db"):
                copy(os.path.join(spools, name), os.path.join(there, "spool", name))
    copy(database, os.path.join(there, "database.sqlite"))
else:
    if os.path.exists(database) and os.path.getsize(database) > 0:
        sys.exit(f"backup.sh: {database} exists and is not empty; move it away first")
    os.makedirs(spools, exist_ok=True)
    for name in sorted(os.listdir(os.path.join(there, "spool"))):
        copy(os.path.join(there, "spool", name), os.path.join(spools, name))
    copy(os.path.join(there, "database.sqlite"), database)
PYTHON
}

backup() {
  local root=$1 dir
  dir="$root/carehub-$(date -u +%Y%m%dT%H%M%SZ)"
  umask 077
  mkdir -p "$dir/keys"
  # The checkpoint first, the database after: the trail only grows, so the copy holds every
  # record the checkpoint signed. Taken after the copy, a checkpoint the sealer signed in
  # between would be newer than the data, and the restore's verify would call the copy's
  # trail cut ("truncated tail").
  "$HUB" audit checkpoint export > "$dir/checkpoint.json" 2>/dev/null \
    || echo '{}' > "$dir/checkpoint.json"   # a trail not sealed yet has no checkpoint
  local data=database.dump
  if [[ $KIND == sqlite ]]; then
    sqlite_copy backup "$dir"; data="database.sqlite spool"
  else
    pg_dump --format=custom --no-owner --file="$dir/database.dump" "$PG_URL"
  fi
  cp -p "$HUB_AUDIT_KEY_FILE" "$dir/keys/audit-key.pem"
  "$HUB" audit public-key > "$dir/keys/audit-key.pub.pem"
  local i=0 f
  IFS=, read -ra trusted <<< "${HUB_AUDIT_TRUSTED_KEYS:-}"
  for f in "${trusted[@]}"; do
    [[ -n ${f// } ]] || continue
    cp -p "$f" "$dir/keys/trusted-$i.pub.pem"; i=$((i + 1))
  done
  # shellcheck disable=SC2086 # $data: the database's file and, for SQLite, its spools
  (cd "$dir" && find $data keys checkpoint.json -type f -print0 | sort -z \
    | xargs -0 sha256sum > SHA256SUMS)
  echo "$dir"
}

restore() {
  local dir=$1
  local data=database.dump
  [[ $KIND == sqlite ]] && data=database.sqlite
  [[ -f $dir/$data && -f $dir/SHA256SUMS ]] || die "$dir is not a $KIND backup"
  (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || die "$dir is damaged (checksums differ)"
  # Every refusal before anything is written: a refused restore leaves the target as it was.
  if [[ -e $HUB_AUDIT_KEY_FILE ]]; then
    cmp -s "$dir/keys/audit-key.pem" "$HUB_AUDIT_KEY_FILE" \
      || die "$HUB_AUDIT_KEY_FILE exists and differs from the backup's key; move it away first"
  fi
  umask 077   # the restored database and spools hold health data: the owner's alone
  if [[ $KIND == sqlite ]]; then
    sqlite_copy restore "$dir"
  else
    pg_restore --no-owner --exit-on-error --dbname="$PG_URL" "$dir/database.dump"
  fi
  [[ -e $HUB_AUDIT_KEY_FILE ]] || install -m 0600 "$dir/keys/audit-key.pem" "$HUB_AUDIT_KEY_FILE"
  local extra=() f
  for f in "$dir"/keys/trusted-*.pub.pem; do [[ -e $f ]] && extra+=(--public-key "$f"); done
  if [[ $(cat "$dir/checkpoint.json") != '{}' ]]; then
    extra+=(--witness "$dir/checkpoint.json")
  fi
  "$HUB" audit verify "${extra[@]}"
}

case ${1:-} in
  backup) [[ $# -eq 2 ]] || die "usage: backup.sh backup DIR"; backup "$2" ;;
  restore) [[ $# -eq 2 ]] || die "usage: backup.sh restore BACKUP_DIR"; restore "$2" ;;
  *) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0" >&2; exit 2 ;;
esac
