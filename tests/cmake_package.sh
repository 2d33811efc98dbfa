#!/bin/sh
# cmake_package.sh BUILD_DIR SOURCE_DIR [SANITIZE]: install into a temporary
# DESTDIR, build examples/pipeline.c with CMake's find_package(ndchan), run
# it. SANITIZE: the build's b_sanitize ("none", "address,undefined"): a
# sanitized library needs its runtime in the program too, so the program is
# built with the same -fsanitize. Exit 77 (skipped) when cmake is missing.
set -eu
build=$1 src=$2 sanitize=${3:-none}
cflags=""
[ "$sanitize" != none ] && [ -n "$sanitize" ] && cflags="-fsanitize=$sanitize"
if ! command -v cmake >/dev/null 2>&1; then
    echo "skipped: cmake is not installed (apt-get install cmake)"
    exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
meson install -C "$build" --destdir "$tmp/dest" --no-rebuild --quiet >/dev/null
prefix=$(meson introspect "$build" --buildoptions |
         sed -n 's/.*"name": "prefix", "value": "\([^"]*\)".*/\1/p')
[ -n "$prefix" ] || prefix=$(cd "$build" && meson configure | awk '$1 == "prefix" { print $2 }')
root="$tmp/dest$prefix"
config=$(find "$root" -name ndchanConfig.cmake | head -n 1)
[ -n "$config" ] || { echo "no ndchanConfig.cmake under $root"; exit 1; }
echo "installed: $config"
cmake -S "$src/tests/cmake" -B "$tmp/user" -DCMAKE_PREFIX_PATH="$root" \
      -DEXAMPLE="$src/examples/pipeline.c" -DCMAKE_C_FLAGS="$cflags" >"$tmp/cmake.log" 2>&1 || { cat "$tmp/cmake.log"; exit 1; }
cmake --build "$tmp/user" >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
libdir=$(dirname "$(find "$root" -name 'libndchan.so.0' | head -n 1)")
LD_LIBRARY_PATH="$libdir" "$tmp/user/pipeline" 20
echo "built and ran examples/pipeline.c with find_package(ndchan)"
