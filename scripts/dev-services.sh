#!/usr/bin/env bash
# dev-services.sh - install and run the real services edgepack's slow tests use:
#   docker       dockerd (host network only) + qemu binfmt for arm64/arm containers
#   registry     CNCF distribution registry on 127.0.0.1:5000 (no auth, deletes enabled)
#   mqtt         mosquitto on 127.0.0.1:1883 (plain) and 127.0.0.1:8883 (TLS, own CA)
#   base-images  127.0.0.1:5000/library/python:3.11-slim, a linux/amd64 + linux/arm64
#                index built from debootstrap root filesystems (nothing is pulled); also saved
#                once as an OCI layout in ${EDGEPACK_CACHE:-/var/cache/edgepack}/base-oci (tag
#                3.11-slim): `edgepack quickstart` builds on it with no registry
#   gateway-api  node + npm, and the npm package @kubernetes-models/gateway-api (MIT) in
#                ${EDGEPACK_CACHE:-/var/cache/edgepack}/node: the tests validate generated
#                HTTPRoutes with it (Gateway API's published v1 schema)
#
# Usage: scripts/dev-services.sh [start [SERVICE] | stop [SERVICE] | status | env | help]
#
# Idempotent: a second `start` finds everything up and returns in a second or two.
# Must run as root (apt-get, dockerd, mount). State, logs and pid files live in
# ${EDGEPACK_DEV_DIR:-/var/lib/edgepack-dev}; debootstrap tarballs are cached in
# ${EDGEPACK_CACHE:-/var/cache/edgepack}/rootfs, npm packages in .../node. Tests read $EDGEPACK_DEV_DIR/services.env.
set -euo pipefail

SCRIPT_PATH="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)/$(basename -- "${BASH_SOURCE[0]}")"
STATE_DIR="${EDGEPACK_DEV_DIR:-/var/lib/edgepack-dev}"
CACHE_DIR="${EDGEPACK_CACHE:-/var/cache/edgepack}"
DEBIAN_MIRROR="${EDGEPACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
# Bump when the root filesystem recipe changes: cached tarballs with another number are ignored.
ROOTFS_RECIPE=1
ROOTFS_INCLUDE=python3,python3-venv,python-is-python3,ca-certificates

REGISTRY=127.0.0.1:5000
BASE_REPO="$REGISTRY/library/python"
BASE_TAG=3.11-slim
BASE_IMAGE="$BASE_REPO:$BASE_TAG"
BASE_ARCHES=(amd64 arm64)
MQTT_HOST=127.0.0.1
MQTT_PORT=1883
MQTT_TLS_PORT=8883
GATEWAY_API_PACKAGE=@kubernetes-models/gateway-api
GATEWAY_API_VERSION=2.0.0

LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
ENV_FILE="$STATE_DIR/services.env"
MQTT_DIR="$STATE_DIR/mqtt"
CERT_DIR="$MQTT_DIR/certs"
DRIVER_FILE="$STATE_DIR/docker-storage-driver"
ROOTFS_CACHE="$CACHE_DIR/rootfs"
NODE_DIR="$CACHE_DIR/node"
BASE_OCI="$CACHE_DIR/base-oci"

PACKAGES=(docker.io debootstrap qemu-user-static binfmt-support skopeo docker-registry
  mosquitto mosquitto-clients openssl curl)
SERVICES=(docker registry mqtt base-images gateway-api)

export DEBIAN_FRONTEND=noninteractive
# Everything here talks to 127.0.0.1 or the Debian mirror; never send loopback through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"

# ----------------------------------------------------------------------------- output
say() { printf 'dev-services: %s\n' "$*"; }
warn() { printf 'dev-services: warning: %s\n' "$*" >&2; }
# die MESSAGE [LOGFILE]: print the error (and the log's tail) and exit 1.
die() {
  printf 'dev-services: error: %s\n' "$1" >&2
  if [[ -n "${2:-}" && -s "${2:-}" ]]; then
    printf 'dev-services: last lines of %s:\n' "$2" >&2
    tail -n 20 -- "$2" | sed 's/^/    /' >&2
  fi
  exit 1
}
# step NAME MESSAGE START_SECONDS: one line per step, with its duration.
step() { say "$(printf '%-12s %s (%ds)' "$1" "$2" "$((SECONDS - $3))")"; }

need_root() { [[ $EUID -eq 0 ]] || die "run as root (e.g. sudo $SCRIPT_PATH ${*:-start})"; }

setup_dirs() {
  mkdir -p "$STATE_DIR" "$LOG_DIR" "$RUN_DIR" "$ROOTFS_CACHE"
  chmod 755 "$STATE_DIR"
}

# Serialise concurrent invocations (e.g. parallel test workers restarting mqtt).
take_lock() {
  exec 9>"$STATE_DIR/.lock"
  flock -w 1800 9 || die "another dev-services.sh holds $STATE_DIR/.lock"
}

# ----------------------------------------------------------------------------- processes
# launch NAME CMD...: start CMD as a daemon in its own session, log to $LOG_DIR/NAME.log,
# pid to $RUN_DIR/NAME.pid. Inherited descriptors (the lock, a caller's pipes) are closed
# so the daemon holds neither the lock nor the caller's output open.
launch() {
  local name=$1 log="$LOG_DIR/$1.log"
  shift
  if [[ -f $log ]] && (($(stat -c %s "$log") > 50 * 1024 * 1024)); then mv -f "$log" "$log.1"; fi
  printf '\n===== %s start: %s\n' "$(date -u +%FT%TZ)" "$*" >>"$log"
  (
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    # A background child of a non-interactive shell is never a process-group leader, so
    # setsid execs in place and $! is the daemon's own pid.
    exec setsid "$@" </dev/null >>"$log" 2>&1
  ) &
  echo "$!" >"$RUN_DIR/$name.pid"
}

# pid_of NAME EXE MARKER: the pid of our daemon NAME, from its pid file, or else the
# process running EXE whose command line contains MARKER (a lost or stale pid file).
pid_of() {
  local name=$1 exe=$2 marker=$3 pid p
  if [[ -s "$RUN_DIR/$name.pid" ]]; then
    pid=$(<"$RUN_DIR/$name.pid")
    if [[ $pid =~ ^[0-9]+$ && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]]; then
      echo "$pid"
      return 0
    fi
  fi
  for p in /proc/[0-9]*; do
    [[ "$(readlink "$p/exe" 2>/dev/null)" == "$exe" ]] || continue
    if tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "$marker"; then
      echo "${p#/proc/}" >"$RUN_DIR/$name.pid"
      echo "${p#/proc/}"
      return 0
    fi
  done
  rm -f "$RUN_DIR/$name.pid"
  return 1
}

# alive PID: the process exists and is not a zombie (an init that is slow to reap them
# leaves /proc/PID behind after the daemon has exited).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# stop_daemon NAME EXE MARKER TIMEOUT: SIGTERM, wait, then SIGKILL.
stop_daemon() {
  local name=$1 exe=$2 marker=$3 timeout=$4 pid deadline
  pid=$(pid_of "$name" "$exe" "$marker") || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  if alive "$pid"; then
    warn "$name (pid $pid) ignored SIGTERM for ${timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
  fi
  rm -f "$RUN_DIR/$name.pid"
}

# wait_ready NAME EXE MARKER TIMEOUT CHECK...: poll CHECK until it succeeds; fail early if
# the daemon exits, and name its log on failure.
wait_ready() {
  local name=$1 exe=$2 marker=$3 timeout=$4 deadline
  shift 4
  deadline=$((SECONDS + timeout))
  until "$@"; do
    pid_of "$name" "$exe" "$marker" >/dev/null ||
      die "$name exited during start-up; see $LOG_DIR/$name.log" "$LOG_DIR/$name.log"
    ((SECONDS < deadline)) ||
      die "$name did not answer within ${timeout}s; see $LOG_DIR/$name.log" "$LOG_DIR/$name.log"
    sleep 0.2
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ----------------------------------------------------------------------------- packages
packages_missing() {
  local p status
  for p in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    [[ $status == "install ok installed" ]] || printf '%s\n' "$p"
  done
}

ensure_packages() {
  local t=$SECONDS log="$LOG_DIR/apt.log" missing policy=/usr/sbin/policy-rc.d made_policy=0
  missing=$(packages_missing | paste -sd ' ')
  if [[ -z $missing ]]; then
    return 0
  fi
  # The services are started by this script, never by the packages' init scripts.
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
  fi
  {
    apt-get update -q || warn "apt-get update reported errors (continuing; see $log)"
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 "${PACKAGES[@]}"
  } </dev/null >>"$log" 2>&1 || {
    ((made_policy)) && rm -f "$policy"
    die "apt-get install failed; see $log" "$log"
  }
  ((made_policy)) && rm -f "$policy"
  step packages "installed $missing" "$t"
}

# ----------------------------------------------------------------------------- docker
DOCKERD=/usr/sbin/dockerd
DOCKERD_MARKER="--exec-root=/var/run/docker"

docker_up() { timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

binfmt_up() {
  local f
  for f in qemu-aarch64 qemu-arm; do
    [[ "$(head -n1 "/proc/sys/fs/binfmt_misc/$f" 2>/dev/null)" == enabled ]] || return 1
  done
}

ensure_binfmt() {
  local t=$SECONDS f log="$LOG_DIR/binfmt.log"
  binfmt_up && return 0
  if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc >>"$log" 2>&1 ||
      die "cannot mount binfmt_misc on /proc/sys/fs/binfmt_misc; see $log" "$log"
  fi
  for f in qemu-aarch64 qemu-arm; do
    update-binfmts --enable "$f" >>"$log" 2>&1 || die "update-binfmts --enable $f failed; see $log" "$log"
  done
  binfmt_up || die "qemu binfmt handlers are not enabled; see $log" "$log"
  # flag F: the kernel opens the interpreter at registration, images need no qemu copy.
  grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
    warn "qemu-aarch64 binfmt lacks flag F: arm64 containers may not start"
  step binfmt "qemu-aarch64 and qemu-arm enabled" "$t"
}

current_driver() { timeout 10 docker info --format '{{.Driver}}' 2>/dev/null || true; }

start_dockerd() { # DRIVER
  launch docker "$DOCKERD" --iptables=false --ip6tables=false --bridge=none \
    --storage-driver="$1" --insecure-registry="$REGISTRY" "$DOCKERD_MARKER"
  wait_ready docker "$DOCKERD" "$DOCKERD_MARKER" 90 docker_up
}

# A container must actually run with the chosen storage driver. The probe image holds
# only the static tini that docker.io ships, so it needs no base image and no network.
docker_probe() {
  local ctx log="$LOG_DIR/docker.log"
  ctx=$(mktemp -d)
  cp /usr/bin/tini-static "$ctx/tini"
  printf 'FROM scratch\nCOPY tini /tini\nENTRYPOINT ["/tini", "--version"]\n' >"$ctx/Dockerfile"
  local rc=0
  {
    DOCKER_BUILDKIT=0 docker build --force-rm -q -t edgepack-dev-probe:latest "$ctx" &&
      docker run --rm --network host edgepack-dev-probe:latest
  } >>"$log" 2>&1 || rc=$?
  rm -rf "$ctx"
  return "$rc"
}

start_docker() {
  local t=$SECONDS driver pid
  ensure_binfmt
  if docker_up; then
    driver=$(current_driver)
    echo "$driver" >"$DRIVER_FILE"
    return 0
  fi
  # Half up: a dockerd of ours that does not answer, or stale pid files from a crash.
  stop_daemon docker "$DOCKERD" "$DOCKERD_MARKER" 30
  if [[ -s /var/run/docker.pid ]]; then
    pid=$(</var/run/docker.pid)
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$DOCKERD" ]] ||
      rm -f /var/run/docker.pid
  fi
  driver=${EDGEPACK_DOCKER_STORAGE_DRIVER:-}
  [[ -n $driver ]] || driver=$(cat "$DRIVER_FILE" 2>/dev/null || true)
  if [[ -n $driver ]]; then
    start_dockerd "$driver"
  else
    # overlay2 is much faster than vfs; keep it only if dockerd starts and a container runs.
    driver=overlay2
    if ! (start_dockerd overlay2) >/dev/null 2>&1 || ! docker_probe; then
      say "docker       overlay2 unusable here; falling back to vfs (see $LOG_DIR/docker.log)"
      stop_daemon docker "$DOCKERD" "$DOCKERD_MARKER" 30
      driver=vfs
      start_dockerd vfs
      docker_probe || die "a container cannot run under dockerd (vfs); see $LOG_DIR/docker.log" \
        "$LOG_DIR/docker.log"
    fi
  fi
  echo "$driver" >"$DRIVER_FILE"
  docker info --format '{{json .RegistryConfig.InsecureRegistryCIDRs}}' 2>/dev/null | grep -q '127.0.0.0/8' ||
    warn "dockerd does not list 127.0.0.0/8 as an insecure registry range"
  step docker "dockerd started (storage driver $driver)" "$t"
}

stop_docker() {
  local t=$SECONDS
  pid_of docker "$DOCKERD" "$DOCKERD_MARKER" >/dev/null || {
    docker_up && warn "a dockerd not started by this script is running; leaving it alone"
    return 0
  }
  stop_daemon docker "$DOCKERD" "$DOCKERD_MARKER" 60
  step docker "stopped" "$t"
}

# ----------------------------------------------------------------------------- registry
REGISTRY_BIN=/usr/bin/docker-registry
REGISTRY_CONF="$STATE_DIR/registry/config.yml"

registry_up() {
  [[ "$(curl -s --noproxy '*' --max-time 3 -o /dev/null -w '%{http_code}' "http://$REGISTRY/v2/" || true)" == 200 ]]
}

write_registry_config() {
  mkdir -p "$STATE_DIR/registry/storage"
  cat >"$REGISTRY_CONF.tmp" <<EOF
# Written by $SCRIPT_PATH. Not the packaged /etc/docker/registry/config.yml (htpasswd on :5000).
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry/storage
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REGISTRY
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  mv -f "$REGISTRY_CONF.tmp" "$REGISTRY_CONF"
}

start_registry() {
  local t=$SECONDS
  registry_up && return 0
  stop_daemon registry "$REGISTRY_BIN" "$REGISTRY_CONF" 10
  port_open "${REGISTRY##*:}" && die "port ${REGISTRY##*:} is taken by something that is not an open registry"
  write_registry_config
  launch registry "$REGISTRY_BIN" serve "$REGISTRY_CONF"
  wait_ready registry "$REGISTRY_BIN" "$REGISTRY_CONF" 30 registry_up
  step registry "listening on http://$REGISTRY" "$t"
}

stop_registry() {
  local t=$SECONDS
  pid_of registry "$REGISTRY_BIN" "$REGISTRY_CONF" >/dev/null || return 0
  stop_daemon registry "$REGISTRY_BIN" "$REGISTRY_CONF" 15
  step registry "stopped" "$t"
}

# ----------------------------------------------------------------------------- mqtt
MOSQUITTO=/usr/sbin/mosquitto
MQTT_CONF="$MQTT_DIR/mosquitto.conf"

mqtt_up() {
  local msg=ping
  timeout 5 mosquitto_pub -h "$MQTT_HOST" -p "$MQTT_PORT" -q 1 -i "dev-services-$$" \
    -t edgepack/dev-services/ping -m "$msg" >/dev/null 2>&1 &&
    timeout 5 mosquitto_pub -h "$MQTT_HOST" -p "$MQTT_TLS_PORT" --cafile "$CERT_DIR/ca.crt" -q 1 \
      -i "dev-services-tls-$$" -t edgepack/dev-services/ping -m "$msg" >/dev/null 2>&1
}

# make_cert NAME CN EXTENSIONS: a key and a certificate signed by the dev CA.
make_cert() {
  local name=$1 cn=$2 ext=$3 log="$LOG_DIR/openssl.log"
  {
    openssl req -new -newkey rsa:2048 -nodes -keyout "$CERT_DIR/$name.key" \
      -subj "/O=edgepack dev/CN=$cn" -out "$CERT_DIR/$name.csr" &&
      printf '%b' "$ext" >"$CERT_DIR/$name.ext" &&
      openssl x509 -req -in "$CERT_DIR/$name.csr" -CA "$CERT_DIR/ca.crt" -CAkey "$CERT_DIR/ca.key" \
        -CAcreateserial -days 3650 -sha256 -extfile "$CERT_DIR/$name.ext" -out "$CERT_DIR/$name.crt"
  } >>"$log" 2>&1 || die "openssl failed making the $name certificate; see $log" "$log"
  rm -f "$CERT_DIR/$name.csr" "$CERT_DIR/$name.ext"
}

cert_ok() { # NAME: exists, signed by our CA, valid for at least another day
  [[ -s "$CERT_DIR/$1.crt" && -s "$CERT_DIR/$1.key" ]] &&
    openssl verify -CAfile "$CERT_DIR/ca.crt" "$CERT_DIR/$1.crt" >/dev/null 2>&1 &&
    openssl x509 -checkend 86400 -noout -in "$CERT_DIR/$1.crt" >/dev/null 2>&1
}

ensure_certs() {
  local t=$SECONDS made=0
  mkdir -p "$CERT_DIR"
  chmod 755 "$CERT_DIR"
  if ! [[ -s "$CERT_DIR/ca.crt" && -s "$CERT_DIR/ca.key" ]] ||
    ! openssl x509 -checkend 86400 -noout -in "$CERT_DIR/ca.crt" >/dev/null 2>&1; then
    rm -f "$CERT_DIR"/*.crt "$CERT_DIR"/*.key "$CERT_DIR"/*.srl
    openssl req -x509 -new -newkey rsa:2048 -nodes -days 3650 -sha256 \
      -subj "/O=edgepack dev/CN=edgepack dev CA" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -keyout "$CERT_DIR/ca.key" -out "$CERT_DIR/ca.crt" >>"$LOG_DIR/openssl.log" 2>&1 ||
      die "openssl failed making the CA; see $LOG_DIR/openssl.log" "$LOG_DIR/openssl.log"
    made=1
  fi
  if ! cert_ok server; then
    make_cert server localhost "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
    made=1
  fi
  if ! cert_ok client; then
    make_cert client edgepack-test-client "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
    made=1
  fi
  # mosquitto drops to user mosquitto: it must read the server key. The CA key stays root's.
  chown root:root "$CERT_DIR"/ca.key && chmod 600 "$CERT_DIR"/ca.key
  chown root:mosquitto "$CERT_DIR"/server.key && chmod 640 "$CERT_DIR"/server.key
  chmod 644 "$CERT_DIR"/*.crt "$CERT_DIR"/client.key # client key: throwaway test credential
  ((made)) && step certs "dev CA, server (localhost, 127.0.0.1) and client certificates in $CERT_DIR" "$t"
  return 0
}

write_mqtt_config() {
  mkdir -p "$MQTT_DIR/data"
  chown mosquitto:mosquitto "$MQTT_DIR/data"
  chmod 750 "$MQTT_DIR/data"
  cat >"$MQTT_CONF.tmp" <<EOF
# Written by $SCRIPT_PATH: edgepack's test broker.
user mosquitto
per_listener_settings false
allow_anonymous true

persistence true
persistence_location $MQTT_DIR/data/
persistence_file mosquitto.db
autosave_interval 60

# 5,000-message QoS1 bursts, and queues for offline persistent sessions.
max_inflight_messages 1000
max_queued_messages 100000
max_queued_bytes 0
set_tcp_nodelay true

log_dest file $LOG_DIR/mqtt.log
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
log_timestamp_format %Y-%m-%dT%H:%M:%S

listener $MQTT_PORT $MQTT_HOST

listener $MQTT_TLS_PORT $MQTT_HOST
cafile $CERT_DIR/ca.crt
certfile $CERT_DIR/server.crt
keyfile $CERT_DIR/server.key
require_certificate false
EOF
  mv -f "$MQTT_CONF.tmp" "$MQTT_CONF"
}

start_mqtt() {
  local t=$SECONDS
  ensure_certs
  mqtt_up && return 0
  stop_daemon mqtt "$MOSQUITTO" "$MQTT_CONF" 15
  local p
  for p in "$MQTT_PORT" "$MQTT_TLS_PORT"; do
    port_open "$p" && die "port $p is taken by another process (a packaged mosquitto?); stop it first"
  done
  write_mqtt_config
  touch "$LOG_DIR/mqtt.log" && chown mosquitto "$LOG_DIR/mqtt.log"
  # mosquitto runs as user mosquitto: every directory above the state dir must let it in.
  runuser -u mosquitto -- test -r "$CERT_DIR/server.key" -a -w "$MQTT_DIR/data" -a -w "$LOG_DIR/mqtt.log" ||
    die "user mosquitto cannot read $CERT_DIR/server.key or write $MQTT_DIR/data (is $STATE_DIR below a private directory?)"
  launch mqtt "$MOSQUITTO" -c "$MQTT_CONF"
  wait_ready mqtt "$MOSQUITTO" "$MQTT_CONF" 30 mqtt_up
  step mqtt "listening on $MQTT_HOST:$MQTT_PORT and $MQTT_HOST:$MQTT_TLS_PORT (TLS)" "$t"
}

stop_mqtt() {
  local t=$SECONDS deadline
  pid_of mqtt "$MOSQUITTO" "$MQTT_CONF" >/dev/null || return 0
  # SIGTERM makes mosquitto write its persistence file (queued QoS1 messages survive).
  stop_daemon mqtt "$MOSQUITTO" "$MQTT_CONF" 20
  deadline=$((SECONDS + 10))
  while { port_open "$MQTT_PORT" || port_open "$MQTT_TLS_PORT"; } && ((SECONDS < deadline)); do sleep 0.1; done
  port_open "$MQTT_PORT" && die "port $MQTT_PORT still open after stopping mosquitto"
  step mqtt "stopped" "$t"
}

# ----------------------------------------------------------------------------- base images
index_json() {
  curl -fsS --noproxy '*' --max-time 10 \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$REGISTRY/v2/library/python/manifests/$BASE_TAG" 2>/dev/null
}

# The registry holds BASE_IMAGE as a multi-arch index with every arch, and each arch's
# manifest is there too.
base_images_up() {
  local json arch digest
  json=$(index_json) || return 1
  grep -Eq '"mediaType"[[:space:]]*:[[:space:]]*"application/vnd\.(docker\.distribution\.manifest\.list\.v2|oci\.image\.index\.v1)\+json"' <<<"$json" || return 1
  for arch in "${BASE_ARCHES[@]}"; do
    grep -Eq "\"architecture\"[[:space:]]*:[[:space:]]*\"$arch\"" <<<"$json" || return 1
  done
  while read -r digest; do
    curl -fsS --noproxy '*' --max-time 10 -o /dev/null -I \
      -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
      -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://$REGISTRY/v2/library/python/manifests/$digest" 2>/dev/null || return 1
  done < <(grep -Eo 'sha256:[0-9a-f]{64}' <<<"$json")
}

rootfs_tar() { echo "$ROOTFS_CACHE/debian-$SUITE-python3-r$ROOTFS_RECIPE-$1.tar"; }

umount_under() { # unmount anything left mounted below DIR (an interrupted debootstrap)
  local m
  awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
}

remove_build_dir() {
  [[ -e $1 ]] || return 0
  umount_under "$1"
  rm -rf --one-file-system "$1"
}

# build_rootfs ARCH: debootstrap a python3 root filesystem and cache it as a tarball.
build_rootfs() {
  local arch=$1 t=$SECONDS root="$ROOTFS_CACHE/build-$1" log="$LOG_DIR/rootfs-$1.log" tar
  tar=$(rootfs_tar "$arch")
  remove_build_dir "$root"
  local common=(--variant=minbase --include="$ROOTFS_INCLUDE" --components=main --arch="$arch")
  {
    if [[ $arch == "$(dpkg --print-architecture)" ]]; then
      debootstrap "${common[@]}" "$SUITE" "$root" "$DEBIAN_MIRROR"
    else
      debootstrap "${common[@]}" --foreign "$SUITE" "$root" "$DEBIAN_MIRROR" &&
        chroot "$root" /debootstrap/debootstrap --second-stage
    fi
  } </dev/null >"$log" 2>&1 || {
    remove_build_dir "$root"
    die "debootstrap $arch failed; see $log" "$log"
  }
  umount_under "$root"
  # Slim it down like the official images: no apt lists or caches, docs (but copyrights),
  # man pages or translations; no host resolver or hostname.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/*.log \
    "$root"/var/log/apt/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/debootstrap
  mkdir -p "$root"/var/lib/apt/lists/partial
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
  find "$root"/usr/share/doc -type f ! -name copyright -delete
  find "$root"/usr/share/doc -mindepth 1 -type d -empty -delete
  : >"$root"/etc/resolv.conf
  rm -f "$root"/etc/hostname
  cat >"$root"/etc/apt/apt.conf.d/docker-clean <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
EOF
  tar --numeric-owner --one-file-system -C "$root" -cf "$tar.tmp" . >>"$log" 2>&1 ||
    die "tar of the $arch root filesystem failed; see $log" "$log"
  mv -f "$tar.tmp" "$tar"
  remove_build_dir "$root"
  step "rootfs" "$arch debootstrapped to $tar ($(du -m "$tar" | cut -f1) MB)" "$t"
}

# build_image ARCH: FROM scratch + ADD rootfs.tar (docker import ignores --platform).
build_image() {
  local arch=$1 ctx="$ROOTFS_CACHE/context-$1" log="$LOG_DIR/base-images.log" got
  rm -rf "$ctx" && mkdir -p "$ctx"
  ln -f "$(rootfs_tar "$arch")" "$ctx/rootfs.tar" 2>/dev/null || cp "$(rootfs_tar "$arch")" "$ctx/rootfs.tar"
  cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8
LABEL org.opencontainers.image.description="edgepack dev base: Debian bookworm minbase + python3 (debootstrap)"
CMD ["python3"]
EOF
  DOCKER_BUILDKIT=0 docker build --force-rm --platform "linux/$arch" -t "$BASE_IMAGE-$arch" "$ctx" \
    >>"$log" 2>&1 || die "docker build of the $arch base image failed; see $log" "$log"
  rm -rf "$ctx"
  got=$(docker image inspect --format '{{.Os}}/{{.Architecture}}' "$BASE_IMAGE-$arch")
  [[ $got == "linux/$arch" ]] || die "built $BASE_IMAGE-$arch is $got, not linux/$arch"
  docker push "$BASE_IMAGE-$arch" >>"$log" 2>&1 || die "docker push $BASE_IMAGE-$arch failed; see $log" "$log"
}

# The registry's index digest for BASE_IMAGE (what the saved layout was copied from).
base_index_digest() {
  curl -fsS --noproxy '*' --max-time 10 -I \
    -H 'Accept: application/vnd.docker.distribution.manifest.list.v2+json' \
    -H 'Accept: application/vnd.oci.image.index.v1+json' \
    "http://$REGISTRY/v2/library/python/manifests/$BASE_TAG" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1) == "docker-content-digest:" { print $2 }'
}

# save_base_layout: BASE_IMAGE (every arch) as an OCI layout in BASE_OCI, tagged BASE_TAG, once per
# registry index digest (the layout's .source file names it). Copied beside it, then renamed into place.
save_base_layout() {
  local t=$SECONDS log="$LOG_DIR/base-images.log" digest tmp
  digest=$(base_index_digest)
  [[ -n $digest ]] || die "cannot read the digest of $BASE_IMAGE from the registry; see $log" "$log"
  if [[ -s $BASE_OCI/index.json && "$(cat "$BASE_OCI/.source" 2>/dev/null)" == "$BASE_IMAGE@$digest" ]]; then
    return 0
  fi
  mkdir -p "$CACHE_DIR"
  tmp=$(mktemp -d "$CACHE_DIR/.base-oci.XXXXXX")
  skopeo copy --all --src-tls-verify=false "docker://$BASE_REPO@$digest" "oci:$tmp:$BASE_TAG" >>"$log" 2>&1 || {
    rm -rf "$tmp"
    die "skopeo copy of $BASE_IMAGE to an OCI layout failed; see $log" "$log"
  }
  printf '%s\n' "$BASE_IMAGE@$digest" >"$tmp/.source"
  chmod -R a+rX "$tmp"
  rm -rf "$BASE_OCI.old"
  [[ -e $BASE_OCI ]] && mv "$BASE_OCI" "$BASE_OCI.old"
  mv "$tmp" "$BASE_OCI"
  rm -rf "$BASE_OCI.old"
  step base-images "$BASE_IMAGE saved as an OCI layout in $BASE_OCI (tag $BASE_TAG)" "$t"
}

start_base_images() {
  local t=$SECONDS arch log="$LOG_DIR/base-images.log" pids=() i
  if base_images_up; then
    save_base_layout
    return 0
  fi
  # Root filesystems: only those missing from the cache; the arm64 one (qemu, minutes)
  # is built alongside the amd64 one.
  for arch in "${BASE_ARCHES[@]}"; do
    [[ -s "$(rootfs_tar "$arch")" ]] && continue
    local eta="about 1-2 min"
    [[ $arch == "$(dpkg --print-architecture)" ]] || eta="4-8 min under qemu"
    say "$(printf '%-12s %s' rootfs "debootstrapping $arch ($eta; log $LOG_DIR/rootfs-$arch.log)")"
    build_rootfs "$arch" &
    pids+=($!)
  done
  local failed=0
  for i in "${pids[@]}"; do wait "$i" || failed=1; done
  ((failed == 0)) || die "building a root filesystem failed (see $LOG_DIR/rootfs-*.log)"
  local refs=()
  for arch in "${BASE_ARCHES[@]}"; do
    build_image "$arch"
    refs+=("$BASE_IMAGE-$arch")
  done
  # One index for both platforms. A private client config keeps the manifest store
  # away from the user's ~/.docker.
  local cfg="$STATE_DIR/docker-cli"
  mkdir -p "$cfg"
  {
    DOCKER_CONFIG=$cfg docker manifest rm "$BASE_IMAGE" 2>/dev/null || true
    DOCKER_CONFIG=$cfg docker manifest create --insecure "$BASE_IMAGE" "${refs[@]}" &&
      DOCKER_CONFIG=$cfg docker manifest annotate --variant v8 "$BASE_IMAGE" "$BASE_IMAGE-arm64" &&
      DOCKER_CONFIG=$cfg docker manifest push --insecure --purge "$BASE_IMAGE"
  } >>"$log" 2>&1 || die "pushing the $BASE_IMAGE index failed; see $log" "$log"
  base_images_up || die "the registry does not show $BASE_IMAGE as an index of ${BASE_ARCHES[*]}; see $log" "$log"
  step base-images "$BASE_IMAGE pushed (linux/amd64 + linux/arm64)" "$t"
  save_base_layout
}

# ----------------------------------------------------------------------------- gateway-api
# Not a daemon: node, npm and one npm package the tests run (tests/cloud_targets/targets/kubernetes/
# gateway_schema.py). The package's validators are generated from Gateway API's v1 types; the
# engines field asks for node >= 22, it runs on node 20 (npm prints an EBADENGINE warning).
gateway_api_version() { # the installed version of the package, or nothing
  local manifest="$NODE_DIR/node_modules/$GATEWAY_API_PACKAGE/package.json"
  [[ -s $manifest ]] && command -v node >/dev/null || return 0
  node -p 'require(process.argv[1]).version' "$manifest" 2>/dev/null || true
}

gateway_api_up() { [[ "$(gateway_api_version)" == "$GATEWAY_API_VERSION" ]]; }

ensure_node() {
  local t=$SECONDS log="$LOG_DIR/apt.log"
  command -v node >/dev/null && command -v npm >/dev/null && return 0
  {
    apt-get update -q || warn "apt-get update reported errors (continuing; see $log)"
    apt-get install -y -q -o DPkg::Lock::Timeout=300 nodejs npm
  } </dev/null >>"$log" 2>&1 || die "apt-get install nodejs npm failed; see $log" "$log"
  step packages "installed nodejs npm (node $(node --version))" "$t"
}

start_gateway_api() {
  local t=$SECONDS log="$LOG_DIR/npm.log"
  ensure_node
  gateway_api_up && return 0
  mkdir -p "$NODE_DIR"
  printf '\n===== %s npm install %s@%s\n' "$(date -u +%FT%TZ)" "$GATEWAY_API_PACKAGE" "$GATEWAY_API_VERSION" >>"$log"
  npm install --no-audit --no-fund --save-exact --prefix "$NODE_DIR" \
    "$GATEWAY_API_PACKAGE@$GATEWAY_API_VERSION" </dev/null >>"$log" 2>&1 ||
    die "npm install $GATEWAY_API_PACKAGE@$GATEWAY_API_VERSION failed; see $log" "$log"
  gateway_api_up || die "$NODE_DIR does not hold $GATEWAY_API_PACKAGE $GATEWAY_API_VERSION after npm install; see $log" "$log"
  step gateway-api "$GATEWAY_API_PACKAGE@$GATEWAY_API_VERSION in $NODE_DIR (node $(node --version))" "$t"
}

# ----------------------------------------------------------------------------- env file
write_env() {
  local driver
  driver=$(current_driver)
  [[ -n $driver ]] || driver=$(cat "$DRIVER_FILE" 2>/dev/null || true)
  cat >"$ENV_FILE.tmp" <<EOF
EDGEPACK_DEV_DIR=$STATE_DIR
EDGEPACK_DEV_SCRIPT=$SCRIPT_PATH
EDGEPACK_TEST_REGISTRY=$REGISTRY
EDGEPACK_TEST_BASE_IMAGE=$BASE_IMAGE
EDGEPACK_TEST_BASE_IMAGE_AMD64=$BASE_IMAGE-amd64
EDGEPACK_TEST_BASE_IMAGE_ARM64=$BASE_IMAGE-arm64
EDGEPACK_TEST_PLATFORMS=linux/amd64,linux/arm64
EDGEPACK_TEST_DOCKER_STORAGE_DRIVER=$driver
EDGEPACK_TEST_MQTT_HOST=$MQTT_HOST
EDGEPACK_TEST_MQTT_PORT=$MQTT_PORT
EDGEPACK_TEST_MQTT_TLS_PORT=$MQTT_TLS_PORT
EDGEPACK_TEST_MQTT_CA=$CERT_DIR/ca.crt
EDGEPACK_TEST_MQTT_CLIENT_CERT=$CERT_DIR/client.crt
EDGEPACK_TEST_MQTT_CLIENT_KEY=$CERT_DIR/client.key
EDGEPACK_TEST_NODE_MODULES=$NODE_DIR/node_modules
EOF
  chmod 644 "$ENV_FILE.tmp"
  mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

# ----------------------------------------------------------------------------- commands
valid_service() {
  local s
  for s in "${SERVICES[@]}"; do [[ $1 == "$s" ]] && return 0; done
  die "unknown service '$1' (one of: ${SERVICES[*]})"
}

cmd_start() {
  local t=$SECONDS
  need_root start "$@"
  setup_dirs
  take_lock
  ensure_packages
  case "${1:-all}" in
    all) start_docker; start_registry; start_mqtt; start_base_images; start_gateway_api ;;
    docker) start_docker ;;
    registry) start_registry ;;
    mqtt) start_mqtt ;;
    base-images) start_docker; start_registry; start_base_images ;;
    gateway-api) start_gateway_api ;;
    *) valid_service "$1" ;;
  esac
  write_env
  say "$(printf '%-12s %s (%ds)' ready "${1:-all services} up; test settings in $ENV_FILE" "$((SECONDS - t))")"
}

cmd_stop() {
  need_root stop "$@"
  setup_dirs
  take_lock
  case "${1:-all}" in
    all) stop_mqtt; stop_registry; stop_docker ;;
    docker) stop_docker ;;
    registry) stop_registry ;;
    mqtt) stop_mqtt ;;
    base-images) say "base-images  nothing to stop (they live in the registry)" ;;
    gateway-api) say "gateway-api  nothing to stop (an npm package in $NODE_DIR)" ;;
    *) valid_service "$1" ;;
  esac
}

cmd_status() {
  local down=0 driver
  # service STATE DETAIL
  report() { printf '%-12s %-5s %s\n' "$1" "$2" "$3"; [[ $2 == up ]] || down=1; }
  if docker_up && binfmt_up; then
    driver=$(current_driver)
    report docker up "dockerd $(docker version --format '{{.Server.Version}}' 2>/dev/null), storage $driver; binfmt qemu-aarch64, qemu-arm"
  elif docker_up; then
    report docker down "dockerd answers but the qemu-aarch64/qemu-arm binfmt handlers are not enabled"
  else
    report docker down "dockerd does not answer (log $LOG_DIR/docker.log)"
  fi
  if registry_up; then report registry up "http://$REGISTRY/v2/"; else
    report registry down "http://$REGISTRY/v2/ does not answer 200 (log $LOG_DIR/registry.log)"
  fi
  if [[ -s "$CERT_DIR/ca.crt" ]] && mqtt_up; then
    report mqtt up "$MQTT_HOST:$MQTT_PORT, $MQTT_HOST:$MQTT_TLS_PORT (TLS, CA $CERT_DIR/ca.crt)"
  else
    report mqtt down "no MQTT on $MQTT_HOST:$MQTT_PORT and $MQTT_HOST:$MQTT_TLS_PORT (log $LOG_DIR/mqtt.log)"
  fi
  if base_images_up && [[ -s $BASE_OCI/index.json ]]; then
    report base-images up "$BASE_IMAGE (linux/amd64, linux/arm64); OCI layout $BASE_OCI"
  elif base_images_up; then
    report base-images down "$BASE_IMAGE is in the registry but not saved as an OCI layout in $BASE_OCI"
  else
    report base-images down "$BASE_IMAGE is not an amd64+arm64 index in the registry"
  fi
  if gateway_api_up; then report gateway-api up "$GATEWAY_API_PACKAGE@$GATEWAY_API_VERSION in $NODE_DIR"; else
    report gateway-api down "$GATEWAY_API_PACKAGE@$GATEWAY_API_VERSION is not installed in $NODE_DIR (node: $(node --version 2>/dev/null || echo missing))"
  fi
  return "$down"
}

cmd_env() {
  [[ -s $ENV_FILE ]] || die "$ENV_FILE does not exist yet: run $SCRIPT_PATH start"
  cat "$ENV_FILE"
}

usage() {
  cat <<EOF
usage: $(basename "$0") [COMMAND [SERVICE]]
  start [SERVICE]  install what is missing and start SERVICE or all (default command)
  stop [SERVICE]   stop SERVICE or all; waits until it is down
  restart [SERVICE]
  status           one line per service; exits 1 if any is down
  env              print $ENV_FILE (KEY=VALUE lines for the tests)
SERVICE: ${SERVICES[*]}
State, logs: $STATE_DIR (EDGEPACK_DEV_DIR); rootfs and npm caches: $ROOTFS_CACHE, $NODE_DIR (EDGEPACK_CACHE)
EOF
}

main() {
  local cmd=${1:-start}
  (($# > 0)) && shift
  (($# <= 1)) || die "too many arguments; see $(basename "$0") help"
  (($# == 0)) || valid_service "$1"
  case "$cmd" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart) cmd_stop "$@"; cmd_start "$@" ;;
    status) cmd_status ;;
    env) cmd_env ;;
    help | -h | --help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
