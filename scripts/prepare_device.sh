#!/usr/bin/env bash
# Run here before a device call: records the commit the tree is copied from (the device gets no .git)
# and makes sure the carried wheel and compile cache exist. Then call the device tool with
#   carry: [".whl", ".cache"]   command: bash scripts/device_run.sh tests/gpu -- <bench command>
set -eu
cd "$(dirname "$0")/.."
mkdir -p .cache/wsp
c=$(git rev-parse HEAD); [ -n "$(git status --porcelain --untracked-files=no)" ] && c="$c-dirty"
echo "$c" > .cache/git-commit
ls .whl/nvidia_cutlass-*.whl >/dev/null
du -sh .cache .whl
