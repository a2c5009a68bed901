#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first:
# Prometheus and promtool (Debian's `prometheus` package) for the telemetry
# end-to-end tests. Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

need_install=()
command -v prometheus >/dev/null 2>&1 || need_install+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
if [ ${#need_install[@]} -gt 0 ]; then
  echo "installing Debian's prometheus package (prometheus, promtool) for the telemetry tests"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Debian package starts a Prometheus service on :9090 where systemd runs;
# the tests start their own on free ports and never use it.
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1

cargo test --workspace "$@"
