#!/usr/bin/env bash
# bash scripts/offline-npmrc.sh <dir>: writes <dir>/npmrc and an empty <dir>/npmrc-global for an npm
# that can install nothing but the tarballs named on its command line: offline, an empty cache in
# <dir>/cache, a registry that does not exist. Point npm_config_userconfig and
# npm_config_globalconfig at them (test-install.sh, test-platforms.sh).
set -euo pipefail
[ $# -eq 1 ] && [ -d "$1" ] || { echo "usage: bash scripts/offline-npmrc.sh <existing dir>" >&2; exit 2; }
mkdir -p "$1/cache"
cat >"$1/npmrc" <<RC
registry=http://127.0.0.1:9/
offline=true
cache=$1/cache
audit=false
fund=false
update-notifier=false
RC
: >"$1/npmrc-global"
