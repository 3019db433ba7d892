#!/usr/bin/env bash
# The README's first install, step by step as a newcomer on Debian follows it, against a
# throwaway slapd and the mailcow emulator (`demo --serve`, on 127.0.0.1 only):
#
#   cross/walkthrough.sh            (as root; a throwaway machine or container)
#
# 1. the x86_64 archive from dist/ (cross/build.sh x86_64 makes it when missing): verified
#    with `sha256sum -c`, unpacked, its binary copied to /usr/bin ("Install on a NAS or router")
# 2. `init -c /etc/mailcow-ldap-sync/config.json`: directory 0700, file 0600
# 3. the edit: the template's LDAP and mailcow settings set to the servers' (python3, as an
#    editor would; nothing else changed)
# 4. `check -c …` (exit 0), `--dry-run -v -c …` (nothing written), a pass `-c …` (all created)
# 5. the cron line without `cd` and without `-c`, in cron's environment (`env -i`, HOME=/root,
#    working directory /, sh -c): `/usr/bin/mailcow-ldap-sync -q` twice, nothing printed,
#    exit 0, the state file next to the config; then `status` without `-c`
# Then removes what it made: /etc/mailcow-ldap-sync and /usr/bin/mailcow-ldap-sync. It
# refuses to run when either exists already (it would overwrite an installation).
# Prints each step and `walkthrough: ok` at the end; exits 1 at the first failed step.
set -euo pipefail
cd "$(dirname "$0")/.."
. cross/common.sh

[ "$(id -u)" -eq 0 ] || die "run as root (it installs to /usr/bin and /etc, and removes them again)"
etc=/etc/mailcow-ldap-sync bin=/usr/bin/mailcow-ldap-sync
[ ! -e "$etc" ] || die "$etc exists: not on a machine with an installation"
[ ! -e "$bin" ] || die "$bin exists: not on a machine with an installation"

T=mailcow-ldap-sync-$version-$(triple x86_64)
[ -f "dist/$T.tar.gz" ] || cross/build.sh x86_64
start=$(date +%s)

# The servers: slapd and the emulator, held while $work/servers/hold exists.
work=$(mktemp -d /tmp/walkthrough.XXXXXX)
cleanup() {
    rm -f "$work/servers/hold"
    wait
    rm -rf "$work" "$etc" "$bin"
}
trap cleanup EXIT
cargo build --locked -q -p sync-test-support --bin demo
"$CARGO_TARGET_DIR/debug/demo" --serve "$work/servers" >"$work/serve.out" 2>"$work/serve.err" &
for _ in $(seq 120); do
    [ -e "$work/servers/hold" ] && break
    sleep 0.5
done
[ -e "$work/servers/hold" ] || { cat "$work/serve.err" >&2; die "demo --serve did not come up"; }
servers="$work/servers/servers.json"

step() { echo "== $*"; }
fail() { echo "walkthrough: FAILED: $*" >&2; exit 1; }
mode_of() { stat -c %a "$1"; }

step "install from the archive (README: Install on a NAS or router)"
(
    cd "$work"
    cp "$OLDPWD/dist/$T.tar.gz" "$OLDPWD/dist/$T.tar.gz.sha256" .
    sha256sum -c "$T.tar.gz.sha256"
    tar -xzf "$T.tar.gz" && cp "$T/mailcow-ldap-sync" /usr/bin/
) || fail "install"
command -v mailcow-ldap-sync >/dev/null || fail "mailcow-ldap-sync is not on PATH"
mailcow-ldap-sync --version

step "mailcow-ldap-sync init -c $etc/config.json"
(cd "$work" && mailcow-ldap-sync init -c "$etc/config.json") || fail "init"
[ "$(mode_of "$etc")" = 700 ] || fail "$etc is mode $(mode_of "$etc"), not 700"
[ "$(mode_of "$etc/config.json")" = 600 ] || fail "config.json is mode $(mode_of "$etc/config.json"), not 600"

step "edit $etc/config.json: LDAP and mailcow settings"
python3 - "$etc/config.json" "$servers" <<'EOF' || fail "edit"
import json, sys
path, servers = sys.argv[1], json.load(open(sys.argv[2]))
c = json.load(open(path))
c["ldap"].update(uri=servers["ldap_uri"], ca_file=servers["ldap_ca_file"], bind_dn=servers["bind_dn"],
                 bind_pw=servers["bind_pw"], user_search_base=servers["user_search_base"])
c.update(mailcow_host=servers["mailcow_host"], mailcow_api_key=servers["mailcow_api_key"],
         mailcow_ca_file=servers["mailcow_ca_file"])
open(path, "w").write(json.dumps(c, indent=2) + "\n")
EOF
[ "$(mode_of "$etc/config.json")" = 600 ] || fail "the edit changed the mode"

step "mailcow-ldap-sync check -c $etc/config.json"
(cd "$work" && mailcow-ldap-sync check -c "$etc/config.json") || fail "check exited $?"

step "mailcow-ldap-sync --dry-run -v -c $etc/config.json"
(cd "$work" && mailcow-ldap-sync --dry-run -v -c "$etc/config.json") 2>&1 | tail -3
[ ! -e "$etc/mailcow.sqlite3" ] || fail "the dry-run wrote the state file"

step "mailcow-ldap-sync -c $etc/config.json"
(cd "$work" && mailcow-ldap-sync -c "$etc/config.json") 2>&1 | tee "$work/pass.txt" || fail "the pass failed"
grep -q "25 created" "$work/pass.txt" || fail "the first pass did not create the 25 mailboxes"
[ -f "$etc/mailcow.sqlite3" ] || fail "no state file next to the config"

cron_line='*/5 * * * * /usr/bin/mailcow-ldap-sync -q'
step "the cron line, as cron runs it: $cron_line"
for n in 1 2; do
    (cd / && env -i HOME=/root LOGNAME=root SHELL=/bin/sh PATH=/usr/bin:/bin \
        /bin/sh -c '/usr/bin/mailcow-ldap-sync -q' >"$work/cron.out" 2>&1) || fail "cron pass $n exited $?: $(cat "$work/cron.out")"
    [ ! -s "$work/cron.out" ] || fail "cron pass $n printed (cron would mail it): $(cat "$work/cron.out")"
done
echo "  two passes, exit 0, nothing printed"
[ ! -e /config.json ] && [ ! -e /root/config.json ] || fail "a template was written outside $etc"

step "mailcow-ldap-sync status (no -c, from /)"
(cd / && mailcow-ldap-sync status) | tee "$work/status.txt"
grep -q "managed mailboxes: 25" "$work/status.txt" || fail "status does not show 25 managed mailboxes"

echo "walkthrough: ok in $(($(date +%s) - start)) s (removing $etc and $bin)"
