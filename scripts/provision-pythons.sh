#!/usr/bin/env bash
# Provision the CPython interpreters memspy's tests run against, into a cache folder outside the
# clone, idempotently. Nothing here touches the system's apt configuration: apt-get runs with its
# own sources list, state folder and cache (-o Dir::...), packages are fetched with
# `apt-get download` and unpacked with `dpkg -x`.
#
#   scripts/provision-pythons.sh            # provision what is missing, print the manifest
#   MEMSPY_PYTHONS=/some/dir scripts/...    # cache folder (default ~/.cache/memspy/pythons)
#
# The result is "$MEMSPY_PYTHONS/manifest.tsv", one interpreter per line:
#   label <TAB> exact version <TAB> path of the executable <TAB> libpython linkage (shared|static)
# Tests read that file. Interpreters that could not be provisioned are reported on stderr and left
# out of the manifest; the tests then skip them loudly (and fail under CI=true).
set -euo pipefail

cache="${MEMSPY_PYTHONS:-$HOME/.cache/memspy/pythons}"
mkdir -p "$cache"
manifest_tmp="$cache/manifest.tsv.tmp"
: >"$manifest_tmp"
failed=0

log() { printf 'provision: %s\n' "$*" >&2; }

# Record one interpreter in the manifest after checking that it really runs.
add() { # label exe linkage
    local label=$1 exe=$2 linkage=$3 version
    if ! version=$("$exe" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null); then
        log "$label: $exe does not run"
        failed=$((failed + 1))
        return
    fi
    printf '%s\t%s\t%s\t%s\n' "$label" "$version" "$exe" "$linkage" >>"$manifest_tmp"
}

# --- pyenv builds (shared libpython), when the image has them --------------------------------
pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
for v in 3.8.18 3.9.18 3.10.13 3.11.7 3.12.1 3.13.0; do
    exe="$pyenv_root/versions/$v/bin/python${v%.*}"
    if [ -x "$exe" ]; then
        add "pyenv-$v" "$exe" shared
    else
        log "pyenv-$v: not installed at $exe"
        failed=$((failed + 1))
    fi
done

# --- Debian builds (static libpython in a non-PIE executable) ---------------------------------
need_patchelf() {
    command -v patchelf >/dev/null && return 0
    log "installing patchelf (apt-get install patchelf)"
    if [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q patchelf >/dev/null 2>&1; }
    fi
    command -v patchelf >/dev/null
}

# apt-get with a private configuration for one suite.
suite_apt() { # suite cmd args...
    local suite=$1; shift
    local d="$cache/apt/$suite"
    apt-get -q \
        -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent \
        -o Dir::State::Lists="$d/lists" -o Dir::State::status=/dev/null \
        -o Dir::Cache="$d/cache" -o Debug::NoLocking=1 -o Acquire::Languages=none \
        -o APT::Architecture=amd64 "$@"
}

# Download and unpack pythonX.Y from a Debian suite into "$cache/debian-<suite>-X.Y".
# With own_libc=1 the suite's libc6 is unpacked beside it and the binary is patched to use it.
# Extra packages (libraries the suite's extension modules need and this machine lacks, such as
# bullseye's libffi7 for _ctypes) are unpacked beside it too, and the extension modules are
# pointed at them.
debian_python() { # suite minor own_libc [extra packages...]
    local suite=$1 minor=$2 own_libc=$3
    shift 3
    local extra=("$@")
    local root="$cache/debian-$suite-$minor"
    local exe="$root/usr/bin/python$minor"
    local stamp="own_libc=$own_libc extra=${extra[*]}"
    if [ -x "$exe" ] && [ "$(cat "$root/.complete" 2>/dev/null)" = "$stamp" ]; then
        add "debian-$suite-$minor" "$exe" static
        return
    fi
    log "debian-$suite-$minor: fetching from deb.debian.org ($suite)"
    local d="$cache/apt/$suite"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$d/sources.list"
    if ! suite_apt "$suite" update >"$d/update.log" 2>&1; then
        log "debian-$suite-$minor: apt-get update failed (see $d/update.log)"
        failed=$((failed + 1))
        return
    fi
    local pkgs=("python$minor-minimal" "libpython$minor-minimal" "libpython$minor-stdlib" "${extra[@]}")
    [ "$own_libc" = 1 ] && pkgs+=(libc6)
    rm -f "$d/debs"/*.deb
    if ! (cd "$d/debs" && suite_apt "$suite" download "${pkgs[@]}" >"$d/download.log" 2>&1); then
        log "debian-$suite-$minor: apt-get download failed (see $d/download.log)"
        failed=$((failed + 1))
        return
    fi
    rm -rf "$root"
    mkdir -p "$root"
    local deb
    for deb in "$d/debs"/*.deb; do dpkg -x "$deb" "$root"; done
    if [ "$own_libc" = 1 ]; then
        if ! need_patchelf; then
            log "debian-$suite-$minor: patchelf is missing and could not be installed"
            failed=$((failed + 1))
            return
        fi
        local libdir="$root/usr/lib/x86_64-linux-gnu"
        patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" \
            --set-rpath "$libdir:/lib/x86_64-linux-gnu" "$exe"
    fi
    if [ "${#extra[@]}" -gt 0 ]; then
        if ! need_patchelf; then
            log "debian-$suite-$minor: patchelf is missing and could not be installed"
            failed=$((failed + 1))
            return
        fi
        local so
        for so in "$root"/usr/lib/python"$minor"/lib-dynload/*.so; do
            patchelf --set-rpath "$root/usr/lib/x86_64-linux-gnu" "$so"
        done
    fi
    echo "$stamp" >"$root/.complete"
    add "debian-$suite-$minor" "$exe" static
}

debian_python bullseye 3.9 0 libffi7
# bookworm's 3.11 is the machine's own /usr/bin/python3.11 when it is Debian's build.
if [ -x /usr/bin/python3.11 ] && dpkg -S /usr/bin/python3.11 >/dev/null 2>&1; then
    add debian-bookworm-3.11 /usr/bin/python3.11 static
else
    debian_python bookworm 3.11 0
fi
debian_python trixie 3.13 1
debian_python sid 3.14 1
debian_python sid 3.15 1

mv "$manifest_tmp" "$cache/manifest.tsv"
log "$(wc -l <"$cache/manifest.tsv") interpreters in $cache/manifest.tsv ($failed missing)"
cat "$cache/manifest.tsv"
