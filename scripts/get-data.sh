#!/usr/bin/env bash
# Make Fashion-MNIST available to lenet, trying the cheapest source first:
#   1. any source lenet already finds (--data-dir, $LENET_DATA_DIR, cache, Debian path);
#   2. the Debian package dataset-fashion-mnist, when apt-get can be used as root;
#   3. lenet's own download from the official URLs into ~/.cache/lenet.
set -euo pipefail
lenet=${1:-lenet}

if "$lenet" data fetch --offline 2>/dev/null; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing the Debian package dataset-fashion-mnist"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
    >/dev/null || echo "apt-get could not install it; trying a download"
fi
"$lenet" data fetch
