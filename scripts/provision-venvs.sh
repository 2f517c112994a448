#!/usr/bin/env bash
# Provision the Python packages memspy's tests use, into virtual environments cached outside the
# clone, idempotently (each is rebuilt when its pinned set changes or it is incomplete):
#
#   mprof   memory_profiler and matplotlib: the real `mprof plot` reads memspy's .dat export,
#           and memory_profiler's own line-by-line numbers are the reference of a test
#   web     Flask, gunicorn and gevent: the service the memory-attribution tests record
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

log "venvs in $cache ($failed missing)"
[ "$failed" = 0 ] || [ "${CI:-}" != true ]
