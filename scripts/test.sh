#!/usr/bin/env bash
# Builds and runs the test suite. --sanitize: the same suite built with AddressSanitizer and
# UndefinedBehaviorSanitizer, in build-asan/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
dir=build
flags=(-DCMAKE_BUILD_TYPE=Release)
if [[ "${1:-}" == "--sanitize" ]]; then
  dir=build-asan
  # -g1: line tables are all a sanitizer report needs, and full debug information costs a sixth
  # of the build's compile time.
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DLAYERWISE_SANITIZE=ON "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG")
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" --output-on-failure -j"$(nproc)"
