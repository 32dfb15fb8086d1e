#!/bin/bash
# fuzz.sh: run each libFuzzer target of swallow-fuzz (Sources/Fuzz) for SECONDS, starting
# from the corpus in bench/fuzz/corpus/TARGET; new inputs go to .build/fuzz/work/TARGET,
# crashing inputs to .build/fuzz/findings/TARGET/. Exit status 1 when any target found
# a crash. Needs the Swift toolchain's libFuzzer and AddressSanitizer (both on this machine).
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     (default 60 s each, every target)
set -u
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=${*:-smtp-command data address attr record mime regexp pcre cidr texthash}
SWALLOW_FUZZ=1 swift build --build-path .build/fuzz --product swallow-fuzz \
    --sanitize fuzzer --sanitize address 2>&1 | grep -E 'error|warning: unre|Compiling swallow|Build' || true
bin=.build/fuzz/debug/swallow-fuzz
[ -x "$bin" ] || { echo "fuzz.sh: build failed" >&2; exit 2; }
status=0
for t in $targets; do
    mkdir -p ".build/fuzz/work/$t" ".build/fuzz/findings/$t"
    echo "== $t ($secs s)"
    SWALLOW_FUZZ_TARGET=$t "$bin" -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix=".build/fuzz/findings/$t/" -print_final_stats=1 \
        ".build/fuzz/work/$t" "bench/fuzz/corpus/$t" > ".build/fuzz/$t.log" 2>&1
    rc=$?
    grep -E '^stat::number_of_executed_units|^stat::new_units_added|^#[0-9]+ +DONE|ERROR|SUMMARY' ".build/fuzz/$t.log" | tail -4
    if [ $rc -ne 0 ]; then
        echo "   crash: see .build/fuzz/$t.log and .build/fuzz/findings/$t/"
        status=1
    fi
done
exit $status
