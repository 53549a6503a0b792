#!/usr/bin/env bash
# Debian's chromium for the browser tests (tests/ui), which Playwright drives as /usr/bin/chromium: Playwright's
# own browser download is not used. Does nothing when /usr/bin/chromium is there already; otherwise installs
# the package with apt-get, as root (CI and the project's machines run as root).
set -euo pipefail

if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-chromium: /usr/bin/chromium is missing; as root run: apt-get install chromium" >&2
  exit 1
fi
echo "==> installing Debian's chromium for the browser tests (tests/ui)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
dpkg-query -W -f='==> chromium ${Version} installed\n' chromium >&2
