#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to: real DNS servers,
# Prometheus (with promtool), tshark, Chromium and openssl (throw-away test
# certificates). A test whose tool is missing fails, never skips. Idempotent: packages already present are
# skipped, and no package's service is started (the tests start their own
# instances in the foreground on loopback high ports).
set -euo pipefail

PACKAGES=(
  bind9 bind9-dnsutils nsd knot unbound pdns-server pdns-backend-bind
  pdns-recursor knot-resolver dnsdist dnsmasq-base
  prometheus tshark chromium dnsperf prometheus-blackbox-exporter openssl
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$pkg")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

# Keep maintainer scripts from starting the packaged services: port 53 and
# systemd are not ours to take on a shared machine.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod +x "$policy"
  created_policy=1
fi
cleanup() { if [ "$created_policy" = 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
