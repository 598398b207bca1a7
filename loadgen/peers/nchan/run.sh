#!/usr/bin/env bash
# Nchan peer: Debian's nginx + libnginx-mod-nchan in Redis mode (nchan_redis_storage_mode
# nostore: Redis carries the pub/sub, nothing is stored), one worker, in the foreground.
#
# usage: PORT=8080 REDIS_URL=redis://127.0.0.1:6379 [WORKDIR=/tmp/x] loadgen/peers/nchan/run.sh
#
#   GET  /sub/<channel>   WebSocket subscriber (the channel is in the path; frames carry the
#                         published body as is, no envelope)
#   POST /pub/<channel>   publisher (the request body is the message)
#
# Writes nginx.conf into WORKDIR (default: a new temp dir), prints "listening 127.0.0.1:PORT"
# once the port accepts connections, and stays nginx's process (exec), so its pid is the
# server's for CPU/RSS accounting.
set -euo pipefail
: "${PORT:?PORT is required}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
NGINX="${NGINX:-/usr/sbin/nginx}"
MODULE="${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}"
[[ -x "$NGINX" && -f "$MODULE" ]] || {
  echo "nchan: need $NGINX and $MODULE (loadgen/peers/install.sh installs libnginx-mod-nchan)" >&2
  exit 1
}
dir="${WORKDIR:-$(mktemp -d /tmp/nchan-peer.XXXXXX)}"
mkdir -p "$dir/tmp"
cat >"$dir/nginx.conf" <<CONF
load_module $MODULE;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 200000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 100000; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    # One keep-alive connection per publisher for the whole run (nginx closes after 1,000
    # requests by default).
    keepalive_requests 100000000;
    keepalive_timeout 3600s;
    client_body_buffer_size 64k;
    upstream redis_server {
        nchan_redis_server $REDIS_URL;
    }
    server {
        listen 127.0.0.1:$PORT backlog=65535;
        location ~ ^/sub/(.+)\$ {
            nchan_subscriber websocket;
            nchan_channel_id \$1;
            nchan_redis_pass redis_server;
            nchan_redis_storage_mode nostore;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/pub/(.+)\$ {
            nchan_publisher http;
            nchan_channel_id \$1;
            nchan_redis_pass redis_server;
            nchan_redis_storage_mode nostore;
        }
    }
}
CONF
"$NGINX" -t -q -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log" >&2
# Announce once the port accepts connections (in the background: exec keeps our pid).
(
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
      echo "listening 127.0.0.1:$PORT (nginx $("$NGINX" -v 2>&1 | cut -d/ -f2), nchan, redis $REDIS_URL, conf $dir/nginx.conf)"
      exit 0
    fi
    sleep 0.05
  done
  echo "nchan: port $PORT not open after 15 s" >&2
) &
exec "$NGINX" -c "$dir/nginx.conf" -p "$dir" -e "$dir/error.log"
