# Shared by the cross/ scripts (sourced, not run). Expects to be in the repository root.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
profile="${PROFILE:-dist}"
# Cargo features of the artefacts (Cargo.toml [features]; e.g. CROSS_FEATURES=gzip); the
# notices follow them (cross/notices.sh).
features="${CROSS_FEATURES:-}"

# SQLite compile options for the artefacts. The tool uses plain tables and indexes;
# libsqlite3-sys's "bundled" build turns on full-text search (FTS3/4/5), R-trees, dbstat,
# STAT4, soundex, column metadata and extension loading, none of which it needs. -U undoes
# the crate's -D; the OMITs are ones SQLite documents as working with the amalgamation.
# Saves ~380 KiB per binary (cross/README.md). LIBSQLITE3_FLAGS="" gives the crate defaults.
: "${LIBSQLITE3_FLAGS=-USQLITE_ENABLE_FTS3 -USQLITE_ENABLE_FTS3_PARENTHESIS -USQLITE_ENABLE_FTS5 -USQLITE_ENABLE_RTREE -USQLITE_ENABLE_DBSTAT_VTAB -USQLITE_ENABLE_STAT4 -USQLITE_SOUNDEX -USQLITE_ENABLE_COLUMN_METADATA -USQLITE_ENABLE_LOAD_EXTENSION -DSQLITE_OMIT_LOAD_EXTENSION -DSQLITE_OMIT_DEPRECATED -DSQLITE_OMIT_JSON -DSQLITE_OMIT_SHARED_CACHE -DSQLITE_DEFAULT_MEMSTATUS=0 -USQLITE_ENABLE_API_ARMOR -USQLITE_USE_URI -DSQLITE_OMIT_PROGRESS_CALLBACK -DSQLITE_MAX_EXPR_DEPTH=0 -DSQLITE_LIKE_DOESNT_MATCH_BLOBS -DSQLITE_DQS=0}"
export LIBSQLITE3_FLAGS

# armv7: no rust-std is served, so std is built (-Zbuild-std, nightly); zig brings crt1.o,
# hence link-self-contained=no. -A linker-messages: zig's linker notes that
# rustlib/armv7-unknown-linux-musleabihf/lib does not exist, which is expected here.
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUSTFLAGS="-C link-self-contained=no -A linker-messages"

# The release builds (cargo_for ... build) of all three targets build std as armv7 does:
# nightly -Zbuild-std=std,panic_abort, zig as C compiler and linker (it brings crt1.o and
# libunwind, hence link-self-contained=no). With panic=abort nothing unwinds, so neither the
# Rust code (std included) nor the C parts (SQLite, ring) get unwind tables (.eh_frame,
# .gcc_except_table; .ARM.exidx on armv7): a panic still prints its message and aborts, only
# RUST_BACKTRACE has no frames to show. armv7 is compiled as Thumb-2 (std too, as it is
# built here; C with -mthumb). Sizes per step: cross/README.md. Tests (cargo_for ... test)
# keep their unwinding std and these flags off. CROSS_UNWIND_TABLES=1 keeps the tables,
# CROSS_THUMB=0 builds armv7 as A32 (to measure, or to compare).
#
# std's features (-Zbuild-std-features, dist_std_features): cargo builds std with
# `panic-unwind` and `backtrace` unless told otherwise. `backtrace` is the symbolizer
# (gimli, addr2line, object, rustc-demangle: ~96 KiB on armv7) that turns a panic's stack
# into names; in a stripped binary without unwind tables it has neither frames nor names to
# show (RUST_BACKTRACE=1 printed "stack backtrace:" and nothing under it). Without it a
# panic prints the same message; only the "note: run with `RUST_BACKTRACE=1`" hint under it
# goes. `panic-unwind` is not linked with panic=abort. `optimize_for_size` picks std's small
# algorithms that give the same results: the sorts (stable sorts give the one stable
# order; unstable sorts here only order whole values, so equal elements are identical),
# integer formatting, float parsing without its fast path (still correctly rounded).
# CROSS_STD_FEATURES=panic-unwind,backtrace gives cargo's default std back (to compare).
#
# -C relocation-model=static: the three binaries are static, non-PIE executables (ELF type
# EXEC, loaded at the address they were linked for), so position-independent code buys
# nothing; static addressing is smaller (~19 KiB on armv7). CROSS_RELOCATION_STATIC=0
# keeps rustc's default (pic). CROSS_RUSTFLAGS adds flags (to measure others).
dist_std_features() { echo "${CROSS_STD_FEATURES-optimize_for_size}"; }
dist_rustflags() {
    local f="-C link-self-contained=no -A linker-messages"
    [ "${CROSS_UNWIND_TABLES:-0}" = 1 ] || f="$f -C force-unwind-tables=no"
    if [ "$1" = armv7 ]; then
        [ "${CROSS_THUMB:-1}" = 0 ] || f="$f -C target-feature=+thumb-mode"
    fi
    # Panic messages without file:line (about 70-90 KiB a target): a panic aborts anyway,
    # and its message still says what went wrong.
    [ "${CROSS_LOCATION_DETAIL:-0}" = 1 ] || f="$f -Zlocation-detail=none"
    [ "${CROSS_RELOCATION_STATIC:-1}" = 0 ] || f="$f -C relocation-model=static"
    echo "$f${CROSS_RUSTFLAGS:+ $CROSS_RUSTFLAGS}"
}
dist_cflags() {
    local f=""
    [ "${CROSS_UNWIND_TABLES:-0}" = 1 ] || f="-fno-asynchronous-unwind-tables -fno-unwind-tables"
    [ "$1" != armv7 ] || [ "${CROSS_THUMB:-1}" = 0 ] || f="$f -mthumb"
    echo "$f"
}

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

# Whether the nightly toolchain with rust-src is here (std built for each target).
# CROSS_STABLE=1 takes the stable fallback on purpose (to test it).
nightly_ready() {
    [ "${CROSS_STABLE:-0}" != 1 ] && rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'
}

# The cargo invocation (build or test) for a target: cargo_for <target> <subcommand> <args...>
# Builds take the size-tuned path (nightly -Zbuild-std, zig) when nightly with rust-src is
# here; x86_64 and aarch64 fall back to stable's prebuilt std otherwise (larger: unwind
# tables, about 0.5 MiB), armv7 has no fallback (no rust-std is served for it).
cargo_for() {
    local t=$1 sub=$2
    shift 2
    # cargo-zigbuild's subcommands: `zigbuild` (what `cargo zigbuild` runs) and `test`
    local zsub=$sub
    [ "$sub" != build ] || zsub=zigbuild
    if [ "$sub" = build ] && { [ "$t" = armv7 ] || nightly_ready; }; then
        local tr var
        tr=$(triple "$t")
        var=$(tr 'a-z-' 'A-Z_' <<<"$tr")
        # RUST_LIBC_UNSTABLE_MUSL_V1_2_3 on armv7: see below.
        env "CARGO_TARGET_${var}_RUSTFLAGS=$(dist_rustflags "$t")" "CFLAGS_${tr//-/_}=$(dist_cflags "$t")" \
            RUSTUP_TOOLCHAIN=nightly $([ "$t" = armv7 ] && echo RUST_LIBC_UNSTABLE_MUSL_V1_2_3=1) \
            cargo-zigbuild zigbuild --locked -Zbuild-std=std,panic_abort \
            -Zbuild-std-features="$(dist_std_features)" --target "$tr" "$@"
        return
    fi
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
