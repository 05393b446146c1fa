#!/usr/bin/env bash
# Installs Debian's Chromium and its WebDriver for the browser tests (the replay report's and the
# dashboard's): `chromium`, `chromium-driver` and a font so that screenshots have legible text.
# Idempotent: does nothing when both are there. `.ci/run` calls it before the tests.
set -euo pipefail

if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  echo "install-browser.sh: chromium and chromedriver present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-browser.sh: installing Chromium needs root (apt-get)" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core
/usr/bin/chromium --version
