#!/usr/bin/env bash
# Installs Debian's headless-capable Chromium for the browser tests (the replay report's and the
# dashboard's): `chromium`, `chromium-driver` (WebDriver, for the dashboard test) and a font so
# that screenshots have legible text. Run as root on Debian; idempotent: does nothing when
# /usr/bin/chromium already exists. `.ci/run` calls it before the tests.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  echo "install-browser.sh: /usr/bin/chromium present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-browser.sh: /usr/bin/chromium is missing and installing it needs root (apt-get)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
