#!/bin/sh
# man_coverage.sh LIBNDCHAN.so HEADER MAN_SRC MAN_BUILD
# Every symbol the shared library exports has a section 3 page (its own or
# an alias of its family's) whose NAME line names it, with the sections
# SYNOPSIS, DESCRIPTION, RETURN VALUE, NOTES and SEE ALSO, and that page
# names every errno the header's doc block for that call lists.
set -u
lib=$1 header=$2 src=$3 bld=$4
fails=0 n=0
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.pages"' EXIT
page_of() {   # the page a name resolves to, following one .so alias
    f=""
    [ -f "$src/$1.3" ] && f="$src/$1.3"
    [ -z "$f" ] && [ -f "$bld/$1.3" ] && f="$bld/$1.3"
    [ -z "$f" ] && return 1
    target=$(sed -n 's/^\.so man3\///p' "$f" | head -n 1)
    [ -n "$target" ] && f="$src/$target"
    [ -f "$f" ] && echo "$f"
}
# the errnos of each call's doc block: "name E1 E2 ..."
awk '
    /NDC_API/ {
        if (match($0, /ndc_[a-z0-9_]+\(/)) {
            name = substr($0, RSTART, RLENGTH - 1)
            printf "%s", name
            s = block
            while (match(s, /-E[A-Z0-9]+/)) {
                printf " %s", substr(s, RSTART + 1, RLENGTH - 1)
                s = substr(s, RSTART + RLENGTH)
            }
            printf "\n"
        }
        block = ""
        next
    }
    /^\/\* ----/ { block = ""; next }   # a new section of the header
    { block = block " " $0 }
' "$header" >"$tmp"
for sym in $(nm -D --defined-only "$lib" | awk '$2 ~ /^[TDRB]$/ { sub(/@.*/, "", $3); print $3 }' | sort -u); do
    n=$((n + 1))
    page=$(page_of "$sym") || { echo "FAIL: $sym has no man page"; fails=$((fails + 1)); continue; }
    sed -n '/^\.SH NAME/,/^\.SH/p' "$page" | grep -qw "$sym" ||
        { echo "FAIL: $sym: $(basename "$page")'s NAME does not name it"; fails=$((fails + 1)); }
    for e in $(awk -v s="$sym" '$1 == s { for (i = 2; i <= NF; i++) print $i }' "$tmp" | sort -u); do
        grep -qw "$e" "$page" ||
            { echo "FAIL: $sym: the header lists -$e, $(basename "$page") does not"; fails=$((fails + 1)); }
    done
    echo "$page" >>"$tmp.pages"
done
# the sections, once per page
for page in $(sort -u "$tmp.pages"); do
    for section in SYNOPSIS DESCRIPTION "RETURN VALUE" NOTES "SEE ALSO"; do
        grep -q "^\.SH $section" "$page" ||
            { echo "FAIL: $(basename "$page"): no $section section"; fails=$((fails + 1)); }
    done
done
echo "$n exported symbols checked against their man pages"
echo "$((n - fails)) passed, $fails failed"
[ "$fails" -eq 0 ] && [ "$n" -gt 0 ]
