#!/usr/bin/env bash
# Bring the whole CareHub layout up on this machine and run the smoke test through TLS:
#
#   deploy/up.sh [DIR]        (KEEP=1 leaves everything running; stop with DIR/down.sh)
#
# 1. PostgreSQL: a server of its own in DIR/pg (scripts/pg.sh, loopback) running with
#    deploy/postgresql/carehub.conf (fsync and synchronous commit on, WAL archived to
#    DIR/pg/wal-archive), the durability a real install has;
# 2. the settings file DIR/carehub.env, made from deploy/carehub.env; `hub db upgrade`;
# 3. the two organisations of the shared story, each with a client key (hub client keygen/add);
# 4. the roles as separate processes, as the systemd units run them: four API processes
#    (`hub serve --roles api`), two for reads and two for writes at a lower CPU priority
#    (nice UP_WRITE_NICE, default 10, as carehub-api-writes@.service), an MLLP listener at
#    the same priority (carehub-mllp.service), a dispatcher, a scheduler and a sealer;
# 5. nginx with a self-signed certificate (made here with openssl) in front of the API
#    processes, rendered from deploy/nginx/carehub.conf (deploy/nginx/render.sh);
# 6. deploy/smoke.py: the shared story (../shared/examples 01-15) posted through HTTPS, the
#    certificate checked, each message seen to reach the write pool; an A01 from the PAS
#    simulator over MLLP, answered AA; then the sealer is given a moment and `hub audit
#    verify` must pass with every record sealed; a backup is taken and checked (backup.sh).
# Exits 0 when all of it passed. Needs python3, openssl and nginx (installed with apt-get if
# missing, as scripts/pg.sh does for PostgreSQL). Logs: DIR/log/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:-$(mktemp -d "${TMPDIR:-/tmp}/carehub-up.XXXXXX")}
mkdir -p "$DIR/log" "$DIR/keys" "$DIR/tls" "$DIR/nginx/tmp"
DIR=$(cd "$DIR" && pwd)
# mktemp makes DIR private (0700); the postgres user must pass through it to DIR/pg (its own,
# 0700). Pass, not list: the keys and the TLS key stay in directories of their own, private.
chmod 711 "$DIR"
chmod 700 "$DIR/keys" "$DIR/tls"
SHARED=${SHARED:-$ROOT/../shared}
log() { printf 'up.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

free_port() {
  python3 - "$1" <<'PY'
import socket, sys
for port in range(int(sys.argv[1]), 65000):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
PY
}

# --- the hub ------------------------------------------------------------------------------------
if [[ ! -x $ROOT/.venv/bin/hub ]]; then
  log "installing the hub into $ROOT/.venv"
  python3 -m venv "$ROOT/.venv"
  "$ROOT/.venv/bin/pip" install -q -e "$ROOT"
fi
HUB=$ROOT/.venv/bin/hub
VPY=$ROOT/.venv/bin/python
command -v openssl >/dev/null || die "openssl is missing"
if ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
  log "installing nginx (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PIDS=()
cleanup() {
  local rc=$?
  if [[ ${KEEP:-} == 1 && $rc == 0 ]]; then
    log "left running; stop with $DIR/down.sh"
    return
  fi
  bash "$DIR/down.sh" >/dev/null 2>&1 || true
  exit "$rc"
}
trap cleanup EXIT

# The first ports tried: UP_PG_PORT for PostgreSQL; UP_PORT for TLS, the API and plain HTTP
# ports following it (default 28443, 28081 and 28080). The defaults lie below Linux's usual
# ephemeral range (32768-60999, /proc/sys/net/ipv4/ip_local_port_range), from which outgoing
# connections take their ports, so that none takes one between its test here and its bind.
PG_PORT=$(free_port "${UP_PG_PORT:-26500}")
CAREHUB_PG_CONF=$ROOT/deploy/postgresql/carehub.conf \
  bash "$ROOT/scripts/pg.sh" start "$DIR/pg" "$PG_PORT" >"$DIR/log/pg.log" 2>&1 \
  || { tail -n 40 "$DIR/log/pg.log" >&2; die "PostgreSQL did not start ($DIR/log/pg.log)"; }
TLS_PORT=$(free_port "${UP_PORT:-28443}")
API_FROM=28081 HTTP_FROM=28080
[[ -z ${UP_PORT:-} ]] || { API_FROM=$((TLS_PORT + 1)); HTTP_FROM=$((TLS_PORT + 10)); }
API1=$(free_port "$API_FROM")
API2=$(free_port $((API1 + 1)))
WRITES1=$(free_port $((API2 + 1)))
WRITES2=$(free_port $((WRITES1 + 1)))
MLLP_PORT=$(free_port $((WRITES2 + 1)))
WRITE_NICE=${UP_WRITE_NICE:-10}

sed -e "s|^HUB_DATABASE_URL=.*|HUB_DATABASE_URL=postgresql+psycopg://carehub@127.0.0.1:$PG_PORT/carehub_test|" \
    -e "s|^HUB_BASE_URL=.*|HUB_BASE_URL=https://127.0.0.1:$TLS_PORT|" \
    -e "s|^HUB_AUDIT_KEY_FILE=.*|HUB_AUDIT_KEY_FILE=$DIR/keys/audit-key.pem|" \
    -e "s|^HUB_SEAL_INTERVAL=.*|HUB_SEAL_INTERVAL=0.5|" \
    "$ROOT/deploy/carehub.env" > "$DIR/carehub.env"
set -a
# shellcheck disable=SC1091
source "$DIR/carehub.env"
set +a
"$HUB" db upgrade >/dev/null

cat > "$DIR/down.sh" <<DOWN
#!/usr/bin/env bash
# Stop what $DIR/../up.sh started (its own processes, by pid).
[[ -f $DIR/nginx/nginx.pid ]] && kill "\$(cat $DIR/nginx/nginx.pid)" 2>/dev/null
for pid in \$(cat $DIR/pids 2>/dev/null); do kill -TERM "\$pid" 2>/dev/null; done
for _ in \$(seq 50); do
  alive=0
  for pid in \$(cat $DIR/pids 2>/dev/null); do kill -0 "\$pid" 2>/dev/null && alive=1; done
  (( alive )) || break
  sleep 0.2
done
for pid in \$(cat $DIR/pids 2>/dev/null); do kill -KILL "\$pid" 2>/dev/null; done
bash $ROOT/scripts/pg.sh stop $DIR/pg
exit 0
DOWN
chmod +x "$DIR/down.sh"
: > "$DIR/pids"

# --- organisations and their clients -----------------------------------------------------------
ORGNR=urn:oid:2.16.578.1.12.4.1.4.101
"$HUB" org add --id jaeren-dps --name "Jæren DPS" --kind mental-health-centre \
  --identifier "$ORGNR|983974791" >/dev/null
"$HUB" org add --id time-kommune --name "Time kommune" --kind municipality \
  --identifier "$ORGNR|964969590" \
  --identifier "https://register.geonorge.no/subregister/sosi-kodelister/kartverket/kommunenummer-alle|1121" \
  >/dev/null
echo "{" > "$DIR/clients.json"
sep=""
for org in jaeren-dps time-kommune; do
  "$HUB" client keygen --key "$DIR/keys/$org.key.pem" --jwks "$DIR/keys/$org.jwks.json" \
    --kid "$org-smoke" >/dev/null
  id=$("$HUB" client add --org "$org" --jwks "$DIR/keys/$org.jwks.json" --name "$org smoke" | tail -n 1)
  printf '%s"%s": {"client_id": "%s", "kid": "%s-smoke", "key_file": "%s"}\n' \
    "$sep" "$org" "$id" "$org" "$DIR/keys/$org.key.pem" >> "$DIR/clients.json"
  sep=","
done
echo "}" >> "$DIR/clients.json"

# --- the roles, as separate processes ------------------------------------------------------------
declare -A PID PORT
start() {  # name, hub command and args...; NICE=N: at that lower CPU priority
  local name=$1; shift
  setsid nice -n "${NICE:-0}" "$HUB" "$@" >"$DIR/log/$name.log" 2>&1 &
  echo $! >> "$DIR/pids"
  PIDS+=($!)
  PID[$name]=$!
}
listen() {  # name: (re)start the listener of that name on PORT[name]
  local name=$1
  case $name in
    mllp) NICE=$WRITE_NICE start mllp mllp --host 127.0.0.1 --port "${PORT[mllp]}" ;;  # carehub-mllp.service
    api-writes-*) NICE=$WRITE_NICE start "$name" serve --roles api --host 127.0.0.1 --port "${PORT[$name]}" ;;
    *) start "$name" serve --roles api --host 127.0.0.1 --port "${PORT[$name]}" ;;
  esac
}
answers() {  # name: its port takes a connection (MLLP) or answers /fhir/metadata (the API)
  if [[ $1 == mllp ]]; then
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT[mllp]}") 2>/dev/null
  else
    curl -fsS -o /dev/null "http://127.0.0.1:${PORT[$1]}/fhir/metadata" 2>/dev/null
  fi
}
failed() {  # name, why: the end of its log, then stop
  tail -n 40 "$DIR/log/$1.log" | sed "s/^/  $1.log: /" >&2
  die "$2 (logs: $DIR/log)"
}
PORT=([api-1]=$API1 [api-2]=$API2 [api-writes-1]=$WRITES1 [api-writes-2]=$WRITES2 [mllp]=$MLLP_PORT)
LISTENERS=(api-1 api-2 api-writes-1 api-writes-2 mllp)
for name in "${LISTENERS[@]}"; do listen "$name"; done
start dispatcher serve --roles dispatcher
start scheduler serve --roles scheduler
start sealer serve --roles sealer
# Eight processes start at once on what may be two busy cores: each listener gets until a
# deadline (UP_START_TIMEOUT seconds, default 180), and one that has exited fails at once with
# its log. Where the ports chosen above lie in the kernel's ephemeral range (UP_PORT, or a
# machine with a wider range), an outgoing connection of another process can take one between
# its test and its listener's bind: that listener is started again on another port.
began=$SECONDS
deadline=$((SECONDS + ${UP_START_TIMEOUT:-180}))
for name in "${LISTENERS[@]}"; do
  moved=0
  until answers "$name"; do
    if ! kill -0 "${PID[$name]}" 2>/dev/null; then
      if (( moved < 3 )) && grep -qiE 'address already in use|errno 98' "$DIR/log/$name.log"; then
        moved=$((moved + 1))
        log "$name: port ${PORT[$name]} was taken before it could bind it; trying another"
        PORT[$name]=$(free_port $((PORT[$name] + 100)))
        listen "$name"
        continue
      fi
      failed "$name" "$name exited while starting on port ${PORT[$name]}"
    fi
    (( SECONDS < deadline )) \
      || failed "$name" "$name did not answer on port ${PORT[$name]} within $((SECONDS - began)) s"
    sleep 0.2
  done
done
log "the listeners answered $((SECONDS - began)) s after they were started"
API1=${PORT[api-1]} API2=${PORT[api-2]} WRITES1=${PORT[api-writes-1]} WRITES2=${PORT[api-writes-2]}
MLLP_PORT=${PORT[mllp]}
WRITE_PIDS=("${PID[api-writes-1]}" "${PID[api-writes-2]}" "${PID[mllp]}")
# Where the kernel groups processes by session (autogroups, sched(7)), setsid gave each its own
# group, and a group's nice, not its process's, weighs it against the others: give the write
# pool's groups theirs, and the MLLP listener's (the processes answer, so setsid has run).
# Under systemd each unit is a cgroup of its own and CPUWeight= does this
# (carehub-api-writes@.service, carehub-mllp.service).
for pid in "${WRITE_PIDS[@]}"; do
  [[ -w /proc/$pid/autogroup ]] && echo "$WRITE_NICE" > "/proc/$pid/autogroup" 2>/dev/null || true
  # its nice: field 19 of /proc/PID/stat (17th after the name in parentheses)
  [[ $(sed 's/.*) //' "/proc/$pid/stat" | cut -d' ' -f17) == "$WRITE_NICE" ]] \
    || die "the write pool's process $pid does not run at nice $WRITE_NICE"
done

# --- TLS in front: nginx with a self-signed certificate ------------------------------------------
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$DIR/tls/carehub.key" -out "$DIR/tls/carehub.crt" 2>/dev/null
chmod 600 "$DIR/tls/carehub.key"
bash "$ROOT/deploy/nginx/render.sh" "$DIR" "$TLS_PORT" "$(free_port "$HTTP_FROM")" \
  "$API1" "$API2" "$WRITES1" "$WRITES2"
"$NGINX" -t -q -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" || die "nginx config ($DIR/nginx/nginx.conf)"
"$NGINX" -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx"
log "layout up: https://127.0.0.1:$TLS_PORT -> API reads :$API1 :$API2, writes :$WRITES1 :$WRITES2, MLLP :$MLLP_PORT (nice $WRITE_NICE); dispatcher, scheduler, sealer; PostgreSQL :$PG_PORT"

# --- the smoke test --------------------------------------------------------------------------------
"$VPY" "$ROOT/deploy/smoke.py" --base "https://127.0.0.1:$TLS_PORT" --cafile "$DIR/tls/carehub.crt" \
  --clients "$DIR/clients.json" --examples "$SHARED/examples"
# the story's messages went to the write pool, and nothing else did (the API processes' access
# logs): nginx's routing with the hub itself behind it
messages_w=$(cat "$DIR"/log/api-writes-*.log | grep -c 'POST /fhir/\$process-message' || true)
messages_r=$(cat "$DIR"/log/api-[12].log | grep -c 'POST /fhir/\$process-message' || true)
reads_w=$(cat "$DIR"/log/api-writes-*.log | grep -c '"GET /fhir/Patient' || true)
(( messages_w > 0 && messages_r == 0 && reads_w == 0 )) \
  || die "routing: $messages_w messages to the write pool, $messages_r to the read pool, $reads_w reads to the write pool"
log "routing: the story's $messages_w messages went to the write pool, its reads to the read pool"
# the centre's PAS admits the story's patient again, over MLLP (adapters/mllp/simulator.py)
"$VPY" - "$MLLP_PORT" <<'PY' || die "MLLP: the A01 was not accepted ($DIR/log/mllp.log)"
import sys
from datetime import UTC, datetime

from adapters.mllp.simulator import Pas, Stay, ack_code, adt

stay = Stay(facility="983974791", fnr="13116900216", visit="UP-1", kommunenummer="1121",
            admitted=datetime.now(UTC))
with Pas("127.0.0.1", int(sys.argv[1])) as pas:
    code = ack_code(pas.send(adt(stay, "A01", "UP-A01-1")))
print(f"up.sh: MLLP: A01 answered {code}", file=sys.stderr)
sys.exit(0 if code == "AA" else 1)
PY
waiting=1
for _ in $(seq 60); do
  detail=$("$HUB" audit verify 2>&1 >/dev/null || true)
  [[ $detail == *", 0 waiting for the sealer"* ]] && { waiting=0; break; }
  sleep 0.5
done
(( waiting == 0 )) || die "the sealer did not seal the story's records: $detail"
"$HUB" audit verify
log "audit: $detail"
BACKUP=$(HUB=$HUB bash "$ROOT/deploy/backup.sh" backup "$DIR/backups")
log "backup: $BACKUP"
"$VPY" - "$PG_PORT" <<'PY'
import sys
from sqlalchemy import create_engine, text
engine = create_engine(f"postgresql+psycopg://carehub@127.0.0.1:{sys.argv[1]}/carehub_test",
                       isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    conn.execute(text("CREATE DATABASE carehub_restored"))
PY
restored=$(HUB_DATABASE_URL=${HUB_DATABASE_URL%/*}/carehub_restored HUB=$HUB \
           bash "$ROOT/deploy/backup.sh" restore "$BACKUP")
log "restore into carehub_restored: $restored"
for name in "${!PID[@]}"; do
  kill -0 "${PID[$name]}" 2>/dev/null || failed "$name" "the role process $name (${PID[$name]}) died"
done
log "smoke test passed"
