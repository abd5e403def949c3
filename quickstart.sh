#!/usr/bin/env bash
# Cairn in one command, on a fresh Debian machine, as root:
#   installs the system packages and the virtual environment (.venv), creates a server data
#   dir, starts cairn-server on 127.0.0.1:8470 in the background, creates a user (password
#   printed once and kept in .quickstart/password), logs a device in and mounts the drive.
# Run it again: it reuses what exists (server, user, login, mount).
#   ./quickstart.sh          set up and run
#   ./quickstart.sh stop     unmount the drive and stop the server
# Settings (environment): CAIRN_QUICKSTART_DIR (default ./.quickstart), CAIRN_MOUNT
# (default ~/Cairn), CAIRN_PORT (default 8470), CAIRN_USER (default: your login name).
set -euo pipefail
cd "$(dirname "$0")"

QS=${CAIRN_QUICKSTART_DIR:-$PWD/.quickstart}
DATA=$QS/server
STATE=$QS/drive
PIDFILE=$QS/server.pid
LOG=$QS/server.log
MNT=${CAIRN_MOUNT:-$HOME/Cairn}
PORT=${CAIRN_PORT:-8470}
URL=http://127.0.0.1:$PORT
USER_NAME=${CAIRN_USER:-${SUDO_USER:-$(id -un)}}

die() { echo "quickstart: $*" >&2; exit 1; }

server_running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

healthy() { curl -fsS --max-time 2 "$URL/healthz" >/dev/null 2>&1; }

if [ "${1:-}" = stop ]; then
  [ -x .venv/bin/cairn ] && export PATH="$PWD/.venv/bin:$PATH"
  if mountpoint -q "$MNT" 2>/dev/null; then
    cairn unmount "$MNT" --state "$STATE" || fusermount3 -u -z "$MNT" || true
  fi
  if server_running; then
    pid=$(cat "$PIDFILE"); kill "$pid"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$PIDFILE"
    echo "stopped the server (pid $pid)"
  fi
  exit 0
fi
[ $# -eq 0 ] || die "usage: ./quickstart.sh [stop]"

. packaging/dev-env.sh
if [ "$(id -u)" = 0 ]; then
  cairn_system_packages fuse3 libfuse3-dev pkg-config gcc python3-dev python3-venv curl
fi
command -v fusermount3 >/dev/null || die "fusermount3 is missing (apt-get install fuse3, as root)"
cairn_venv

mkdir -p "$QS" && chmod 700 "$QS"

# 1. server data dir and process
if [ ! -f "$QS/server.initialized" ]; then
  rm -rf "$DATA"  # left half-made by an init that failed in an earlier run
  echo "== creating server data dir $DATA"
  cairn-server init "$DATA" >"$QS/init.log" 2>&1 || die "cairn-server init failed: $(tail -1 "$QS/init.log")"
  touch "$QS/server.initialized"
fi
if server_running && healthy; then
  echo "== server already running (pid $(cat "$PIDFILE")) at $URL"
else
  healthy && die "something else answers on $URL; set CAIRN_PORT"
  echo "== starting cairn-server at $URL (log: $LOG)"
  nohup cairn-server run --data "$DATA" --listen "127.0.0.1:$PORT" >>"$LOG" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 300); do
    healthy && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || die "cairn-server exited: $(tail -1 "$LOG")"
    sleep 0.1
  done
  healthy || die "cairn-server did not answer within 30 s: $(tail -1 "$LOG")"
fi

# 2. user (password generated once, kept 0600)
NEW_PASSWORD=""
if [ ! -f "$QS/password" ]; then
  pw=$(python3 -c 'import secrets; print(secrets.token_urlsafe(15))')
  printf '%s\n' "$pw" | cairn-server user add "$USER_NAME" --password-stdin --data "$DATA" >"$QS/user.log" 2>&1 \
    || die "cannot create user $USER_NAME: $(tail -1 "$QS/user.log") (set CAIRN_USER, or remove $DATA)"
  (umask 077; printf '%s\n' "$pw" >"$QS/password")
  NEW_PASSWORD=$pw
  echo "== created user $USER_NAME"
fi

# 3. device login
if [ ! -f "$STATE/token" ]; then
  cairn login "$URL" --user "$USER_NAME" --password-stdin --device "$(hostname)" --state "$STATE" \
    <"$QS/password" || die "cairn login failed"
fi

# 4. mount
mkdir -p "$MNT"
if mountpoint -q "$MNT"; then
  echo "== drive already mounted at $MNT"
else
  cairn mount "$MNT" --state "$STATE" || die "cairn mount failed (log: $STATE/mount.log)"
fi

cat <<INFO

Cairn is running.
  drive:     $MNT   (put files here)
  server:    $URL   (data: $DATA, log: $LOG)
  user:      $USER_NAME
INFO
if [ -n "$NEW_PASSWORD" ]; then
  echo "  password:  $NEW_PASSWORD   (shown once; also in $QS/password)"
else
  echo "  password:  in $QS/password"
fi
cat <<INFO
  status:    $PWD/.venv/bin/cairn status --state $STATE
  stop:      ./quickstart.sh stop
INFO
