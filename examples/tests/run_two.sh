#!/bin/sh
# run_two.sh FIRST ARGS... -- SECOND ARGS...
# Starts FIRST in the background, gives it a head start, runs SECOND, and
# fails unless both exit 0: two programs started from two shells, in order.
# An argument @UNIQUE@ becomes a name of this run's own (a channel name that
# no other run, concurrent or killed, can hold).
set -u
unique=ndchan-example-$$
first=""
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    a=$1
    [ "$a" = @UNIQUE@ ] && a=$unique
    first="$first '$a'"
    shift
done
shift
eval "$first" &
pid=$!
sleep 0.3
second_cmd=""
for a in "$@"; do
    [ "$a" = @UNIQUE@ ] && a=$unique
    second_cmd="$second_cmd '$a'"
done
eval "$second_cmd"
second=$?
wait $pid
first_rc=$?
echo "first exited $first_rc, second exited $second"
[ $first_rc -eq 0 ] && [ $second -eq 0 ]
