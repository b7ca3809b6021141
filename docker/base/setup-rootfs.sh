#!/bin/sh
# Runs INSIDE the freshly debootstrapped rootfs (chroot), before it is imported as
# backupctl/debian-base:SUITE. No network needed. It makes the rootfs look like the base of the
# official images: no default database clusters, en_US.UTF-8 built, no caches, docs or translations.
set -eu

# en_US.UTF-8, the locale the official postgres image builds and sets (LANG=en_US.utf8): a database
# created there, or a dump that names its collation, restores the same here. C.UTF-8 ships with libc.
localedef -i en_US -c -f UTF-8 -A /usr/share/locale/locale.alias en_US.UTF-8

# PostgreSQL: Debian's postinst created a "main" cluster; the image runs initdb on its own PGDATA.
rm -rf /etc/postgresql/*/main /var/lib/postgresql/[0-9]*
sed -ri 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
    /etc/postgresql-common/createcluster.conf

# MariaDB: Debian's postinst ran mariadb-install-db into /var/lib/mysql; the entrypoint does it itself.
rm -rf /var/lib/mysql
mkdir -p /var/lib/mysql /run/mysqld
chown mysql:mysql /var/lib/mysql /run/mysqld
chmod 1777 /run/mysqld

# Keep future installs (if someone adds a RUN apt-get) as lean as this one.
cat > /etc/dpkg/dpkg.cfg.d/docker-excludes <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*/LC_MESSAGES/*.mo
EOF
cat > /etc/apt/apt.conf.d/docker-clean <<'EOF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF

# Size: package cache and lists, docs (copyright files stay), man pages, translations, locale sources.
rm -rf /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/* /var/cache/apt/*.bin \
       /var/lib/apt/lists/* /usr/share/man/* /usr/share/info/* /usr/share/i18n/locales \
       /usr/share/i18n/charmaps /var/cache/debconf/*-old /var/lib/dpkg/*-old /var/log/*.log \
       /var/log/apt/* /var/log/postgresql/* /var/log/mysql/* /debootstrap
find /usr/share/doc -mindepth 1 ! -type d ! -name copyright -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
find /usr/share/locale -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +

# The host's identity must not leak into the image; docker provides these at run time.
: > /etc/hostname
rm -f /etc/resolv.conf
[ ! -e /etc/machine-id ] || : > /etc/machine-id
