#!/usr/bin/env bash
# Render deploy/nginx/carehub.conf for an nginx of its own, run from DIR (no root, no
# /etc/nginx): deploy/up.sh and tests/deploy use it.
#
#   deploy/nginx/render.sh DIR TLS_PORT HTTP_PORT READ1 READ2 WRITE1 WRITE2
#
# Writes DIR/nginx/carehub.conf (the site: 127.0.0.1:TLS_PORT with DIR/tls/carehub.crt and
# .key, HTTP_PORT redirecting to it; the read pool on ports READ1 READ2, the write pool on
# WRITE1 WRITE2) and DIR/nginx/nginx.conf (pid, logs in DIR/log, temporary files in
# DIR/nginx/tmp). Start: nginx -c DIR/nginx/nginx.conf -p DIR/nginx
set -euo pipefail
(( $# == 7 )) || { echo "usage: $0 DIR TLS_PORT HTTP_PORT READ1 READ2 WRITE1 WRITE2" >&2; exit 2; }
DIR=$1 TLS_PORT=$2 HTTP_PORT=$3
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mkdir -p "$DIR/nginx/tmp" "$DIR/log"
sed -e "s|127.0.0.1:8081|127.0.0.1:$4|; s|127.0.0.1:8082|127.0.0.1:$5|" \
    -e "s|127.0.0.1:8083|127.0.0.1:$6|; s|127.0.0.1:8084|127.0.0.1:$7|" \
    -e "s|listen 443 |listen 127.0.0.1:$TLS_PORT |; s|listen 80;|listen 127.0.0.1:$HTTP_PORT;|" \
    -e "s|server_name carehub.example.no;|server_name 127.0.0.1 localhost;|" \
    -e "s|/etc/carehub/tls/|$DIR/tls/|" \
    "$HERE/carehub.conf" > "$DIR/nginx/carehub.conf"
{
  [[ $(id -u) == 0 ]] && echo "user root;"
  cat <<NGINX
worker_processes 2;
pid $DIR/nginx/nginx.pid;
error_log $DIR/log/nginx-error.log warn;
events { worker_connections 256; }
http {
  access_log $DIR/log/nginx-access.log;
  client_body_temp_path $DIR/nginx/tmp/body;
  proxy_temp_path $DIR/nginx/tmp/proxy;
  fastcgi_temp_path $DIR/nginx/tmp/fastcgi;
  uwsgi_temp_path $DIR/nginx/tmp/uwsgi;
  scgi_temp_path $DIR/nginx/tmp/scgi;
  include $DIR/nginx/carehub.conf;
}
NGINX
} > "$DIR/nginx/nginx.conf"
