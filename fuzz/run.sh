#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer through cargo-fuzz) of every decoder of untrusted bytes.
# Runs each target for the given seconds and prints libFuzzer's final line per target
# (executions, coverage: `cov` edges, `ft` features, corpus size). Corpora are kept in
# fuzz/corpus/<target>; a crash leaves its input in fuzz/artifacts/<target> and ends the run
# with a non-zero status.
#
#   fuzz/run.sh [--seconds 120] [target ...]     targets: record_batch requests scram frame
#                                                 segment raft config (default: all)
#
# cargo-fuzz is installed on first use. The machine's toolchain is stable: RUSTC_BOOTSTRAP=1
# lets it take cargo-fuzz's flags, and the sanitizer is off (`-s none`; Rust is memory-safe
# here, what is sought is panics, aborts, hangs and huge allocations: `-rss_limit_mb`).
set -euo pipefail
seconds=120
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(record_batch requests scram frame segment raft config)
fi
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$target"
  echo "== $target: ${seconds}s"
  cargo fuzz run -s none "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 2>&1 \
    | grep -E "^(Done|stat::|#[0-9]+.*DONE|==[0-9]+== ERROR|thread .* panicked|SUMMARY)" || true
  if ls "fuzz/artifacts/$target"/crash-* >/dev/null 2>&1; then
    echo "$target crashed: see fuzz/artifacts/$target" >&2
    exit 1
  fi
done
