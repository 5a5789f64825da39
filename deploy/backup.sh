#!/usr/bin/env bash
# Back up and restore CareHub: the PostgreSQL database and the keys, with the latest signed
# audit checkpoint as a witness copy.
#
#   deploy/backup.sh backup DIR      write DIR/carehub-<UTC time>/ (database dump, keys, env,
#                                    checkpoint.json) and print its path
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
[[ $HUB_DATABASE_URL == postgresql* ]] || die "backup.sh backs up PostgreSQL; for SQLite copy \
the read-audit spools <database>-audit-spool/*.db FIRST and then the database, each with \
sqlite3 .backup (the other order can lose reads' audit records moved between the two copies)"
PG_URL=${HUB_DATABASE_URL/+psycopg/}   # libpq does not know SQLAlchemy's driver suffix

backup() {
  local root=$1 dir
  dir="$root/carehub-$(date -u +%Y%m%dT%H%M%SZ)"
  umask 077
  mkdir -p "$dir/keys"
  pg_dump --format=custom --no-owner --file="$dir/database.dump" "$PG_URL"
  cp -p "$HUB_AUDIT_KEY_FILE" "$dir/keys/audit-key.pem"
  "$HUB" audit public-key > "$dir/keys/audit-key.pub.pem"
  local i=0 f
  IFS=, read -ra trusted <<< "${HUB_AUDIT_TRUSTED_KEYS:-}"
  for f in "${trusted[@]}"; do
    [[ -n ${f// } ]] || continue
    cp -p "$f" "$dir/keys/trusted-$i.pub.pem"; i=$((i + 1))
  done
  "$HUB" audit checkpoint export > "$dir/checkpoint.json" 2>/dev/null \
    || echo '{}' > "$dir/checkpoint.json"   # a trail not sealed yet has no checkpoint
  (cd "$dir" && sha256sum database.dump keys/* checkpoint.json > SHA256SUMS)
  echo "$dir"
}

restore() {
  local dir=$1
  [[ -f $dir/database.dump && -f $dir/SHA256SUMS ]] || die "$dir is not a backup"
  (cd "$dir" && sha256sum --quiet -c SHA256SUMS) || die "$dir is damaged (checksums differ)"
  pg_restore --no-owner --exit-on-error --dbname="$PG_URL" "$dir/database.dump"
  if [[ -e $HUB_AUDIT_KEY_FILE ]]; then
    cmp -s "$dir/keys/audit-key.pem" "$HUB_AUDIT_KEY_FILE" \
      || die "$HUB_AUDIT_KEY_FILE exists and differs from the backup's key; move it away first"
  else
    install -m 0600 "$dir/keys/audit-key.pem" "$HUB_AUDIT_KEY_FILE"
  fi
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
