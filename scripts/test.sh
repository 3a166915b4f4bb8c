#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then fmt, clippy, every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# redis-server: the Redis integration tests start real servers on free loopback ports.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# python3 and pip: tests/calling_zones.rs regenerates the committed location tables with the
# pinned phonenumbers and zipcodes packages and diffs them.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c 'import phonenumbers, zipcodes, sys; sys.exit(phonenumbers.__version__ != "9.0.43" or zipcodes.__version__ != "3.0.0")' 2>/dev/null; then
  echo "installing: phonenumbers==9.0.43 zipcodes==3.0.0 (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check phonenumbers==9.0.43 zipcodes==3.0.0 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages phonenumbers==9.0.43 zipcodes==3.0.0
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
# Benches run once each in test mode, on a small overlay; their real sizes are in README.
export PREFLIGHT_BENCH_CONTACTS="${PREFLIGHT_BENCH_CONTACTS:-20000}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets --locked --no-fail-fast 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "== helm chart"
if ! scripts/check-chart.sh; then
  echo "test result: FAILED. 0 passed; 1 failed (helm chart)" >>"$log"
  status=1
else
  echo "test result: ok. 1 passed; 0 failed (helm chart)" >>"$log"
fi
# One closing line over every test binary (the last binary alone may hold no tests).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "summary: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
