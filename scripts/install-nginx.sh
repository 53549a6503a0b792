#!/usr/bin/env bash
# Debian's nginx, unpacked (not installed: no service is started, nothing outside the checkout is written) into
# .venv/debian/nginx, for the test that runs deploy/nginx.conf, the team stack's serving proxy, in front of two
# local serving replicas (tests/integration/test_serving.py). Does nothing when it is there already, or when an
# nginx is installed (/usr/sbin/nginx).
set -euo pipefail
cd "$(dirname "$0")/.."

target=.venv/debian/nginx
if [[ -x /usr/sbin/nginx || -x $target/usr/sbin/nginx ]]; then
  exit 0
fi
echo "==> unpacking Debian's nginx into $target for the serving proxy's test" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! (cd "$work" && apt-get download nginx >/dev/null 2>&1); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-nginx: apt-get download nginx failed; as root run: apt-get update" >&2
    exit 1
  fi
  apt-get update -qq
  (cd "$work" && apt-get download nginx >/dev/null)
fi
mkdir -p "$target.tmp"
dpkg -x "$work"/nginx_*.deb "$target.tmp"
mv "$target.tmp" "$target"
"$target/usr/sbin/nginx" -v
