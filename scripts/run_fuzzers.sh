#!/usr/bin/env bash
# Builds the libFuzzer targets (clang) and runs each for a bounded time on a temporary copy of its
# seed corpus. Exits non-zero if the build fails or any target finds a crash, leak, timeout,
# sanitizer report or unexpected exception; the reproducer is kept and its path printed.
#
#   scripts/run_fuzzers.sh [SECONDS_PER_TARGET]     (default 30)
#
# Environment: CXX (default clang++), BUILD_DIR (default build-fuzz), JOBS (default 2),
# FUZZ_ARTIFACTS (where crash inputs are kept; default a temporary directory that is kept only
# when something was found).
set -euo pipefail

seconds="${1:-30}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "usage: $0 [SECONDS_PER_TARGET]   (a positive whole number; default 30)" >&2
  exit 2
fi

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${BUILD_DIR:-build-fuzz}"
case "$build_dir" in /*) ;; *) build_dir="$repo/$build_dir" ;; esac
jobs="${JOBS:-2}"
export CXX="${CXX:-clang++}"

if ! command -v "$CXX" >/dev/null 2>&1; then
  echo "run_fuzzers: $CXX not found (install clang and libclang-rt-14-dev)" >&2
  exit 2
fi

echo "== configure ($CXX) in $build_dir"
cmake -S "$repo" -B "$build_dir" -DLAYERWISE_FUZZ=ON -DLAYERWISE_TESTS=OFF >/dev/null
echo "== build"
cmake --build "$build_dir" --target fuzz_safetensors_header fuzz_manifest -j"$jobs"
cmake --build "$build_dir" --target fuzz_gguf -j"$jobs"
cmake --build "$build_dir" --target fuzz_tokenizer_json -j"$jobs"

work="$(mktemp -d "${TMPDIR:-/tmp}/layerwise-fuzz.XXXXXX")"
artifacts="${FUZZ_ARTIFACTS:-$work/artifacts}"
mkdir -p "$artifacts"
failed=()
cleanup() {
  if [ "${#failed[@]}" -eq 0 ] && [ -z "${FUZZ_ARTIFACTS:-}" ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

# Runs one target; its report goes to $work/<target>.report, its exit status to $work/<target>.status.
run_target() {
  local target="$1" seeds="$2" dict="$3"
  local corpus="$work/corpus-$target" log="$work/$target.log"
  mkdir -p "$corpus"
  cp -R "$seeds/." "$corpus/"
  local status=0
  # -timeout: one input taking over 10 s is a finding; -rss_limit_mb: so is blowing 2 GiB.
  # The outer timeout only guards against a hang of libFuzzer itself.
  timeout --kill-after=30 $((seconds + 120)) \
    "$build_dir/fuzz/$target" "$corpus" \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -dict="$dict" \
      -artifact_prefix="$artifacts/$target-" >"$log" 2>&1 || status=$?
  {
    echo "== $target: ${seconds}s on $(ls "$seeds" | wc -l) seeds"
    # libFuzzer prints periodic lines "#N ... cov: C ft: F corp: K ... exec/s: E"; show the last one.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
  } >"$work/$target.report"
  echo "$status" >"$work/$target.status"
}

# Each target is one process on one core: run $jobs of them at a time, each for its full time.
targets=(
  "fuzz_safetensors_header $repo/fuzz/corpus/safetensors $repo/fuzz/safetensors.dict"
  "fuzz_manifest $repo/fuzz/corpus/manifest $repo/fuzz/manifest.dict"
  "fuzz_gguf $repo/fuzz/corpus/gguf $repo/tests/fixtures/gguf/fuzz_gguf.dict"
  "fuzz_tokenizer_json $repo/fuzz/corpus/tokenizer $repo/fuzz/tokenizer_json.dict"
)
echo "== running ${#targets[@]} targets, $jobs at a time"
for entry in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  # shellcheck disable=SC2086
  run_target $entry &
done
wait
for entry in "${targets[@]}"; do
  target="${entry%% *}"
  cat "$work/$target.report"
  status="$(cat "$work/$target.status")"
  if [ "$status" -ne 0 ]; then
    echo "!! $target failed (exit $status); log: $work/$target.log" >&2
    # The sanitizer / libFuzzer report, without the periodic progress lines.
    grep -vE '^#[0-9]+' "$work/$target.log" | tail -n 60 >&2
    ls "$artifacts"/"$target"-* 2>/dev/null | sed 's/^/!! reproducer: /' >&2 || true
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -ne 0 ]; then
  echo "run_fuzzers: findings in: ${failed[*]} (logs and reproducers kept in $work)" >&2
  echo "reproduce with: $build_dir/fuzz/<target> <reproducer>" >&2
  exit 1
fi
echo "run_fuzzers: no findings"
