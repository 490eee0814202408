#!/bin/sh
# The image's entrypoint: runs the command it is given, with two conveniences.
set -e

# `docker run berth serve …`, `… config check FILE`, `… --help`, or a config file
# alone (as distribution's image accepts): run them as berth commands.
case "$1" in
    serve | config | help | -*) set -- berth "$@" ;;
    *.yml | *.yaml) set -- berth serve "$@" ;;
esac

# distribution's config path: the image ships nothing at
# /etc/docker/registry/config.yml, so a file there was mounted on purpose and
# is served instead of the baked-in default.
if [ "$#" -eq 3 ] && [ "$1" = berth ] && [ "$2" = serve ] &&
    [ "$3" = /etc/berth/config.yml ] && [ -f /etc/docker/registry/config.yml ]; then
    set -- berth serve /etc/docker/registry/config.yml
fi

exec "$@"
