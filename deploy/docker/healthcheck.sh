#!/bin/sh
# The image's HEALTHCHECK: `berth healthcheck` with the configuration the
# entrypoint serves by default (distribution's path when a file is mounted
# there, else the baked-in one) plus the container's REGISTRY_* variables, so
# it follows the configured port, prefix and TLS. A container started with
# another config file as its command: set BERTH_CONFIG to that file, or
# BERTH_HEALTHCHECK_ADDR (host:port) to ask elsewhere.
set -eu

if [ -n "${BERTH_CONFIG:-}" ]; then
    set --  # berth reads BERTH_CONFIG itself
elif [ -f /etc/docker/registry/config.yml ]; then
    set -- /etc/docker/registry/config.yml
else
    set -- /etc/berth/config.yml
fi
if [ -n "${BERTH_HEALTHCHECK_ADDR:-}" ]; then
    set -- --addr "$BERTH_HEALTHCHECK_ADDR" "$@"
fi
exec berth healthcheck "$@"
