#!/usr/bin/env bash
# Idempotent host preparation: Debian packages and the project's virtualenv.
# Everything the platform needs on a fresh machine is installed from here; a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc
  qemu-system-x86 qemu-utils debootstrap e2fsprogs
  haproxy restic rclone
  iproute2  # ss -K: a guestfwd's host connection reset (provisioning/chardev.py)
  postgresql python3-venv python3-dev
  chromium chromium-driver fonts-noto-cjk wrk openssh-client sshpass
  prometheus  # promtool checks and unit-tests deploy/prometheus rules; the demo scrapes /metrics
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libvirt-python builds against Debian's libvirt, so the venv is made from Debian's python3.
VENV=.venv
STAMP="$VENV/.installed-$(cat pyproject.toml constraints.txt 2>/dev/null | sha256sum | cut -c1-16)"
if [[ ! -f "$STAMP" ]]; then
  [[ -x "$VENV/bin/python" ]] || /usr/bin/python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  if [[ -f constraints.txt ]]; then
    "$VENV/bin/pip" install -q -c constraints.txt -e '.[dev]'
  else
    "$VENV/bin/pip" install -q -e '.[dev]'
  fi
  rm -f "$VENV"/.installed-*
  touch "$STAMP"
fi
