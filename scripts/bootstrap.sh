#!/usr/bin/env bash
# Installs what `make demo` and `make test` need, idempotently: Debian packages (as root),
# then .venv with the project in editable mode and its test extra. Re-running is cheap:
# apt is skipped when every package is present, pip when pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  # Borg builds from source (no wheels on PyPI): compiler, Python headers and its libraries
  build-essential python3-dev python3-venv pkg-config
  libacl1-dev liblz4-dev libzstd-dev libxxhash-dev libssl-dev
  # the test and demo "droplets": real sshd and database servers on loopback
  openssh-server openssh-client rsync postgresql mariadb-server sqlite3
  # the droplet gate's sudoers drop-in is checked with visudo, and a tree read as root
  # goes through sudo -n rrsync (decision 0022)
  sudo
  # systemd-analyze checks the service unit's hardening offline (not started as init)
  systemd
  # the weekly report's HTML is rendered to a PNG in a test (headless, no display needed)
  chromium fonts-dejavu-core
  # a real Prometheus scrapes the daemon in a test; promtool checks and tests the rules
  prometheus
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
    echo "bootstrap: install them once as root with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.backupd-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c "import backupd" 2>/dev/null; then
  echo "bootstrap: installing the project into .venv (Borg compiles: about a minute)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  echo "$want" > "$stamp"
fi

# The project is installed editable, so pip compiled none of its modules; where
# PYTHONDONTWRITEBYTECODE is set nothing ever would, and every backupctl or backupd start
# would compile ~150 modules again (0.2 s of each start; the test suite starts thousands).
# A stale file is harmless: Python checks each against its source.
.venv/bin/python -m compileall -q -j 0 backupd jobs >/dev/null
