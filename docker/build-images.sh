#!/usr/bin/env bash
# Build backupctl's staging images from Debian packages, without any registry:
#
#   backupctl/debian-base:bookworm   debootstrap rootfs with every package (docker/base/), docker import
#   backupctl/postgres:15            docker/postgres/   same env, ports, data dir as the official image
#   backupctl/mariadb:10.11          docker/mariadb/    same env, ports, data dir as the official image
#   backupctl/shop:latest            docker/shop/       the sample shop's web app
# Older majors, built only when named (not by default; docs/drills.md "Older server versions"):
#   base-bullseye  backupctl/debian-base:bullseye  the same rootfs from Debian bullseye (packages-bullseye.txt)
#   postgres-13    backupctl/postgres:13           docker/postgres/ on the bullseye base (PG_MAJOR=13)
#   mariadb-10.5   backupctl/mariadb:10.5          docker/mariadb/ on the bullseye base
#   any docker/apps/NAME/Dockerfile  your own app images (docker/apps/README.md), tagged by the line
#                                    `# backupctl-tag: TAG` in the Dockerfile, else backupctl/NAME:latest
#                                    (e.g. backupctl/wordpress:6.1 from docker/apps/wordpress/)
#
# usage: docker/build-images.sh [--force] [--check] [--mirror URL] [base|postgres|mariadb|shop|NAME|postgres-13 ...]
#
# An image is rebuilt only when its inputs changed: each carries the label backupctl.inputs-sha256, a
# hash of its build context (for the base: docker/base/; for the others: their directory plus the
# base image's id), compared with `docker image inspect`. Names select images (default: all); the base
# is built too when it is missing or stale. --force rebuilds the named images (without names: all,
# debootstrap included). --check builds nothing: exit 0 if the images are current, 1 if not.
# Building the base needs root (debootstrap, chroot) and the Debian mirror (found in apt's sources,
# or --mirror / $BACKUPCTL_DEBIAN_MIRROR); `docker build` steps need no network.
# Exit codes: 0 built or current; 1 a build failed (or --check: not current); 2 a prerequisite is
# missing (docker engine, debootstrap, root, mirror) or bad arguments.
set -euo pipefail

docker_dir="$(cd "$(dirname "$0")" && pwd)"
label_key=backupctl.inputs-sha256
declare -A tags=(
    [base]=backupctl/debian-base:bookworm
    [postgres]=backupctl/postgres:15
    [mariadb]=backupctl/mariadb:10.11
    [shop]=backupctl/shop:latest
)
order=(base postgres mariadb shop)
declare -A dirs=([base]=base [postgres]=postgres [mariadb]=mariadb [shop]=shop)
# Older majors from Debian bullseye: known by name, built only when named.
tags+=([base-bullseye]=backupctl/debian-base:bullseye [postgres-13]=backupctl/postgres:13
       [mariadb-10.5]=backupctl/mariadb:10.5)
dirs+=([base-bullseye]=base [postgres-13]=postgres [mariadb-10.5]=mariadb)
extra=(base-bullseye postgres-13 mariadb-10.5)
declare -A suite_of=([base]=bookworm [base-bullseye]=bullseye)   # the bases
declare -A base_of=([postgres-13]=base-bullseye [mariadb-10.5]=base-bullseye)   # default: base
declare -A build_args=([postgres-13]="--build-arg PG_MAJOR=13")
base_for() { if [ -n "${suite_of[$1]:-}" ]; then echo "$1"; else echo "${base_of[$1]:-base}"; fi; }
# App images: every docker/apps/NAME/ with a Dockerfile, built FROM the base like the bundled ones.
for app_dir in "$docker_dir"/apps/*/; do
    [ -f "$app_dir/Dockerfile" ] || continue
    app="$(basename "$app_dir")"
    app_tag="$(sed -n 's/^# backupctl-tag: *\([^ ]*\).*/\1/p' "$app_dir/Dockerfile" | head -n 1)"
    tags[$app]="${app_tag:-backupctl/$app:latest}"
    dirs[$app]="apps/$app"
    order+=("$app")
done

usage() { sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; }
die() { echo "build-images: $2" >&2; exit "$1"; }
now() { date +%s.%N; }
seconds_since() { awk -v start="$1" -v now="$(now)" 'BEGIN { printf "%.1f", now - start }'; }

force=0 check=0 mirror="${BACKUPCTL_DEBIAN_MIRROR:-}" wanted=()
while [ $# -gt 0 ]; do
    case "$1" in
        --force) force=1 ;;
        --check) check=1 ;;
        --mirror) [ $# -ge 2 ] || die 2 "--mirror needs a URL"; mirror="$2"; shift ;;
        --mirror=*) mirror="${1#--mirror=}" ;;
        -h|--help) usage; exit 0 ;;
        -*) die 2 "unknown argument: $1 (see --help)" ;;
        *) [ -n "${tags[$1]:-}" ] || die 2 "unknown image: $1 (known: ${order[*]} ${extra[*]})"; wanted+=("$1") ;;
    esac
    shift
done
[ ${#wanted[@]} -gt 0 ] || wanted=("${order[@]}")
needed=()   # the wanted images and their bases
for name in "${wanted[@]}"; do needed+=("$(base_for "$name")" "$name"); done
wants() { [[ " ${needed[*]} " == *" $1 "* ]]; }
order+=("${extra[@]}")
forced() { [ "$force" -eq 1 ] && [[ " ${wanted[*]} " == *" $1 "* ]]; }

# --- prerequisites ----------------------------------------------------------------------------------
command -v docker >/dev/null || die 2 "docker CLI not found: install docker.io (apt-get install docker.io)"
if ! engine_error="$(timeout 30 docker version --format '{{.Server.Version}}' 2>&1)"; then
    die 2 "docker engine not reachable (${DOCKER_HOST:-unix:///var/run/docker.sock}): ${engine_error##*$'\n'}
  start it (systemctl start docker, or dockerd &) and make sure this user may use it"
fi

# BuildKit when this machine has it: the classic builder commits a container for every instruction,
# which on fuse-overlayfs costs ~4 s each even for ENV or CMD (measured: 64 s against 6 s for the
# postgres image). A docker CLI >= 23 needs the buildx plugin for BuildKit; an older CLI (Debian's
# docker.io 20.10, /usr/bin/docker) has it built in. BACKUPCTL_DOCKER_BUILDER=classic|buildkit forces one.
pick_builder() {
    local cli version
    case "${BACKUPCTL_DOCKER_BUILDER:-}" in
        classic) build_cmd=(env DOCKER_BUILDKIT=0 docker build --force-rm); builder=classic; return ;;
        buildkit|'') ;;
        *) die 2 "BACKUPCTL_DOCKER_BUILDER must be classic or buildkit" ;;
    esac
    if docker buildx version >/dev/null 2>&1; then
        build_cmd=(env DOCKER_BUILDKIT=1 docker build --progress=plain); builder="BuildKit (docker buildx)"
        return
    fi
    for cli in $(type -ap docker) /usr/bin/docker; do
        version="$("$cli" --version 2>/dev/null | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')"
        if [ -n "$version" ] && [ "$version" -lt 23 ]; then
            build_cmd=(env DOCKER_BUILDKIT=1 "$cli" build --progress=plain); builder="BuildKit ($cli)"
            return
        fi
    done
    [ "${BACKUPCTL_DOCKER_BUILDER:-}" != buildkit ] ||
        die 2 "BuildKit unavailable: install the docker buildx plugin (or Debian's docker.io CLI)"
    build_cmd=(env DOCKER_BUILDKIT=0 docker build --force-rm)
    builder="classic builder (slow here: ~4 s per Dockerfile instruction; install docker buildx)"
}

# Two test sessions on one machine must not debootstrap twice or race on the tags.
lock_file="${BACKUPCTL_IMAGES_LOCK:-${TMPDIR:-/tmp}/backupctl-build-images.lock}"
if ! { exec 9>>"$lock_file"; } 2>/dev/null; then
    echo "build-images: warning: cannot open the lock $lock_file; building without it" >&2
elif ! flock -n 9; then
    echo "build-images: waiting for another build (lock $lock_file)"
    flock 9
fi

# --- inputs -----------------------------------------------------------------------------------------
# Hash of every file in a build context that can influence the image (name, mode, bytes); READMEs and
# Python caches are not inputs.
hash_context() {
    local dir="$1" file
    (
        cd "$dir"
        find . -type f ! -name '*.md' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
            while IFS= read -r -d '' file; do
                printf '%s %s\0' "$file" "$(stat -c %a "$file")"
                cat "$file"
            done
    ) | sha256sum | cut -d' ' -f1
}
image_label() { docker image inspect -f "{{ index .Config.Labels \"$label_key\" }}" "$1" 2>/dev/null || true; }
image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }
inputs_of() {
    if [ "$1" = base ]; then
        hash_context "$docker_dir/base"
    elif [ -n "${suite_of[$1]:-}" ]; then
        printf '%s %s' "${suite_of[$1]}" "$(hash_context "$docker_dir/base")" | sha256sum | cut -d' ' -f1
    else   # the base's id, the context and any build arguments
        printf '%s %s%s' "$(image_id "${tags[$(base_for "$1")]}")" "$(hash_context "$docker_dir/${dirs[$1]}")" \
            "${build_args[$1]:+ ${build_args[$1]}}" | sha256sum | cut -d' ' -f1
    fi
}

# The Debian mirror apt already uses (one-line *.list or deb822 *.sources): the first "deb" entry for
# bookworm with the main component that is not the security archive.
find_mirror() {
    local files=() file
    for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$file" ] && files+=("$file")
    done
    [ ${#files[@]} -gt 0 ] || return 0
    awk '
        function has(list, word,   n, i, parts) {
            n = split(list, parts, /[ \t]+/)
            for (i = 1; i <= n; i++) if (parts[i] == word) return 1
            return 0
        }
        function flush() {
            if (types != "" && has(types, "deb") && has(suites, "bookworm") && has(comps, "main") \
                && enabled != "no" && uris !~ /security/ && !found) { split(uris, u, /[ \t]+/); print u[1]; found = 1; exit }
            types = uris = suites = comps = enabled = ""
        }
        FNR == 1 { flush() }
        FILENAME ~ /\.sources$/ {
            if ($0 ~ /^[ \t]*$/) { flush(); next }
            if ($0 ~ /^#/) next
            key = tolower($1); sub(/:$/, "", key); value = $0; sub(/^[^:]*:[ \t]*/, "", value)
            if (key == "types") types = value; else if (key == "uris") uris = value
            else if (key == "suites") suites = value; else if (key == "components") comps = value
            else if (key == "enabled") enabled = tolower(value)
            next
        }
        /^deb[ \t]/ {
            line = $0; sub(/\[[^]]*\]/, "", line); n = split(line, f, /[ \t]+/)
            if (f[3] == "bookworm" && f[2] !~ /security/) { for (i = 4; i <= n; i++) if (f[i] == "main") { print f[2]; found = 1; exit } }
        }
        END { if (!found) flush() }
    ' "${files[@]}"
}

# --- build ------------------------------------------------------------------------------------------
build_base() {
    [ "$(id -u)" -eq 0 ] || die 2 "building ${tags[$1]} needs root (debootstrap, chroot): run this with sudo"
    command -v debootstrap >/dev/null || die 2 "debootstrap not found: apt-get install debootstrap"
    if [ -z "$mirror" ]; then
        mirror="$(find_mirror)"
        [ -n "$mirror" ] || die 2 "no Debian bookworm mirror in /etc/apt/sources.list{,.d}: pass --mirror URL"
    fi
    "$docker_dir/base/build-base.sh" "${tags[$1]}" "$mirror" "${suite_of[$1]}" "$label_key=$2"
}

build_log=""
trap 'rm -f "$build_log"' EXIT
build_service() {
    local name="$1" inputs="$2" no_cache=() args
    ! forced "$name" || no_cache=(--no-cache)
    read -r -a args <<<"--build-arg BASE=${tags[$(base_for "$name")]} ${build_args[$name]:-}"
    rm -f "$build_log"
    build_log="$(mktemp)"
    if ! "${build_cmd[@]}" "${no_cache[@]}" "${args[@]}" --label "$label_key=$inputs" -t "${tags[$name]}" \
            -f "$docker_dir/${dirs[$name]}/Dockerfile" "$docker_dir/${dirs[$name]}" >"$build_log" 2>&1; then
        tail -n 40 "$build_log" >&2
        die 1 "$name: docker build failed"
    fi
}

total_started=$(now)
stale=0
for name in "${order[@]}"; do
    wants "$name" || continue
    started=$(now)
    inputs="$(inputs_of "$name")"
    if ! forced "$name" && [ "$(image_label "${tags[$name]}")" = "$inputs" ]; then
        printf '%-13s %-32s current   %6s s\n' "$name" "${tags[$name]}" "$(seconds_since "$started")"
        continue
    fi
    if [ "$check" -eq 1 ]; then
        printf '%-13s %-32s stale\n' "$name" "${tags[$name]}"
        stale=1
        continue
    fi
    if [ -z "${suite_of[$name]:-}" ] && [ -z "${builder:-}" ]; then
        pick_builder
        echo "builder: $builder"
    fi
    if [ -n "${suite_of[$name]:-}" ]; then build_base "$name" "$inputs"; else build_service "$name" "$inputs"; fi
    printf '%-13s %-32s built     %6s s\n' "$name" "${tags[$name]}" "$(seconds_since "$started")"
done

[ "$check" -eq 0 ] || exit "$stale"

# Images these tags pointed to before are untagged now: remove them, and any older leftover of this
# script (a base whose children were not rebuilt yet, an interrupted run). Newest first, so children
# go before their parents; one still used by a container stays. Safe: no build runs while we hold the lock.
for _ in 1 2; do
    for old_id in $(docker images --quiet --no-trunc --filter dangling=true --filter "label=$label_key"); do
        docker image rm "$old_id" >/dev/null 2>&1 || true
    done
done

printf 'total %43s %6s s\n' "" "$(seconds_since "$total_started")"
