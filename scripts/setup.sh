#!/usr/bin/env bash
# setup.sh: installs what is missing (Debian 12 packages, with apt-get) and
# builds Prognos into build/ (and, with --asan, build-asan/ with AddressSanitizer
# and UndefinedBehaviorSanitizer). Safe to run again; it only does what is needed.
set -euo pipefail
# -h, --help: the comment above
case "${1:-}" in -h|--help) sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"; exit 0;; esac
cd "$(dirname "$0")/.."

PACKAGES=(gcc make cmake pkg-config libc6-dev
          libpq-dev libgsl-dev libsvm-dev libssl-dev libcjson-dev libmicrohttpd-dev
          postgresql-15 postgresql-client-15 postgresql-15-partman zlib1g-dev python3 util-linux bc
          jupyter-nbconvert python3-ipykernel python3-nbformat python3-nbclient jupyter-client
          python3-pandas python3-numpy python3-pil python3-matplotlib python3-psycopg2 python3-jsonschema
          chromium curl nginx systemd openssl iproute2)

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

build() { # dir, cmake args...
    local dir=$1; shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROGNOS_WERROR="${PROGNOS_WERROR:-OFF}" "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)" -- --no-print-directory >/dev/null
}
build build
[ "${1:-}" = "--asan" ] && build build-asan -DPROGNOS_SANITIZE=ON
echo "setup: built $(pwd)/build/engine/cli/prognos"
