#!/usr/bin/env bash
# postconf-bench: wall time of N runs of common postconf invocations, Swallow's against
# the reference Postfix 3.7's, on the same configuration in the same run.
# usage: bench/postconf-bench.sh [N]   (after make and make test; any user)
set -euo pipefail
n=${1:-200}
here=$(cd "$(dirname "$0")/.." && pwd)
ours=$here/.build/release/postconf
ref=$here/.ref/postfix
[ -x "$ours" ] || { echo "build first: make" >&2; exit 1; }
[ -x "$ref/usr/sbin/postconf" ] || { echo "no reference Postfix in $ref (make test unpacks it)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cp "$here/conf/main.cf" "$here/conf/master.cf" "$dir/"
export LD_LIBRARY_PATH=$ref/usr/lib/postfix
time_runs() {
    local start end
    start=$(date +%s.%N)
    for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 || true; done
    end=$(date +%s.%N)
    echo "$start $end" | awk -v n="$n" '{ printf "%.2f", ($2 - $1) * 1000 / n }'
}
printf '%-28s %12s %12s %8s\n' "postconf -c DIR ..." "swallow ms" "postfix ms" "ratio"
for args in "-n" "-d" "mail_version myhostname" "-M" "-x -n"; do
    # shellcheck disable=SC2086
    s=$(time_runs "$ours" -c "$dir" $args)
    # shellcheck disable=SC2086
    p=$(time_runs "$ref/usr/sbin/postconf" -c "$dir" $args)
    printf '%-28s %12s %12s %8s\n' "$args" "$s" "$p" "$(awk -v s="$s" -v p="$p" 'BEGIN { printf "%.2f", p / s }')"
done
echo "(ratio = postfix / swallow per run; above 1 means Swallow is faster)"
