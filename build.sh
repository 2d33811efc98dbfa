#!/usr/bin/env bash
# One entry point for people and CI:
#   ./build.sh bench [ndchan-bench args]   install what is missing, build, run the comparison
#   ./build.sh test                        install what is missing, build, run the test suite
#   ./build.sh sanitize                    the test suite again under ASan + UBSan (build-asan/)
#   ./build.sh minimal                     the suite built without the optional libraries (build-min/)
#   ./build.sh clang                       the suite built by clang with -Werror (build-clang/)
#   ./build.sh deps                        only install the Debian packages
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(meson ninja-build pkg-config gcc clang libc6-dev libcriterion-dev libhwloc-dev hwloc
          liburing-dev libzmq3-dev gnuplot-nox python3-numpy python3-dev python3-pytest
          python3-hypothesis python3-mesonpy patchelf libucx-dev ucx-utils util-linux cmake)

deps() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}"
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# configure a build dir whether or not it exists yet, then build it
build() {
    local dir=$1; shift
    if [ -f "$dir/build.ninja" ]; then
        meson setup "$dir" --reconfigure "$@" >/dev/null
    else
        meson setup "$dir" "$@" >/dev/null
    fi
    ninja -C "$dir"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
deps) deps ;;
bench)
    deps
    build build
    exec build/bench/ndchan-bench "$@"
    ;;
test)
    deps
    build build
    meson test -C build --no-suite soak --print-errorlogs "$@"
    ;;
sanitize)
    deps
    build build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
    ASAN_OPTIONS=handle_segv=0:detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        meson test -C build-asan --no-suite soak --print-errorlogs --timeout-multiplier 3 "$@"
    ;;
minimal)
    deps
    build build-min -Dhwloc=disabled -Dliburing=disabled -Dzmq=disabled -Ducx=disabled -Dpython=disabled
    meson test -C build-min --no-suite soak --print-errorlogs "$@"
    ;;
clang)
    deps
    CC=clang build build-clang -Dwerror=true
    meson test -C build-clang --no-suite soak --print-errorlogs "$@"
    ;;
*)
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
