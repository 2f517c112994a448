#!/usr/bin/env bash
# Provision the Python packages memspy's tests use, into virtual environments cached outside the
# clone, idempotently (each is rebuilt when its pinned set changes or it is incomplete):
#
#   mprof   memory_profiler and matplotlib: the real `mprof plot` reads memspy's .dat export,
#           and memory_profiler's own line-by-line numbers are the reference of a test
#   web     Flask, gunicorn and gevent: the service the memory-attribution tests record
#   sites/gevent-cpXY[-glV]
#           gevent and greenlet's PyPI wheels for CPython 3.XY, unpacked into a folder a test
#           puts on PYTHONPATH (the static Debian interpreters have no venv module); the
#           newest greenlet for each minor, and older 3.x releases
#
#   scripts/provision-venvs.sh            # provision what is missing
#   MEMSPY_VENVS=/some/dir scripts/...    # cache folder (default ~/.cache/memspy/venvs)
#
# Needs the interpreters of scripts/provision-pythons.sh (run first) and PyPI.
set -euo pipefail

cache="${MEMSPY_VENVS:-$HOME/.cache/memspy/venvs}"
pythons="${MEMSPY_PYTHONS:-$HOME/.cache/memspy/pythons}"
mkdir -p "$cache"
failed=0

log() { printf 'provision-venvs: %s\n' "$*" >&2; }

# The interpreter of a manifest label.
interpreter() { # label
    awk -F'\t' -v l="$1" '$1 == l { print $3 }' "$pythons/manifest.tsv" 2>/dev/null
}

# A venv made with `python -m venv` holding exactly the pinned packages.
venv() { # name python packages...
    local name=$1 python=$2
    shift 2
    local dir="$cache/$name" stamp="$python $*"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.memspy-ready" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    if [ -z "$python" ] || [ ! -x "$python" ]; then
        log "$name: no interpreter to build it with (run scripts/provision-pythons.sh)"
        failed=$((failed + 1))
        return
    fi
    log "$name: installing $* from PyPI"
    rm -rf "$dir"
    if "$python" -m venv "$dir" &&
        "$dir/bin/pip" install --disable-pip-version-check --quiet --timeout 30 --retries 2 "$@"; then
        echo "$stamp" >"$dir/.memspy-ready"
    else
        log "$name: failed"
        rm -rf "$dir"
        failed=$((failed + 1))
    fi
}

py311=$(interpreter pyenv-3.11.7)
# memory_profiler 0.61.0 is the version whose file format src/output/mprof.rs follows.
venv mprof "$py311" memory_profiler==0.61.0 matplotlib==3.11.2
venv web "$py311" Flask==3.1.3 Werkzeug==3.1.9 gunicorn==27.0.1 gevent==26.9.0 greenlet==3.5.6 packaging==26.4

# Wheels for another interpreter, downloaded by the web venv's pip and unpacked into one folder.
site() { # name cp-tag packages...
    local name=$1 tag=$2
    shift 2
    local dir="$cache/sites/$name" stamp="$tag $*"
    if [ -d "$dir" ] && [ "$(cat "$dir/.memspy-ready" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    log "$name: downloading $* for $tag from PyPI"
    rm -rf "$dir" "$dir.wheels"
    mkdir -p "$dir" "$dir.wheels"
    local platforms=()
    for p in manylinux_2_28 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux_2_5 manylinux1; do
        platforms+=(--platform "${p}_x86_64")
    done
    if "$cache/web/bin/pip" download --disable-pip-version-check --quiet --timeout 30 --retries 2 \
        --no-deps --only-binary=:all: "${platforms[@]}" --implementation cp \
        --python-version "${tag#cp}" --abi "$tag" -d "$dir.wheels" "$@" &&
        for w in "$dir.wheels"/*.whl; do "$cache/web/bin/python" -m zipfile -e "$w" "$dir"; done; then
        echo "$stamp" >"$dir/.memspy-ready"
        rm -rf "$dir.wheels"
    else
        log "$name: failed"
        rm -rf "$dir" "$dir.wheels"
        failed=$((failed + 1))
    fi
}

if [ -x "$cache/web/bin/pip" ]; then
    site gevent-cp39 cp39 greenlet==3.2.5 gevent==25.9.1 zope.event==6.0 zope.interface==8.0.1
    site gevent-cp310 cp310 greenlet==3.5.6 gevent==26.9.0 zope.event==6.2 zope.interface==8.6
    for tag in cp311 cp312 cp313 cp314 cp315; do
        site "gevent-$tag" "$tag" greenlet==3.5.6 gevent==26.9.0 zope.event==6.2 zope.interface==8.7
    done
    # Older greenlet releases, whose layouts differ.
    site gevent-cp312-gl3.1.1 cp312 greenlet==3.1.1 gevent==24.11.1 zope.event==6.2 zope.interface==8.7
    site gevent-cp311-gl3.0.3 cp311 greenlet==3.0.3 gevent==24.2.1 zope.event==6.2 zope.interface==8.7
fi

log "venvs in $cache ($failed missing)"
[ "$failed" = 0 ] || [ "${CI:-}" != true ]
