#!/usr/bin/env bash
# Installs the dependencies, builds build/layerwise and runs the bundled stories260K model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
echo '+ build/layerwise generate --model models/stories260K --prompt "Once upon a time" --max-new-tokens 64' >&2
build/layerwise generate --model models/stories260K --prompt "Once upon a time" --max-new-tokens 64
