#!/usr/bin/env bash
# Set up dr on a fresh Debian 12 machine, as root. Idempotent: a second run
# changes nothing and takes about a second.
#
#   - system packages: BCC (python3-bpfcc, libbpfcc), kernel headers,
#     libseccomp, python3-venv, and the programs the tests drive
#   - kernel headers for BCC: when /lib/modules/$(uname -r)/build is missing,
#     link the newest installed linux-headers (tracepoint layouts are stable)
#   - tracefs mounted at /sys/kernel/tracing
#   - .venv from /usr/bin/python3 with --system-site-packages (so `import bcc`
#     works), with dr installed editable plus its test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${DR_VENV:-$ROOT/.venv}
STAMP=$VENV/.dr-setup-stamp

say() { echo "setup: $*"; }

PKGS=(python3-bpfcc libbpfcc bpfcc-tools python3-venv python3-pip python3-seccomp
      libseccomp2 linux-headers-amd64 curl sqlite3 git strace linux-perf
      redis-server redis-tools nginx apache2-utils gunicorn tshark iproute2 util-linux procps zstd gcc libc6-dev bpftool tmux
      golang-go binutils)   # binutils: objdump finds the RET instructions of Go's time.now (capture/clocks.py)
if [ "$(uname -m)" = aarch64 ]; then PKGS=("${PKGS[@]/linux-headers-amd64/linux-headers-arm64}"); fi

missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing system packages (${missing[*]}); run this script as root" >&2
        exit 1
    fi
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # The distribution starts redis-server and nginx on install; tests start their own.
    systemctl disable --now redis-server nginx >/dev/null 2>&1 || true
    if [ -f /run/nginx.pid ]; then nginx -s stop >/dev/null 2>&1 || true; fi
fi

# Kernel headers for BCC: /lib/modules/$(uname -r)/{build,source}.
KREL=$(uname -r)
MOD=/lib/modules/$KREL
if [ ! -e "$MOD/build/include/generated/autoconf.h" ] && [ ! -e "$MOD/build/include/linux/kconfig.h" ]; then
    arch_hdr=$(ls -d /usr/src/linux-headers-*-amd64 /usr/src/linux-headers-*-arm64 2>/dev/null | sort -V | tail -1 || true)
    if [ -z "$arch_hdr" ]; then
        echo "setup: no kernel headers under /usr/src; install linux-headers-$KREL or linux-headers-amd64" >&2
        exit 1
    fi
    common_hdr=${arch_hdr%-amd64}; common_hdr=${common_hdr%-arm64}-common
    [ -d "$common_hdr" ] || common_hdr=$arch_hdr
    mkdir -p "$MOD"
    ln -sfn "$arch_hdr" "$MOD/build"
    ln -sfn "$common_hdr" "$MOD/source"
    say "no headers match kernel $KREL; linked $(basename "$arch_hdr") as its build/source (tracepoint layouts are stable)"
fi

if ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null && say "mounted tracefs at /sys/kernel/tracing" || true
fi

# The virtual environment: Debian's python3 so that BCC's module imports.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
# Reinstall only when the project metadata changed.
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
    say "installing dr and its Python dependencies into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade "pip>=23" >/dev/null
    "$VENV/bin/python" -m pip install -q -e ".[test]"
    echo "$want" > "$STAMP"
fi
"$VENV/bin/python" -c "import bcc, dr" || { echo "setup: the venv cannot import bcc; is python3-bpfcc installed?" >&2; exit 1; }
say "ready: $VENV/bin/dr ($("$VENV/bin/dr" --version))"
