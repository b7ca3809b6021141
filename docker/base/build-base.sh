#!/usr/bin/env bash
# Build backupctl/debian-base:SUITE: debootstrap a minimal rootfs of Debian SUITE that already holds
# every package in packages.txt (bookworm) or packages-SUITE.txt (e.g. bullseye), tidy it
# (setup-rootfs.sh, in a chroot), and `docker import` it.
#
#   build-base.sh TAG MIRROR SUITE [KEY=VALUE ...]      KEY=VALUE pairs become image labels
#
# Called by docker/build-images.sh, which decides whether the base is current. Needs root (debootstrap,
# chroot). The rootfs lives in a temporary directory that is removed on exit, also on failure, Ctrl-C
# or SIGTERM (debootstrap and its dpkg runs are stopped first).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
tag="$1" mirror="$2" suite="$3"
shift 3
list="$here/packages.txt"
[ "$suite" = bookworm ] || list="$here/packages-$suite.txt"
[ -f "$list" ] || { echo "base: no package list for Debian $suite ($list)" >&2; exit 2; }

packages="$(sed -e 's/#.*//' "$list" | tr -s ' \t\n' '\n' | sed '/^$/d' | paste -sd, -)"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/backupctl-rootfs.XXXXXX")"
child=""

cleanup() {
    # Stop debootstrap's whole process group (it runs dpkg in the chroot), then unmount what it
    # mounted inside the target (/proc, /sys) deepest first: `rm -rf` must never walk into them.
    local mount_point
    set +e   # best effort, every step: an error here must not skip the removal
    if [ -n "$child" ]; then
        kill -TERM -- "-$child" 2>/dev/null
        wait "$child" 2>/dev/null
    fi
    findmnt -rn -o TARGET | grep -F "$work/" | sort -r | while read -r mount_point; do
        umount -l "$mount_point" 2>/dev/null
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
seconds_since() { awk -v start="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.1f", now - start }'; }

started=$(date +%s.%N)
echo "base: debootstrap $suite from $mirror ($(wc -w <<<"${packages//,/ }") packages + dependencies)"
# In the background, in its own process group: a signal to this script runs the trap at once (bash
# defers traps while a foreground child runs) and the trap can stop every process debootstrap started.
setsid debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" \
    >"$work/debootstrap.out" 2>&1 &
child=$!
if ! wait "$child"; then
    child=""
    tail -n 30 "$work/debootstrap.out" >&2
    [ ! -f "$work/rootfs/debootstrap/debootstrap.log" ] || tail -n 30 "$work/rootfs/debootstrap/debootstrap.log" >&2
    echo "base: debootstrap failed (mirror $mirror)" >&2
    exit 1
fi
child=""
echo "base: debootstrap $(seconds_since "$started") s"

started=$(date +%s.%N)
pg_server="$(grep -Eo '^postgresql-[0-9]+' "$list" | head -n 1)"
versions="$(chroot "$work/rootfs" dpkg-query -W -f='${Package}=${Version} ' "$pg_server" mariadb-server \
    $(grep -qx python3 "$list" && echo python3))"
cp "$here/setup-rootfs.sh" "$work/rootfs/tmp/setup-rootfs.sh"
chroot "$work/rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /bin/sh /tmp/setup-rootfs.sh
rm -f "$work/rootfs/tmp/setup-rootfs.sh"

changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=en_US.utf8'
    --change 'CMD ["bash"]'
    --change "LABEL backupctl.debian-packages=\"${versions% }\""
)
for label in "$@"; do
    changes+=(--change "LABEL $label")
done
# Numeric owners: the rootfs's postgres/mysql ids are not the host's. /dev, /proc, /sys are provided
# by the container runtime.
tar --numeric-owner -C "$work/rootfs" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./tmp/*' -c . |
    docker import "${changes[@]}" - "$tag" >/dev/null
echo "base: tidy and docker import $(seconds_since "$started") s"
