# ferry: build a container runtime in Rust, one step at a time.
# `just` lists the recipes. Run them as root, or they use sudo where needed.

set shell := ["bash", "-euo", "pipefail", "-c"]

host := `rustc -vV | sed -n 's/^host: //p'`
rootfs := "target/ferry/rootfs"
# The chroot breakout of chapter 1, and step 05's UDP server, copied into the rootfs's /bin.
breakout := "target/" + host + "/release/breakout"
udp_echo := "target/" + host + "/release/udp-echo"
vm_dir := "target/ferry/vm"
mdbook_version := "0.5.4"
sudo := if `id -u` == "0" { "" } else { "sudo" }
# Not root: cargo builds as you, and runs only the test binaries with sudo,
# so that target/ never fills with files owned by root.
as_root := if `id -u` == "0" { "" } else { "env CARGO_TARGET_" + replace(uppercase(host), "-", "_") + "_RUNNER='sudo --preserve-env'" }

# List the recipes
default:
    @just --list --unsorted

# Install what the workshop needs (Debian/Ubuntu): busybox-static, runc (for comparisons), iproute2 and nftables (step 05), GNU time (the bench), mdBook
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=$(for package in busybox-static runc iproute2 nftables time; do dpkg -s "$package" >/dev/null 2>&1 || echo "$package"; done)
    if [ -n "$missing" ]; then
        {{sudo}} apt-get update -qq
        {{sudo}} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi
    if [ "$(mdbook --version 2>/dev/null)" != "mdbook v{{mdbook_version}}" ]; then
        cargo install --locked mdbook --version {{mdbook_version}}
    fi

# Check this machine for what the workshop needs, and say what to do about each problem
[no-exit-message]
doctor:
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p ferry-tests --bin ferry-lab
    # The tools are looked up on your PATH, which sudo would replace; the
    # kernel probes need root. Without sudo, the doctor says what it could not do.
    export FERRY_DOCTOR_PATH="${FERRY_DOCTOR_PATH:-$PATH}"
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null && sudo true; then
        exec sudo env FERRY_DOCTOR_PATH="$FERRY_DOCTOR_PATH" target/debug/ferry-lab doctor
    fi
    exec target/debug/ferry-lab doctor

# Build every step and the lab tools
build:
    cargo build --workspace

# Install the reference registry (Debian's docker-registry), skopeo and umoci: the registry tests and the classroom registry
registry-setup:
    #!/usr/bin/env bash
    set -euo pipefail
    missing=$(for package in docker-registry skopeo umoci curl; do dpkg -s "$package" >/dev/null 2>&1 || echo "$package"; done)
    if [ -n "$missing" ]; then
        {{sudo}} apt-get update -qq
        {{sudo}} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    fi

# Serve the workshop images from a registry of your own, for a room offline (0.0.0.0:5000 opens it to the room's network); --token asks for tokens, as Docker Hub does; Ctrl-C stops it
[positional-arguments]
[no-exit-message]
classroom-registry ADDR="127.0.0.1:5000" *FLAGS: registry-setup rootfs
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build -q -p ferry-tests --bin ferry-lab
    # exec: Ctrl-C stops the registry, and its clean exit is the recipe's.
    # --token: ask for tokens, as Docker Hub does (chapter 6's token dance).
    addr="$1"; shift
    exec {{sudo}} target/debug/ferry-lab classroom-registry --listen "$addr" "$@"

# Build the workshop root filesystem in target/ferry/rootfs, unless it is up to date
rootfs: setup
    @RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --release -p ferry-breakout -p ferry-udp-echo --target {{host}}
    @cargo run -q -p ferry-tests --bin ferry-lab -- rootfs {{rootfs}} --program {{breakout}} --program {{udp_echo}}

# Install QEMU and fetch Debian's current kernel package (extracted, never installed) for the cgroup layout tests
vm-setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null; then
        {{sudo}} apt-get update -qq
        {{sudo}} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 cpio
    fi
    # Debian keeps only the current kernel: ask apt which one that is.
    current() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n 1; }
    package=$(current)
    if [ -z "$package" ]; then {{sudo}} apt-get update -qq; package=$(current); fi
    if [ -z "$package" ]; then
        # Not Debian (Ubuntu names its kernels differently): the suite tests
        # this host's own layout, and the vm test says what it could not.
        echo "note: apt offers no linux-image-amd64 here, so no cgroup test machine is built" >&2
        exit 0
    fi
    mkdir -p {{vm_dir}}
    if [ ! -e "{{vm_dir}}/$package.stamp" ]; then
        rm -rf {{vm_dir}}/kernel {{vm_dir}}/*.deb {{vm_dir}}/*.stamp
        (cd {{vm_dir}} && apt-get download -q "$package" 2>/dev/null && dpkg-deb -x linux-image-*.deb kernel && rm linux-image-*.deb)
        touch "{{vm_dir}}/$package.stamp"
    fi

# Build the cgroup test machine, booted once per cgroup layout: a kernel and an initramfs with static binaries
vm-image: vm-setup rootfs
    #!/usr/bin/env bash
    set -euo pipefail
    [ -d {{vm_dir}}/kernel ] || exit 0
    # Static: the initramfs has no C library for them to load.
    export RUSTFLAGS="-C target-feature=+crt-static"
    cargo build -q -p step03-mount-overlay -p step04-cgroups --target {{host}}
    # The doctor, which /init runs after the suite: its report is checked
    # in each layout too.
    cargo build -q -p ferry-tests --bin ferry-lab --target {{host}}
    # The artifact of the test target named "behaviours" (the package's
    # binaries are built, and listed, too).
    suite=$(cargo test -q -p ferry-tests --test behaviours --target {{host}} --no-run --message-format=json \
        | grep '"name":"behaviours"' | grep '"test":true' \
        | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
    [ -x "$suite" ] || { echo "error: no behaviours test binary was built" >&2; exit 1; }
    tree={{vm_dir}}/initramfs
    rm -rf "$tree" && mkdir -p "$tree"/{bin,proc,sys,dev,tmp,mnt,ferry,lib/modules}
    cp /bin/busybox "$tree/bin/"
    cp tests/vm/init "$tree/init"
    cp "$(find {{vm_dir}}/kernel/lib/modules -name overlay.ko | head -n 1)" "$tree/lib/modules/"
    cp "$suite" "$tree/ferry/behaviours"
    cp target/{{host}}/debug/ferry-lab "$tree/ferry/ferry-lab"
    # The suite looks for the steps where cargo built them on this machine:
    # give the binaries, the step folders and the rootfs the same paths.
    ws="{{justfile_directory()}}"
    # Each step's Cargo.toml too: it names the step's binary (step 07's is
    # `ferry`).
    for step in steps/*/; do mkdir -p "$tree$ws/$step" && cp "${step}Cargo.toml" "$tree$ws/$step"; done
    mkdir -p "$tree$ws/target/debug" "$tree$ws/target/ferry"
    cp target/{{host}}/debug/step03-mount-overlay target/{{host}}/debug/step04-cgroups "$tree$ws/target/debug/"
    cp -a {{rootfs}} "$tree$ws/target/ferry/rootfs"
    # The doctor reads the Rust and mdBook versions the workspace pins here.
    cp Cargo.toml justfile "$tree$ws/"
    (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1) > {{vm_dir}}/initramfs.cpio.gz
    cp {{vm_dir}}/kernel/boot/vmlinuz-* {{vm_dir}}/vmlinuz

# Build step N and run it: `just run-step 2 --hostname box /bin/hostname`
[positional-arguments]
[no-exit-message]
run-step N *ARGS: rootfs
    #!/usr/bin/env bash
    set -euo pipefail
    # "$@", not {{{{ARGS}}: pasted into this script, the arguments would be
    # split and globbed again by the host's shell, as root (a quoted
    # `sh -c 'echo hi > /tmp/f'` wrote the host's /tmp/f).
    folder=$(cd steps && ls -d "$(printf %02d "$1")"-* 2>/dev/null) || { echo "error: no step $1 in steps/" >&2; exit 2; }
    shift
    cargo build -q -p "step$folder"
    # Step 07's binary is `ferry`, named in its Cargo.toml; the others are
    # named after their package.
    binary=$(sed -n '/^\[\[bin\]\]/,/^name/s/^name = "\(.*\)"/\1/p' "steps/$folder/Cargo.toml")
    # exec: the container's exit status becomes the recipe's, and
    # [no-exit-message] keeps just from calling a container's `exit 7` a
    # failed recipe.
    exec {{sudo}} "target/debug/${binary:-step$folder}" run {{rootfs}} "$@"

# A root shell in a new lab, as the book's console sessions expect; `exit` removes the lab
[no-exit-message]
shell: build rootfs
    #!/usr/bin/env bash
    set -euo pipefail
    exec {{sudo}} target/debug/ferry-lab shell

# Write labs/NN-slug: step N with the code that teaches its idea cut out, for you to write (--force replaces your work)
[positional-arguments]
[no-exit-message]
lab N *FLAGS:
    @cargo run -q -p ferry-tests --bin ferry-lab -- lab "$@"

# Grade your labs/NN-slug with the behaviour suite as step N (--json FILE, --junit FILE: a report for an instructor)
[positional-arguments]
[no-exit-message]
check N *FLAGS: registry-setup rootfs
    @cargo run -q -p ferry-tests --bin ferry-lab -- check "$@"

# Run the behaviour suite against step N's binary
test-step N: registry-setup build rootfs
    FERRY_STEPS={{N}} {{as_root}} cargo test -q -p ferry-tests --test behaviours

# Show the diff from step N-1 to step N
diff-step N:
    cargo run -q -p ferry-tests --bin ferry-lab -- diff {{N}}

# Regenerate the book's step diffs and transcripts from the sources
bless: build rootfs
    cargo run -q -p ferry-tests --bin ferry-lab -- diffs
    {{as_root}} cargo run -q -p ferry-tests --bin ferry-lab -- bless

# Time every step's start against runc and the bare-namespace floor; writes book/src/bench/results.md
bench *ARGS: setup registry-setup rootfs
    cargo build -q --release --workspace --bins
    {{as_root}} cargo run -q -p ferry-tests --bin ferry-lab -- bench --out book/src/bench/results.md {{ARGS}}

# Build the book and serve it at http://localhost:3000
book: setup
    mdbook serve book --open

# Everything CI checks: format, lints, the book build, unit tests, the behaviour suite, the labs, the book's checks, the cgroup test machine in every layout
test: setup registry-setup build rootfs vm-image
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -q -- -D warnings
    just book-check
    @# The bench, quickly, so that it never rots; its figures are not judged here.
    cargo build -q --release --workspace --bins
    mkdir -p target/ferry/bench
    {{as_root}} cargo run -q -p ferry-tests --bin ferry-lab -- bench --runs 3 --warmup 1 --out target/ferry/bench/quick.md > /dev/null
    cargo test -q --workspace --lib --bins
    {{as_root}} cargo test -p ferry-tests --test behaviours --test labs --test book --test vm --test recipes

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
