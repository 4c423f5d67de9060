#!/bin/sh
# Installs libmixccl and its headers under a prefix:
#   ffi/install.sh [--nccl] [--rccl] PREFIX [BUILD_DIR]    (BUILD_DIR defaults to target/release)
# PREFIX/lib: libmixccl.so.VERSION, libmixccl.so.0 and libmixccl.so (links), libmixccl.a
# PREFIX/include: nccl.h, mixccl.h
# PREFIX/lib/pkgconfig: mixccl.pc
# --nccl also installs the same library as NVIDIA's NCCL names it: libnccl.so.2 (its
#   SONAME) and libnccl.so (link); --rccl as AMD's RCCL: librccl.so.1 and librccl.so.
#   A program linked against NCCL or RCCL then runs on mixccl with
#   LD_LIBRARY_PATH=PREFIX/lib (or LD_PRELOAD=PREFIX/lib/libnccl.so.2), unchanged.
# Use a prefix of its own (e.g. /opt/mixccl): nccl.h and libnccl.so.2 there would
# shadow NVIDIA's.
set -eu
usage() {
  echo "usage: $0 [--nccl] [--rccl] PREFIX [BUILD_DIR]" >&2
  exit 2
}
nccl=0
rccl=0
while [ $# -gt 0 ]; do
  case $1 in
    --nccl) nccl=1 ;;
    --rccl) rccl=1 ;;
    -*) usage ;;
    *) break ;;
  esac
  shift
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  usage
fi
root=$(cd "$(dirname "$0")/.." && pwd)
prefix=$1
built=${2:-$root/target/release}
ver=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/ffi/Cargo.toml" | head -n 1)
need="libmixccl.so libmixccl.a"
[ $nccl = 1 ] && need="$need libnccl.so"
[ $rccl = 1 ] && need="$need librccl.so"
for f in $need; do
  [ -f "$built/$f" ] || { echo "$0: $built/$f not found: run cargo build --release first" >&2; exit 1; }
done
install -d "$prefix/lib/pkgconfig" "$prefix/include"
install -m 755 "$built/libmixccl.so" "$prefix/lib/libmixccl.so.$ver"
ln -sf "libmixccl.so.$ver" "$prefix/lib/libmixccl.so.0"
ln -sf "libmixccl.so.0" "$prefix/lib/libmixccl.so"
install -m 644 "$built/libmixccl.a" "$prefix/lib/libmixccl.a"
if [ $nccl = 1 ]; then
  install -m 755 "$built/libnccl.so" "$prefix/lib/libnccl.so.2"
  ln -sf "libnccl.so.2" "$prefix/lib/libnccl.so"
fi
if [ $rccl = 1 ]; then
  install -m 755 "$built/librccl.so" "$prefix/lib/librccl.so.1"
  ln -sf "librccl.so.1" "$prefix/lib/librccl.so"
fi
install -m 644 "$root/include/nccl.h" "$root/include/mixccl.h" "$prefix/include/"
sed -e "s|@PREFIX@|$prefix|" -e "s|@VERSION@|$ver|" "$root/ffi/mixccl.pc.in" \
  > "$prefix/lib/pkgconfig/mixccl.pc"
echo "installed mixccl $ver under $prefix"
[ $nccl = 1 ] && echo "  with libnccl.so.2 (NCCL's name)"
[ $rccl = 1 ] && echo "  with librccl.so.1 (RCCL's name)"
exit 0
