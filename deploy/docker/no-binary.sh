#!/bin/sh
# Stands in for berth in the `prebuilt` stage when no binary was given: the
# legacy builder builds every stage before the one asked for, so the default
# (from source) build passes through `prebuilt` too.
echo "this image was built with --target prebuilt but without --build-arg BERTH_BINARY=<path to a berth binary in the context>" >&2
exit 1
