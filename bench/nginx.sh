# bench/nginx.sh — nginx as the benchmarks' ceiling on this machine, sourced by bench/*.sh:
#   nginx_start DIR PORT 'LOCATION BODY'   starts one worker (keep-alive, no access log) serving
#                                          the location block on 127.0.0.1:PORT, state in DIR;
#                                          sets nginx_pid, waits until it answers
#   nginx_stop                             stops it (also safe when it never started)
nginx_pid=
nginx_start() {
  local dir=$1 port=$2 location=$3
  mkdir -p "$dir/logs"
  chmod 755 "$dir" # nginx workers run as nobody
  cat >"$dir/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body; proxy_temp_path $dir/proxy; fastcgi_temp_path $dir/fcgi;
  uwsgi_temp_path $dir/uwsgi; scgi_temp_path $dir/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 60s;
  types { application/json json; }
  server {
    listen 127.0.0.1:$port;
    $location
  }
}
NGINX
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
  nginx_pid=$!
  for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "nginx did not start (see $dir/logs/error.log)" >&2
  return 1
}
nginx_stop() {
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  nginx_pid=
}
