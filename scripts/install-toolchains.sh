#!/usr/bin/env bash
# Installs the toolchains the compatibility tests (internal/compat) build
# plugins with, skipping what is already there:
#   - from Debian, in one apt-get install (needs root): clang-19, lld-19,
#     wasi-libc and libclang-rt-19-dev-wasm32 for C; rustc,
#     libstd-rust-dev-wasm32 (the wasm32-unknown-unknown standard library)
#     and lld-14, the wasm-ld that Debian's rustc 1.63 links with, for Rust;
#   - from npm, with `npm ci` from the committed package-lock.json: the
#     AssemblyScript compiler and SDK in testdata/toolchains/assemblyscript.
# Go plugins need nothing beyond Go. Usage: scripts/install-toolchains.sh
# (or `make toolchains`). Exits non-zero if something could not be
# installed; the tests then say which toolchain is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 rustc libstd-rust-dev-wasm32 lld-14)
status=0

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "toolchains: installing ${missing[*]} from Debian"
    start=$SECONDS
    if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
      echo "toolchains: Debian packages installed in $((SECONDS - start)) s"
    else
      echo "toolchains: apt-get install ${missing[*]} failed" >&2
      status=1
    fi
  else
    echo "toolchains: missing Debian packages ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    status=1
  fi
fi

as_dir=testdata/toolchains/assemblyscript
if command -v npm >/dev/null 2>&1; then
  if [ ! -x "$as_dir/node_modules/.bin/asc" ] || [ "$as_dir/package-lock.json" -nt "$as_dir/node_modules/.bin/asc" ]; then
    echo "toolchains: npm ci in $as_dir"
    start=$SECONDS
    if (cd "$as_dir" && npm ci --no-audit --no-fund --loglevel=error) && touch "$as_dir/node_modules/.bin/asc"; then
      echo "toolchains: AssemblyScript installed in $((SECONDS - start)) s"
    else
      echo "toolchains: npm ci in $as_dir failed" >&2
      status=1
    fi
  fi
else
  echo "toolchains: npm not found; AssemblyScript plugins cannot be built" >&2
  status=1
fi
exit $status
