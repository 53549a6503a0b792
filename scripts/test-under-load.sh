#!/usr/bin/env bash
# The test suite with every core kept busy, as on a shared machine or a CI runner with neighbours.
#   scripts/test-under-load.sh                       make test, beside one busy loop per core
#   scripts/test-under-load.sh tests/e2e -x          pytest with these arguments instead of make test
#   BUSY_LOOPS=4 scripts/test-under-load.sh          another number of busy loops (default: nproc)
# The loops are stopped however the run ends (success, failure, Ctrl-C).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cores=$(nproc)
loops="${BUSY_LOOPS:-$cores}"
pids=()

# shellcheck disable=SC2317  # run by the EXIT trap
stop_loops() {
  if ((${#pids[@]})); then
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap stop_loops EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for ((i = 0; i < loops; i++)); do
  (while :; do :; done) &
  pids+=("$!")
done
echo "==> ${loops} busy loop(s) on ${cores} core(s) (pids ${pids[*]})" >&2

started=$SECONDS
status=0
if (($#)); then
  ./scripts/install-chromium.sh  # as make test does, for tests/ui
  ./scripts/install-nginx.sh  # and for the serving proxy's test
  .venv/bin/python -m pytest "$@" || status=$?
else
  make test || status=$?
fi
echo "==> exit ${status} after $((SECONDS - started)) s with ${loops} busy loop(s)" >&2
exit "$status"
