#!/usr/bin/env bash
# One idempotent set-up step for building `energy` (safe to run again; does only what is missing).
#
# Linux:  apt packages (cmake, g++, libclang-dev, OpenBLAS), the PyPI wheel `mlx-cpu==0.32.2` (MLX built
#         for CPU) unzipped into .mlx/wheel, and the patched mlx-sys crate in .mlx/mlx-sys-0.7.0.
# macOS:  only the mlx-sys crate; the patch changes nothing there (every change is behind
#         cfg(target_os = "linux") / cfg(not(target_arch = "aarch64"))), so upstream code builds.
#
# No third-party source is committed: mlx-sys comes pristine from crates.io through cargo, and our
# own patch file (patches/mlx-sys-0.7.0.patch) is applied to it in the git-ignored .mlx/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mlx_dir="$root/.mlx"
mlx_version=0.32.2
mlx_sys_version=0.7.0
patch_file="$root/patches/mlx-sys-$mlx_sys_version.patch"
mkdir -p "$mlx_dir"

say() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(uname -s)" = "Linux" ]; then
  missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
  dpkg -s libopenblas0-pthread >/dev/null 2>&1 || missing+=(libopenblas0-pthread)
  command -v patch >/dev/null 2>&1 || missing+=(patch)
  if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    say "installing ${missing[*]} with apt"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi

  wheel_root="$mlx_dir/wheel"
  if [ ! -f "$wheel_root/mlx/share/cmake/MLX/MLXConfig.cmake" ]; then
    say "fetching mlx-cpu==$mlx_version from PyPI"
    rm -rf "$mlx_dir/wheel.tmp" && mkdir -p "$mlx_dir/wheel.tmp"
    python3 -m pip download --quiet --no-deps --only-binary :all: \
      --platform manylinux_2_35_x86_64 --python-version 3.11 \
      "mlx-cpu==$mlx_version" -d "$mlx_dir/wheel.tmp"
    (cd "$mlx_dir/wheel.tmp" && python3 -m zipfile -e mlx_cpu-*.whl unpacked)
    rm -rf "$wheel_root"
    mv "$mlx_dir/wheel.tmp/unpacked" "$wheel_root"
    rm -rf "$mlx_dir/wheel.tmp"
  fi
fi

# The patched mlx-sys: re-made whenever the patch file changes.
stamp="$mlx_dir/mlx-sys-$mlx_sys_version/.energy-patch.sha256"
want=$(sha256sum "$patch_file" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "fetching pristine mlx-sys $mlx_sys_version from crates.io and applying $(basename "$patch_file")"
  manifest="$mlx_dir/fetch-mlx-sys"
  rm -rf "$manifest" && mkdir -p "$manifest/src"
  : > "$manifest/src/lib.rs"
  cat > "$manifest/Cargo.toml" <<TOML
[package]
name = "fetch-mlx-sys"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
mlx-sys = { version = "=$mlx_sys_version", default-features = false }
TOML
  (cd "$manifest" && cargo vendor --quiet --versioned-dirs vendor >/dev/null)
  rm -rf "$mlx_dir/mlx-sys-$mlx_sys_version"
  cp -r "$manifest/vendor/mlx-sys-$mlx_sys_version" "$mlx_dir/mlx-sys-$mlx_sys_version"
  (cd "$mlx_dir/mlx-sys-$mlx_sys_version" && patch --quiet -p1 < "$patch_file")
  rm -rf "$manifest"
  echo "$want" > "$stamp"
fi
say "ready"
