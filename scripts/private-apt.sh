# Sourced by provision-go.sh and provision-tmux.sh: apt-get with a private state in "$d" (its
# own sources list for Debian bookworm, lists folder and cache; -o Dir::...), so that nothing
# of the system's apt configuration is read or changed. Needs $d, $root, $stamp and log().

opts=(-o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/nonexistent
      -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o Debug::NoLocking=1
      -o Acquire::Languages=none -o APT::Architecture=amd64 -o APT::Sandbox::User=root
      -o Dir::State::status=/dev/null)
priv_apt() { apt-get -q "${opts[@]}" "$@"; }

# A fresh state and unpack folder, and the package lists of bookworm.
priv_apt_fresh() {
    rm -rf "$root" "$d" "$stamp"
    mkdir -p "$d/lists/partial" "$d/cache/archives/partial" "$d/debs" "$root"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
        >"$d/sources.list"
    priv_apt update >"$d/update.log" 2>&1 || { log "apt-get update failed (see $d/update.log)"; exit 1; }
}
