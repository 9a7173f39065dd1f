#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for MINUTES each (default 30), JOBS at a time (default 1),
# at low CPU priority, each with a 10 s per-input timeout and a 2 GiB memory limit. New inputs
# go to fuzz/corpus/TARGET; a crash, hang or out-of-memory input to fuzz/artifacts/TARGET.
# Each run's log is fuzz/logs/TARGET.log; the last lines printed are libFuzzer's final stats
# (wall seconds and executions) for fuzz/RUNS.md. A crash input, once fixed, goes into
# fuzz/corpus/TARGET under a name that says what it found (named files survive --cmin).
#
#   tools/fuzz.sh [MINUTES] [TARGET...]      e.g. tools/fuzz.sh 30, or JOBS=2 tools/fuzz.sh 10 nettlp image
#
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`). Afterwards: `tools/fuzz.sh --cmin TARGET...` minimizes the corpora,
# and `cargo test --release --test fuzz_corpora` replays them on stable.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

all=(image btf kallsyms walkers page_walk monitor nettlp protocol)
max_len() {
  case "$1" in
    image) echo 65536 ;;
    *) echo 16384 ;;
  esac
}

if [ "${1:-}" = "--cmin" ]; then
  shift
  targets=("$@")
  [ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
  for t in "${targets[@]}"; do
    nice -n 15 cargo +nightly fuzz cmin -O "$t" "corpus/$t" -- -timeout=10 -rss_limit_mb=2048 -max_len="$(max_len "$t")"
    # cmin renames everything to hashes: the named seeds and regression inputs come back.
    git ls-files "corpus/$t" | grep -vE '/[0-9a-f]{40}$' | xargs -r git checkout --
  done
  exit 0
fi

minutes="${1:-30}"
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
jobs="${JOBS:-1}"
mkdir -p logs
nice -n 15 cargo +nightly fuzz build -O >/dev/null

run() {
  local t="$1"
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "fuzz: $t for $minutes min ($(date -u +%H:%M:%S) UTC)"
  # -fork is not used: each run is one process, so its final stats are one line.
  nice -n 15 cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time=$((minutes * 60)) -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len="$(max_len "$t")" -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
    >"logs/$t.log" 2>&1 || echo "fuzz: $t stopped with a finding: see fuzz/logs/$t.log and fuzz/artifacts/$t/"
  echo "fuzz: $t: $(grep -E '^Done [0-9]+ runs' "logs/$t.log" | tail -1) $(grep -E 'stat::number_of_executed_units' "logs/$t.log" | tail -1)"
}

running=0
for t in "${targets[@]}"; do
  run "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
