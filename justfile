# ferry: build a container runtime in Rust, one step at a time.
# `just` lists the recipes. Run them as root, or they use sudo where needed.

set shell := ["bash", "-euo", "pipefail", "-c"]

host := `rustc -vV | sed -n 's/^host: //p'`
rootfs := "target/ferry/rootfs"
mdbook_version := "0.5.4"
sudo := if `id -u` == "0" { "" } else { "sudo" }
# Not root: cargo builds as you, and runs only the test binaries with sudo,
# so that target/ never fills with files owned by root.
as_root := if `id -u` == "0" { "" } else { "env CARGO_TARGET_" + replace(uppercase(host), "-", "_") + "_RUNNER='sudo --preserve-env'" }

# List the recipes
default:
    @just --list --unsorted

# Install what the workshop needs (Debian/Ubuntu): busybox-static, mdBook
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! dpkg -s busybox-static >/dev/null 2>&1; then
        {{sudo}} apt-get update -qq
        {{sudo}} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static
    fi
    if [ "$(mdbook --version 2>/dev/null)" != "mdbook v{{mdbook_version}}" ]; then
        cargo install --locked mdbook --version {{mdbook_version}}
    fi

# Build every step and the lab tools
build:
    cargo build --workspace

# Build the workshop root filesystem in target/ferry/rootfs
rootfs: setup
    @RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p ferry-breakout --target {{host}}
    @cargo run -q -p ferry-tests --bin ferry-lab -- rootfs {{rootfs}} --program target/{{host}}/release/breakout

# Build step N and run it: `just run-step 2 --hostname box /bin/hostname`
run-step N *ARGS: rootfs
    #!/usr/bin/env bash
    set -euo pipefail
    folder=$(cd steps && ls -d "$(printf %02d {{N}})"-*)
    cargo build -q -p "step$folder"
    exec {{sudo}} "target/debug/step$folder" run {{rootfs}} {{ARGS}}

# Run the behaviour suite against step N's binary
test-step N: build rootfs
    FERRY_STEPS={{N}} {{as_root}} cargo test -q -p ferry-tests --test behaviours

# Show the diff from step N-1 to step N
diff-step N:
    cargo run -q -p ferry-tests --bin ferry-lab -- diff {{N}}

# Regenerate the book's step diffs and transcripts from the sources
bless: build rootfs
    cargo run -q -p ferry-tests --bin ferry-lab -- diffs
    {{as_root}} cargo run -q -p ferry-tests --bin ferry-lab -- bless

# Build the book and serve it at http://localhost:3000
book: setup
    mdbook serve book --open

# Everything CI checks: format, lints, the book build, unit tests, the behaviour suite, the book's checks
test: setup build rootfs
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -q -- -D warnings
    just book-check
    cargo test -q --workspace --lib --bins
    {{as_root}} cargo test -p ferry-tests --test behaviours --test book

# Build the book and fail on any warning
book-check:
    #!/usr/bin/env bash
    set -euo pipefail
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    mdbook build book 2>&1 | tee "$log"
    if grep -E 'WARN|ERROR' "$log"; then
        echo "error: the book build printed warnings" >&2
        exit 1
    fi
