#!/usr/bin/env bash
# Runs every test of the workspace, installing what the tests need first:
# Prometheus and promtool (Debian's `prometheus` package) for the telemetry
# end-to-end tests, and the SARIF schema for gradlint's SARIF test. Usage: bash scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
need_install=()
command -v prometheus >/dev/null 2>&1 || need_install+=(prometheus)
command -v promtool >/dev/null 2>&1 || need_install+=(prometheus)
if [ ${#need_install[@]} -gt 0 ]; then
  echo "installing Debian's prometheus package (prometheus, promtool) for the telemetry tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
# The Debian package starts a Prometheus service on :9090 where systemd runs;
# the tests start their own on free ports and never use it.
prometheus --version 2>&1 | head -n 1
promtool --version 2>&1 | head -n 1

# The SARIF 2.1.0 JSON schema, to validate gradlint's SARIF output against
# (tests read .cache/sarif-schema-2.1.0.json); it ships in an npm package.
schema=.cache/sarif-schema-2.1.0.json
if [ ! -f "$schema" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent @microsoft/jest-sarif@1.0.0-beta.0 >/dev/null)
  tar xzf "$tmp"/microsoft-jest-sarif-1.0.0-beta.0.tgz -C "$tmp" package/lib/schemas/sarif-2.1.0-rtm.5.json
  mkdir -p .cache
  mv "$tmp"/package/lib/schemas/sarif-2.1.0-rtm.5.json "$schema"
  rm -rf "$tmp"
fi

cargo test --workspace "$@"
