#!/usr/bin/env bash
# Provision Debian bookworm's Chromium for the HTML report tests, into a cache folder outside the
# clone, idempotently. Like provision-pythons.sh, nothing here touches the system's apt
# configuration: apt-get runs with its own sources list, lists folder and cache (-o Dir::...),
# packages are fetched with `apt-get download` and unpacked with `dpkg -x`.
#
#   scripts/provision-chromium.sh           # provision if missing; last stdout line = binary path
#   MEMSPY_CACHE=/some/dir scripts/...      # cache root (default ~/.cache/memspy)
#
# The printed path is a wrapper script that sets LD_LIBRARY_PATH for the shared libraries that
# were unpacked beside Chromium, then runs it. As root, Chromium needs --no-sandbox.
set -euo pipefail

cache="${MEMSPY_CACHE:-$HOME/.cache/memspy}/chromium"
root="$cache/root"            # packages are unpacked here
wrapper="$cache/chromium"     # what we print
stamp="$cache/.complete"
d="$cache/apt"                # private apt state
log() { printf 'provision-chromium: %s\n' "$*" >&2; }

# One provisioner at a time (tests may call this script in parallel); the lock ends with us.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

# Fast path: already provisioned and the wrapper still runs.
if [ -f "$stamp" ] && [ -x "$wrapper" ] && "$wrapper" --version >/dev/null 2>&1; then
    log "already provisioned: $(cat "$stamp")"
    echo "$wrapper"
    exit 0
fi

# apt-get / apt-cache with a private configuration for bookworm (+ its security updates, which
# carry the current Chromium). APT::Sandbox::User=root lets apt write into a root-owned cache.
opts=(-o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o Debug::NoLocking=1
      -o Acquire::Languages=none -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
priv_apt() { apt-get -q "${opts[@]}" -o Dir::State::status=/dev/null "$@"; }

# Used only if the private route fails: install Debian's chromium system-wide (root only).
fallback() {
    log "$1; falling back to 'apt-get install -y chromium'"
    [ "$(id -u)" = 0 ] || { log "not root, cannot fall back"; exit 1; }
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium ||
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }; } >&2
    command -v chromium
    exit 0
}

log "fetching chromium from deb.debian.org (bookworm) into $cache"
rm -rf "$root" "$d/debs" "$stamp"
mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs" "$root"
{
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main"
} >"$d/sources.list"
priv_apt update >"$d/update.log" 2>&1 || fallback "apt-get update failed (see $d/update.log)"

# Candidate packages: what `apt-get install chromium` would add to THIS machine. This dry run
# reads the real dpkg status (read-only) so it lists only packages the machine lacks.
mapfile -t cands < <(apt-get -s -q "${opts[@]}" --no-install-recommends install chromium 2>/dev/null |
    awk '$1 == "Inst" { print $2 }')
[ "${#cands[@]}" -gt 0 ] || fallback "could not resolve chromium's dependencies"
(cd "$d/debs" && priv_apt download "${cands[@]}" >"$d/download.log" 2>&1) ||
    fallback "apt-get download failed (see $d/download.log)"

# Which candidate .deb ships which file, so that a missing soname can be traced to its package.
for deb in "$d/debs"/*.deb; do
    case "$deb" in */chromium_*.deb | */chromium-common_*.deb) continue ;; esac # big, and unpacked anyway
    dpkg-deb --fsys-tarfile "$deb" | tar -t | sed "s|^|$deb |"
done >"$d/index"

# Unpack chromium itself, then iterate: run ldd on its executables and libraries, unpack the
# packages that ship whatever is "not found", until nothing is.
unpack() { log "unpacking $(basename "$1")"; dpkg -x "$1" "$root"; }
for deb in "$d/debs"/chromium_*.deb "$d/debs"/chromium-common_*.deb; do unpack "$deb"; done
libpath() { find "$root" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:; }
for _ in 1 2 3 4 5 6 7 8; do
    missing=$(for f in "$root"/usr/lib/chromium/chromium "$root"/usr/lib/chromium/chrome_crashpad_handler \
        "$root"/usr/lib/chromium/*.so*; do LD_LIBRARY_PATH="$(libpath)" ldd "$f" 2>/dev/null || true; done |
        awk '/not found/ && $2 == "=>" { print $1 }' | sort -u)
    [ -z "$missing" ] && break
    for so in $missing; do
        deb=$(awk -v f="/$so" 'substr($2, length($2) - length(f) + 1) == f { print $1; exit }' "$d/index")
        [ -n "$deb" ] || fallback "no candidate package ships $so"
        unpack "$deb"
    done
done
[ -z "$missing" ] || fallback "still missing after 8 rounds: $missing"

# The wrapper: our library folders first, then whatever the caller had.
cat >"$wrapper" <<EOF
#!/bin/sh
# Generated by scripts/provision-chromium.sh: runs the unpacked Debian Chromium.
LD_LIBRARY_PATH="$(libpath)\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$root/usr/lib/chromium/chromium" "\$@"
EOF
chmod +x "$wrapper"
version=$("$wrapper" --version 2>/dev/null) || fallback "the unpacked chromium does not run"

# The .debs and apt lists (~140 MB) are not needed any more; a refresh fetches them anew.
rm -rf "$d"
echo "$version" >"$stamp"
log "ready: $version ($(du -sh "$cache" | cut -f1) in $cache)"
echo "$wrapper"
