#!/usr/bin/env bash
# Builds llama.cpp's command-line tools (llama-perplexity, llama-bench, llama-tokenize,
# llama-quantize) for the comparisons in bench/, from the llama.cpp source vendored in PyPI's
# llama-cpp-python sdist (PyPI is the only registry this project reaches; the sdist carries the
# whole llama.cpp tree under vendor/llama.cpp).
#
#   bash bench/build_llama_cpp.sh            # prints the folder holding the binaries
#
# Prints that folder (and nothing else) on stdout; progress goes to stderr. Idempotent: when the
# binaries are there it prints the folder at once. CPU only (GGML_NATIVE, no CUDA, no BLAS), static
# libraries so the binaries stand alone, -j2. Needs cmake, g++, make and python3 (the
# Debian packages scripts/install-deps.sh installs). Everything goes under
# ${LAYERWISE_CACHE_DIR:-$HOME/.cache/layerwise}/llama.cpp-<version>/:
#   llama_cpp_python-<version>.tar.gz   the sdist (from PyPI's simple index, sha256 checked)
#   src/                                vendor/llama.cpp from it
#   build/                              the cmake build
#   bin/                                llama-perplexity, llama-bench, llama-tokenize, llama-quantize, BUILD-INFO
#
# LLAMA_CPP_PYTHON_VERSION overrides the pinned version (the build options fit 0.3.36, whose
# llama.cpp is commit 0c1e570 of the 0.5.0-dev series; older trees may need other options).
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${LAYERWISE_CACHE_DIR:-$HOME/.cache/layerwise}"
HOME_DIR="$CACHE/llama.cpp-$VERSION"
BIN="$HOME_DIR/bin"
TOOLS=(llama-perplexity llama-bench llama-tokenize llama-quantize)
JOBS="${LLAMA_CPP_JOBS:-2}"

log() { echo "build_llama_cpp: $*" >&2; }

complete() {
    for tool in "${TOOLS[@]}"; do
        [[ -x "$BIN/$tool" ]] || return 1
    done
    [[ -f "$BIN/BUILD-INFO" ]]
}

if complete; then
    echo "$BIN"
    exit 0
fi

for tool in cmake g++ make python3; do
    command -v "$tool" >/dev/null || { log "$tool is missing (apt-get install cmake g++ make python3-pip)"; exit 1; }
done

mkdir -p "$HOME_DIR"
start=$(date +%s)
SDIST="$HOME_DIR/llama_cpp_python-$VERSION.tar.gz"
if [[ ! -f "$SDIST" ]]; then
    log "downloading the llama-cpp-python $VERSION sdist from PyPI"
    # Straight from PyPI's simple index, checked against its sha256: `pip download --no-binary`
    # would build the sdist's metadata, and with it every build dependency from source.
    python3 - "$VERSION" "$SDIST" <<'PY' >&2
import hashlib, os, re, sys, urllib.request
version, target = sys.argv[1], sys.argv[2]
index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/")
page = urllib.request.urlopen(index + "/llama-cpp-python/", timeout=120).read().decode()
found = re.search(r'href="([^"]*llama_cpp_python-%s\.tar\.gz)#sha256=([0-9a-f]{64})"' % re.escape(version), page)
if not found:
    sys.exit("build_llama_cpp: no llama_cpp_python-%s.tar.gz in %s/llama-cpp-python/" % (version, index))
url = urllib.parse.urljoin(index + "/llama-cpp-python/", found.group(1))
data = urllib.request.urlopen(url, timeout=600).read()
if hashlib.sha256(data).hexdigest() != found.group(2):
    sys.exit("build_llama_cpp: %s does not match the index's sha256" % url)
with open(target + ".part", "wb") as f:
    f.write(data)
os.replace(target + ".part", target)
PY
fi

SRC="$HOME_DIR/src"
if [[ ! -f "$SRC/CMakeLists.txt" || ! -f "$SRC/.extracted" ]]; then
    log "extracting vendor/llama.cpp"
    rm -rf "$SRC" "$HOME_DIR/extract"
    mkdir -p "$HOME_DIR/extract"
    top="llama_cpp_python-$VERSION"
    tar -xzf "$SDIST" -C "$HOME_DIR/extract" "$top/vendor/llama.cpp" "$top/.git/modules/vendor/llama.cpp/HEAD"
    mv "$HOME_DIR/extract/$top/vendor/llama.cpp" "$SRC"
    # The commit the submodule was at, for the version line; the tree's .git file points into the
    # sdist's .git folder, which is not extracted, so git is kept out of the build.
    commit=$(tr -d '[:space:]' < "$HOME_DIR/extract/$top/.git/modules/vendor/llama.cpp/HEAD")
    echo "$commit" > "$SRC/.llama-cpp-commit"
    rm -f "$SRC/.git"
    rm -rf "$HOME_DIR/extract"
    touch "$SRC/.extracted"
fi
COMMIT=$(cat "$SRC/.llama-cpp-commit" 2>/dev/null || echo unknown)
SHORT=${COMMIT:0:7}

BUILD="$HOME_DIR/build"
log "configuring llama.cpp $SHORT (llama-cpp-python $VERSION) in $BUILD"
# GIT_EXECUTABLE points at false: the extracted tree has no repository, and git must not find an
# enclosing one. LLAMA_BUILD_COMMIT/NUMBER put the vendored commit into --version.
cmake -S "$SRC" -B "$BUILD" \
    -DCMAKE_BUILD_TYPE=Release \
    -DGGML_NATIVE=ON \
    -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF \
    -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF \
    -DLLAMA_BUILD_TOOLS=ON \
    -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_APP=OFF \
    -DLLAMA_BUILD_COMMIT="$SHORT" \
    -DLLAMA_BUILD_NUMBER=0 \
    -DGIT_EXECUTABLE=/bin/false \
    >&2
log "building ${TOOLS[*]} with -j$JOBS"
cmake --build "$BUILD" -j"$JOBS" --target "${TOOLS[@]}" >&2

mkdir -p "$BIN"
for tool in "${TOOLS[@]}"; do
    cp "$BUILD/bin/$tool" "$BIN/$tool.tmp"
    mv "$BIN/$tool.tmp" "$BIN/$tool"
done
seconds=$(( $(date +%s) - start ))
{
    echo "llama-cpp-python $VERSION (PyPI sdist), vendored llama.cpp commit $COMMIT"
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) in ${seconds} s with $(g++ --version | head -1), -j$JOBS"
    echo "cmake: Release, GGML_NATIVE=ON, static, CPU only"
} > "$BIN/BUILD-INFO"
log "built in ${seconds} s"
echo "$BIN"
