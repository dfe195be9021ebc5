#!/usr/bin/env bash
# The review page's tests drive Debian's chromium through its chromedriver; install both when
# missing and we may (root, as in CI), otherwise say what to install and fail.
set -euo pipefail
CHROMIUM=${SEPT_CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${SEPT_CHROMEDRIVER:-/usr/bin/chromedriver}
if [[ -x "$CHROMIUM" && -x "$CHROMEDRIVER" ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver for the browser tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q chromium chromium-driver
  exit 0
fi
echo "error: the browser tests need $CHROMIUM and $CHROMEDRIVER;" \
     "install them with: sudo apt-get install -y chromium chromium-driver" \
     "(or point SEPT_CHROMIUM / SEPT_CHROMEDRIVER at a chromium and its driver)" >&2
exit 1
