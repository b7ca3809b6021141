#!/usr/bin/env bash
# Install the system packages backupctl's tests, demo and benchmarks need (Debian/Ubuntu).
# Idempotent: does nothing when everything is present. Run as root (or with sudo available).
set -euo pipefail

PACKAGES=(
  postgresql postgresql-contrib   # pg_dump/pg_restore + a server for tests and the demo
  zstd age                        # break-glass interop: the standard tools read our artifacts
  restic                          # restic targets
  mariadb-server mariadb-client   # MySQL/MariaDB sources and their tests
  openssh-server openssh-client   # SFTP targets against a real sshd
  sqlite3 tar procps time         # sqlite CLI, tar listing, ps, /usr/bin/time for benchmarks
  debootstrap debian-archive-keyring  # drill staging images are built from Debian packages (no registry)
  pgbackrest                      # the anchor of the PITR benchmark (BENCH=pitr): archive-push, restore
)

missing=()
for package in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps Debian from starting the packaged services: tests start their own.
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: installed"
