# Shared by the cross/ scripts (sourced, not run). Expects to be in the repository root.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PROFILE:-dist}"

# SQLite compile options for the artefacts. The tool uses plain tables and indexes;
# libsqlite3-sys's "bundled" build turns on full-text search (FTS3/4/5), R-trees, dbstat,
# STAT4, soundex, column metadata and extension loading, none of which it needs. -U undoes
# the crate's -D; the OMITs are ones SQLite documents as working with the amalgamation.
# Saves ~380 KiB per binary (cross/README.md). LIBSQLITE3_FLAGS="" gives the crate defaults.
: "${LIBSQLITE3_FLAGS=-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 -USQLITE_SOUNDEX -USQLITE_ENABLE_COLUMN_METADATA -USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_JSON -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_MEMSTATUS=0}"
export LIBSQLITE3_FLAGS

# armv7: no rust-std is served, so std is built (-Zbuild-std, nightly); zig brings crt1.o,
# hence link-self-contained=no. -A linker-messages: zig's linker notes that
# rustlib/armv7-unknown-linux-musleabihf/lib does not exist, which is expected here.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no -A linker-messages"

version=$(sed -n 's/^version = "\([^"]*\)".*/\1/p' Cargo.toml | head -n 1)

die() { echo "${0##*/}: $*" >&2; exit 1; }

triple() {
    case "$1" in
        x86_64) echo x86_64-unknown-linux-musl ;;
        aarch64) echo aarch64-unknown-linux-musl ;;
        armv7) echo armv7-unknown-linux-musleabihf ;;
        *) die "unknown target '$1' (x86_64, aarch64, armv7)" ;;
    esac
}

# How to run a binary of that target here: natively, or through qemu-user (binfmt_misc is
# not assumed, so qemu is called explicitly).
runner() {
    case "$1" in
        x86_64) echo "" ;;
        aarch64) echo qemu-aarch64-static ;;
        armv7) echo qemu-arm-static ;;
    esac
}

artefact() { echo "dist/mailcow-ldap-sync-$version-$(triple "$1").tar.gz"; }

# The cargo invocation (build or test) for a target: cargo_for <target> <subcommand> <args...>
cargo_for() {
    local t=$1 sub=$2
    shift 2
    # cargo-zigbuild's subcommands: `zigbuild` (what `cargo zigbuild` runs) and `test`
    local zsub=$sub
    [ "$sub" != build ] || zsub=zigbuild
    case "$t" in
        x86_64) cargo "$sub" --locked --target "$(triple "$t")" "$@" ;;
        aarch64) cargo-zigbuild "$zsub" --locked --target "$(triple "$t")" "$@" ;;
        armv7)
            local std=std,panic_abort
            [ "$sub" = test ] && std=std,panic_unwind,test
            # RUST_LIBC_UNSTABLE_MUSL_V1_2_3: the libc crate (std's too, as std is built here)
            # then uses musl 1.2's 64-bit time_t on this 32-bit target. Without it, std calls
            # musl's time32 compatibility symbols (clock_gettime, stat, fstat), and
            # SystemTime::now() fails after 2038-01-19. zig's musl is 1.2.5.
            RUST_LIBC_UNSTABLE_MUSL_V1_2_3=1 RUSTUP_TOOLCHAIN=nightly \
                cargo-zigbuild "$zsub" --locked -Zbuild-std="$std" --target "$(triple "$t")" "$@"
            ;;
    esac
}
