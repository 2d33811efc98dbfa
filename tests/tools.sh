#!/bin/sh
# tools.sh TOOLDIR MAKE_NPY: the command-line tools as a user meets them.
# Every tool: --help on stdout with 0, a word for a number / an unknown
# option / an extra argument refused with 2 and one line. ndchan-load and
# ndchan-save: a consumer started after a -c -u loader still gets the data;
# a bad option or file leaves no channel behind. ndchan-stat: --list shows a
# stale channel, --gc --dry-run keeps it, --gc removes it, and a channel a
# live process holds is never removed. --gc is given this test's own names
# only, so a run never touches another program's channels. ndchan-demo
# --broadcast runs both policies; on its named channel, ndchan-stat shows
# the two subscribers (their pids, in the plain, --json and --watch views).
set -u
T=$1
MAKE_NPY=$2
BENCH=${3:-}
dir=$(mktemp -d)
name=ndc-tools-test-$$
trap 'rm -rf "$dir"; rm -f /dev/shm/$name /dev/shm/$name-b /dev/shm/$name-c' EXIT
fails=0
passes=0
check() {   # check WHAT WANT_STATUS COMMAND...
    what=$1 want=$2
    shift 2
    "$@" >"$dir/stdout" 2>"$dir/err"
    got=$?
    if [ "$got" -ne "$want" ]; then
        echo "FAIL: $what: exit $got, wanted $want"; cat "$dir/err"; fails=$((fails + 1))
    else
        passes=$((passes + 1))
    fi
}
one_line() {   # the last check's stderr is one line
    if [ "$(wc -l <"$dir/err")" -ne 1 ]; then
        echo "FAIL: $1: stderr is not one line:"; cat "$dir/err"; fails=$((fails + 1))
    fi
}

for t in ndchan-demo ndchan-stat ndchan-topo ndchan-load ndchan-save; do
    check "$t --help" 0 "$T/$t" --help
    grep -q '^usage:' "$dir/stdout" || { echo "FAIL: $t --help: no usage on stdout"; fails=$((fails + 1)); }
    check "$t --no-such-option" 2 "$T/$t" --no-such-option; one_line "$t --no-such-option"
done
if [ -n "$BENCH" ]; then
    check "ndchan-bench --help" 0 "$BENCH" --help
    check "ndchan-bench --reps many" 2 "$BENCH" --reps many; one_line "ndchan-bench --reps many"
    check "ndchan-bench extra" 2 "$BENCH" extra; one_line "ndchan-bench extra"
fi
check "demo --arrays abc" 2 "$T/ndchan-demo" --arrays abc; one_line "demo --arrays abc"
check "demo --arrays 5x" 2 "$T/ndchan-demo" --arrays 5x
check "demo extra argument" 2 "$T/ndchan-demo" extra; one_line "demo extra"
check "demo runs" 0 "$T/ndchan-demo" --arrays 20 --busy-ms 1
check "demo --policy sometimes" 2 "$T/ndchan-demo" --broadcast --policy sometimes; one_line "demo --policy"
check "demo --slow-ms without --broadcast" 2 "$T/ndchan-demo" --slow-ms 3
check "demo --broadcast --busy-ms" 2 "$T/ndchan-demo" --broadcast --busy-ms 3
check "demo --broadcast runs" 0 "$T/ndchan-demo" --broadcast --arrays 60 --slow-ms 3 --produce-us 500
for w in "policy block" "policy latest" "fast subscriber" "slow subscriber" "^latest "; do
    grep -q "$w" "$dir/stdout" || { echo "FAIL: demo --broadcast does not say '$w'"; cat "$dir/stdout"; fails=$((fails + 1)); }
done
# block: the slow subscriber got every array; latest: it dropped some
grep -q "slow subscriber.*received 60, dropped 0, seq 0..59 in order" "$dir/stdout" &&
grep -q "slow subscriber.*dropped [1-9][0-9]*, seq .*newest" "$dir/stdout" ||
    { echo "FAIL: demo --broadcast: block should lose nothing, latest should drop"; cat "$dir/stdout"; fails=$((fails + 1)); }
check "stat two names" 2 "$T/ndchan-stat" a b
check "stat --interval word" 2 "$T/ndchan-stat" --watch --interval soon x
check "stat --dry-run alone" 2 "$T/ndchan-stat" --dry-run
check "topo extra argument" 2 "$T/ndchan-topo" extra
check "save -d word" 2 "$T/ndchan-save" -d deep ch "$dir/o"
check "save no dir" 2 "$T/ndchan-save" ch
check "load no path" 2 "$T/ndchan-load" ch

"$MAKE_NPY" "$dir/in" 6 || exit 1
mkdir "$dir/empty"
check "load -c -d 1000" 2 "$T/ndchan-load" -c -d 1000 "$name" "$dir/in"
[ -e "/dev/shm/$name" ] && { echo "FAIL: a refused option left /dev/shm/$name"; fails=$((fails + 1)); }
check "load empty directory" 1 "$T/ndchan-load" -c "$name" "$dir/empty"
grep -q 'no .npy files' "$dir/err" || { echo "FAIL: empty directory not reported"; fails=$((fails + 1)); }
echo junk >"$dir/bad.npy"
check "load a bad file" 1 "$T/ndchan-load" -c "$name" "$dir/in" "$dir/bad.npy"
[ -e "/dev/shm/$name" ] && { echo "FAIL: a bad file left /dev/shm/$name"; fails=$((fails + 1)); }

# -c -u, consumer started after the loader finished loading
"$T/ndchan-load" -q -c -u "$name" "$dir/in" &
loader=$!
sleep 0.5
check "save -w after load -c -u" 0 "$T/ndchan-save" -q -w 10 "$name" "$dir/saved"
wait $loader || { echo "FAIL: loader exit $?"; fails=$((fails + 1)); }
n=$(ls "$dir/saved" | grep -c '\.npy$')
[ "$n" -eq 6 ] || { echo "FAIL: saved $n arrays of 6"; fails=$((fails + 1)); }
[ -e "/dev/shm/$name" ] && { echo "FAIL: -u left /dev/shm/$name"; fails=$((fails + 1)); }

# a stale channel: loaded, never consumed, its loader gone
check "load -c (left behind)" 0 "$T/ndchan-load" -q -c "$name" "$dir/in"
check "stat --list" 0 "$T/ndchan-stat" --list
grep -q "^$name .*stale" "$dir/stdout" || { echo "FAIL: --list does not show $name stale"; cat "$dir/stdout"; fails=$((fails + 1)); }
check "stat --list --json" 0 "$T/ndchan-stat" --list --json
grep -q "\"name\":\"$name\",\"state\":\"stale\"" "$dir/stdout" || { echo "FAIL: --list --json"; cat "$dir/stdout"; fails=$((fails + 1)); }
check "stat --gc --dry-run" 0 "$T/ndchan-stat" --gc --dry-run "$name"
grep -q "would remove $name " "$dir/stdout" || { echo "FAIL: --dry-run does not name $name"; fails=$((fails + 1)); }
[ -e "/dev/shm/$name" ] || { echo "FAIL: --dry-run removed $name"; fails=$((fails + 1)); }
# a live one beside it: a process watching it holds it
"$T/ndchan-load" -q -c "$name-b" "$dir/in"
"$T/ndchan-stat" --watch --interval 0.1 --count 30 "$name-b" >/dev/null &
watcher=$!
sleep 0.3
# only our own names: other programs' channels on this machine are theirs
check "stat --gc" 0 "$T/ndchan-stat" --gc "$name" "$name-b"
[ -e "/dev/shm/$name" ] && { echo "FAIL: --gc kept stale $name"; fails=$((fails + 1)); }
[ -e "/dev/shm/$name-b" ] || { echo "FAIL: --gc removed $name-b, which a live process holds"; fails=$((fails + 1)); }
check "stat --watch --count 2 --json" 0 "$T/ndchan-stat" --watch --count 2 --interval 0.1 --json "$name-b"
[ "$(grep -c arrays_per_s "$dir/stdout")" -eq 2 ] || { echo "FAIL: --watch lines"; fails=$((fails + 1)); }
check "save drains $name-b" 0 "$T/ndchan-save" -q -u "$name-b" "$dir/saved-b"
wait $watcher

# a broadcast channel's subscribers: the demo's named channel, while it runs
"$T/ndchan-demo" --broadcast --policy block --name "$name-c" --arrays 1500 --slow-ms 2 >"$dir/demo-c" &
demo=$!
subs=0
for i in $(seq 100); do   # until both subscribers are there, 5 s at most
    "$T/ndchan-stat" --json "$name-c" >"$dir/stat-c" 2>/dev/null &&
        subs=$(grep -o '"pid":' "$dir/stat-c" | wc -l)
    [ "$subs" -eq 2 ] && break
    sleep 0.05
done
[ "$subs" -eq 2 ] || { echo "FAIL: stat --json: $subs subscribers, want 2"; cat "$dir/stat-c"; fails=$((fails + 1)); }
grep -q '"broadcast":true,"dropped":0,"subscribers":\[{"pid":[0-9]*,"position":[0-9]*,"lag":[0-9]*,"loans":[0-9]*,"received":[0-9]*,"dropped":0},{' "$dir/stat-c" ||
    { echo "FAIL: stat --json: no subscriber list"; cat "$dir/stat-c"; fails=$((fails + 1)); }
check "stat broadcast" 0 "$T/ndchan-stat" "$name-c"
grep -q "broadcast: 2 subscribers" "$dir/stdout" && grep -q "PID  *POSITION  *LAG  *LOANS  *RECEIVED  *DROPPED" "$dir/stdout" &&
[ "$(grep -c '^    [0-9][0-9]*  *[0-9]' "$dir/stdout")" -eq 2 ] ||
    { echo "FAIL: stat: no subscriber table"; cat "$dir/stdout"; fails=$((fails + 1)); }
check "stat --watch broadcast" 0 "$T/ndchan-stat" --watch --count 2 --interval 0.2 "$name-c"
grep -q "subscribers 2" "$dir/stdout" && grep -q "ARRAYS/S" "$dir/stdout" ||
    { echo "FAIL: stat --watch: no subscribers"; cat "$dir/stdout"; fails=$((fails + 1)); }
check "stat --watch --json broadcast" 0 "$T/ndchan-stat" --watch --count 1 --json "$name-c"
grep -q '"subscribers":\[{"pid":' "$dir/stdout" || { echo "FAIL: stat --watch --json: no subscribers"; cat "$dir/stdout"; fails=$((fails + 1)); }
wait $demo || { echo "FAIL: demo --broadcast --name exit $?"; cat "$dir/demo-c"; fails=$((fails + 1)); }
# the pids the demo names are the ones ndchan-stat showed
for pid in $(sed -n 's/.*subscriber (pid \([0-9]*\).*/\1/p' "$dir/demo-c"); do
    grep -q "\"pid\":$pid," "$dir/stat-c" || { echo "FAIL: subscriber $pid not in stat --json"; fails=$((fails + 1)); }
done
[ -e "/dev/shm/$name-c" ] && { echo "FAIL: demo --name left /dev/shm/$name-c"; fails=$((fails + 1)); }

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]
