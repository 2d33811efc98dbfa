#!/bin/sh
# run_two.sh FIRST ARGS... -- SECOND ARGS...
# Starts FIRST in the background, gives it a head start, runs SECOND, and
# fails unless both exit 0: two programs started from two shells, in order.
set -u
first=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do first="$first '$1'"; shift; done
shift
eval "$first" &
pid=$!
sleep 0.3
"$@"
second=$?
wait $pid
first_rc=$?
echo "first exited $first_rc, second exited $second"
[ $first_rc -eq 0 ] && [ $second -eq 0 ]
