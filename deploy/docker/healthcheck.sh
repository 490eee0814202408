#!/bin/bash
# The image's HEALTHCHECK: GET /health/storage (200 while storage answers) on
# Berth's own port, through bash's /dev/tcp because the image carries no curl.
# It follows REGISTRY_HTTP_ADDR and REGISTRY_HTTP_PREFIX; a port or TLS set
# only in the config file is invisible here, so set BERTH_HEALTHCHECK_ADDR
# (host:port) and BERTH_HEALTHCHECK_TLS=true then.
set -u

addr=${BERTH_HEALTHCHECK_ADDR:-${REGISTRY_HTTP_ADDR:-:5000}}
port=${addr##*:}
host=${addr%:*}
host=${host#[}
host=${host%]}
# Listening on every interface (":5000", "0.0.0.0:5000", "[::]:5000"): ask loopback.
case "$host" in "" | 0.0.0.0 | ::) host=127.0.0.1 ;; esac

exec 3<>"/dev/tcp/$host/$port" || exit 1

# Over TLS all bash can check is that the port accepts connections.
if [ "${BERTH_HEALTHCHECK_TLS:-}" = true ] || [ -n "${REGISTRY_HTTP_TLS_CERTIFICATE:-}" ]; then
    exit 0
fi

prefix=${REGISTRY_HTTP_PREFIX:-}
printf 'GET %s/health/storage HTTP/1.0\r\nHost: %s\r\n\r\n' "${prefix%/}" "$host" >&3
IFS= read -r -t 10 status <&3 || exit 1
case "$status" in
    "HTTP/1."?" 200 "*) exit 0 ;;
    *) echo "berth: $status" >&2; exit 1 ;;
esac
