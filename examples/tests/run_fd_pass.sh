#!/bin/sh
# run_fd_pass.sh RUN_TWO FD_PASS: the server and the receiver as two
# unrelated processes, on a socket in a fresh temporary directory.
set -eu
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sh "$1" "$2" serve "$dir/sock" -- "$2" receive "$dir/sock"
