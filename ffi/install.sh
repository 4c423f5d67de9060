#!/bin/sh
# Installs libmixccl and its headers under a prefix:
#   ffi/install.sh PREFIX [BUILD_DIR]      (BUILD_DIR defaults to target/release)
# PREFIX/lib: libmixccl.so.VERSION, libmixccl.so.0 and libmixccl.so (links), libmixccl.a
# PREFIX/include: nccl.h, mixccl.h
# PREFIX/lib/pkgconfig: mixccl.pc
# Use a prefix of its own (e.g. /opt/mixccl): nccl.h there would shadow NVIDIA's.
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 PREFIX [BUILD_DIR]" >&2
  exit 2
fi
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$1
built=${2:-$root/target/release}
ver=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ffi/Cargo.toml" | head -n 1)
for f in libmixccl.so libmixccl.a; do
  [ -f "$built/$f" ] || { echo "$0: $built/$f not found: run cargo build --release first" >&2; exit 1; }
done
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 755 "$built/libmixccl.so" "$prefix/lib/libmixccl.so.$ver"
ln -sf "libmixccl.so.$ver" "$prefix/lib/libmixccl.so.0"
ln -sf "libmixccl.so.0" "$prefix/lib/libmixccl.so"
install -m 644 "$built/libmixccl.a" "$prefix/lib/libmixccl.a"
install -m 644 "$root/include/nccl.h" "$root/include/mixccl.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$ver|" "$root/ffi/mixccl.pc.in" \
  > "$prefix/lib/pkgconfig/mixccl.pc"
echo "installed mixccl $ver under $prefix"
