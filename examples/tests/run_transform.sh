#!/bin/sh
# run_transform.sh MAKE_NPY NPY_TRANSFORM: input made, streamed through,
# one output file per input.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$1" "$dir/in" 12
"$2" "$dir/in" "$dir/out"
n=$(ls "$dir/out" | grep -c '\.npy$')
echo "$n output files"
[ "$n" -eq 12 ]
