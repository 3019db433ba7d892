#!/usr/bin/env bash
# Write THIRD-PARTY-NOTICES.txt: the licences of the code linked into the mailcow-ldap-sync
# binary, for every archive and package (cross/build.sh, cross/package.sh, the OpenWrt and
# Alpine recipes ship it).
#
#   cross/notices.sh            write THIRD-PARTY-NOTICES.txt in the repository root
#   cross/notices.sh --check    exit 1 if that file is not what this script would write now
#   cross/notices.sh -o FILE    write FILE instead
#
# Which crates: the main crate's dependency tree for each of the three musl targets cross/
# builds (the union; they link the same crates today), normal dependencies only:
# `cargo tree -e normal,no-proc-macro --target <triple> -p mailcow-ldap-sync`. So no dev- or
# build-dependencies (cc, pkg-config: tools of the build) and no proc-macro crates
# (serde_derive, argh_derive, tokio-macros, and syn/quote under them: they run in the compiler
# and leave no code in the binary). cargo tree applies the features as the build resolves
# them (resolver 2); `cargo metadata`'s resolve unifies them with the dev-dependencies' and
# would list crates the binary does not contain (cookie_store, indexmap). `cargo metadata`
# gives each crate's declared licence and its source directory.
# The licence texts are the LICENSE*/COPYING*/NOTICE* files of each crate's source in the
# cargo registry (~/.cargo/registry/src/*/<crate>-<version>/); identical texts are printed
# once with the crates that ship them. Also named: SQLite (public domain, compiled into the
# binary by libsqlite3-sys's "bundled" feature), the Rust standard library and musl libc
# (both linked statically).
#
# CROSS_FEATURES (as cross/build.sh takes it, e.g. `gzip`) adds the crates of those features;
# the committed file is for the default features.
# Needs the crates downloaded (`cargo fetch --locked`, which any build does) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."

out=THIRD-PARTY-NOTICES.txt check=0
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        -o) out=$2; shift ;;
        -h | --help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "${0##*/}: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for triple in x86_64-unknown-linux-musl aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf; do
    cargo tree --locked -e normal,no-proc-macro --target "$triple" -p mailcow-ldap-sync \
        ${CROSS_FEATURES:+--features "$CROSS_FEATURES"} --prefix none -f '{p}'
done | awk '{ sub(/^v/, "", $2); print $1, $2 }' | sort -u >"$tmp.tree"
cargo metadata --format-version 1 --locked --filter-platform x86_64-unknown-linux-musl \
    --filter-platform aarch64-unknown-linux-musl --filter-platform armv7-unknown-linux-musleabihf >"$tmp.meta"
python3 - "$tmp" >"$tmp.txt" <<'EOF'
import glob, hashlib, json, os, re, sys

base = sys.argv[1]
tree = {tuple(l.split()) for l in open(base + ".tree") if l.strip()}
meta = json.load(open(base + ".meta"))
by_nv = {(p["name"], p["version"]): p for p in meta["packages"]}
unknown = sorted(nv for nv in tree if nv not in by_nv)
if unknown:
    sys.exit(f"cross/notices.sh: not in cargo metadata: {unknown}")
crates = sorted((by_nv[nv] for nv in tree if not (nv[0] == "mailcow-ldap-sync" and by_nv[nv]["source"] is None)),
                key=lambda p: (p["name"], p["version"]))
texts = {}  # sha256 -> [text, [crate names]]
order = []
missing = []
for p in crates:
    d = os.path.dirname(p["manifest_path"])
    files = sorted(f for pat in ("LICENSE*", "LICENCE*", "COPYING*", "NOTICE*", "COPYRIGHT*")
                   for f in glob.glob(os.path.join(d, pat)) if os.path.isfile(f))
    if not files:
        missing.append(p)
    for f in files:
        text = open(f, encoding="utf-8", errors="replace").read().strip("\n").replace("\r\n", "\n") + "\n"
        # the same licence with other line breaks or indentation counts as the same text
        h = hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
        if h not in texts:
            texts[h] = [text, []]
            order.append(h)
        texts[h][1].append(f"{p['name']} {p['version']} ({os.path.basename(f)})")

w = sys.stdout.write
w("Third-party notices for mailcow-ldap-sync\n")
w("=========================================\n\n")
w("The mailcow-ldap-sync binary (MIT licence, see LICENSE) is one statically linked file.\n")
w("Besides its own code it contains the following, each under its own licence:\n\n")
w("- SQLite, compiled in by the libsqlite3-sys crate (\"bundled\"): SQLite is in the public\n")
w("  domain (https://sqlite.org/copyright.html); no licence text applies. (The Alpine package\n")
w("  built by cross/alpine/APKBUILD links Alpine's system SQLite instead.)\n")
w("- The Rust standard library (core, alloc, std and their dependencies), under\n")
w("  \"MIT OR Apache-2.0\"; see https://github.com/rust-lang/rust/blob/master/COPYRIGHT.\n")
w("- musl libc (in the static binaries of cross/build.sh and its packages), under the MIT\n")
w("  licence; see https://git.musl-libc.org/cgit/musl/tree/COPYRIGHT.\n")
w(f"- {len(crates)} Rust crates, listed below with their declared licence (SPDX expression),\n")
w("  followed by the licence texts they ship (each text once, with the crates that ship it).\n")
w("  Where a crate offers a choice (\"A OR B\"), it is used under either; all texts are kept.\n\n")
w("Crates linked into the binary (generated by cross/notices.sh from Cargo.lock)\n")
w("-----------------------------------------------------------------------------\n\n")
width = max(len(f"{p['name']} {p['version']}") for p in crates)
for p in crates:
    w(f"{(p['name'] + ' ' + p['version']).ljust(width)}  {p['license'] or p.get('license_file') or 'unknown'}\n")
if missing:
    w("\nThese crates ship no licence file in their published source; their declared licence\n")
    w("above applies, with the standard text of that licence:\n")
    for p in missing:
        w(f"  {p['name']} {p['version']}: {p['license']}\n")
for h in order:
    text, names = texts[h]
    w("\n" + "=" * 78 + "\n")
    w("Shipped by: " + ", ".join(names) + "\n")
    w("=" * 78 + "\n\n")
    w(text)
EOF
rm -f "$tmp.tree" "$tmp.meta"
if [ $check = 1 ]; then
    if ! cmp -s "$tmp.txt" "$out"; then
        echo "${0##*/}: $out is out of date (the dependency tree changed): run cross/notices.sh and commit it" >&2
        diff -u "$out" "$tmp.txt" | head -20 >&2 || true
        rm -f "$tmp.txt"
        exit 1
    fi
    rm -f "$tmp.txt"
    echo "$out is up to date"
else
    mv "$tmp.txt" "$out"
    chmod 0644 "$out"
    echo "wrote $out ($(wc -c <"$out") bytes, $(grep -c '^Shipped by: ' "$out") licence texts)"
fi
