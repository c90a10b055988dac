#!/usr/bin/env python3
"""Encoding speed of layerwise's tokenizer against Hugging Face's Rust `tokenizers`, side by side.

    python3 bench/tokenizer_bench.py [--tokenizer DIR ...] [--megabytes 1] [--repeat 3]

Builds a deterministic ~1 MB text (English prose from the licence texts on this machine, this
repository's source code, and llama.cpp's multilingual tokenizer test strings from ../shared),
encodes it with `build/layerwise tokenize --file --parse-special` and with `tokenizers.Tokenizer.encode` (which
recognises special tokens in the text by default; one
string, one thread: the same work), checks that both give the same ids, and prints tokens/s for
each and the ratio. Needs `pip install tokenizers` (a developer tool; nothing here runs in CI).
"""
import argparse
import glob
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus(megabytes):
    pieces = []
    for pattern in ["/usr/share/common-licenses/*", ROOT + "/src/**/*.cpp", ROOT + "/src/**/*.h", ROOT + "/README.md"]:
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path):
                with open(path, encoding="utf-8", errors="ignore") as f:
                    pieces.append(f.read())
    for path in sorted(glob.glob(os.path.join(ROOT, "..", "shared", "vocab", "*.inp"))):
        with open(path, encoding="utf-8", errors="ignore") as f:
            pieces.append(f.read().replace("\n__ggml_vocab_test__\n", "\n"))
    text, i = [], 0
    size = 0
    target = int(megabytes * 1_000_000)
    while size < target:
        piece = pieces[i % len(pieces)]
        text.append(piece)
        size += len(piece.encode("utf-8"))
        i += 1
    data = "".join(text).encode("utf-8")[:target]
    return data.decode("utf-8", errors="ignore")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", action="append", help="directory with tokenizer.json (repeatable)")
    parser.add_argument("--megabytes", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each side")
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "layerwise"))
    args = parser.parse_args()
    import tokenizers

    dirs = args.tokenizer or [os.path.join(ROOT, "models", "stories260K")]
    text = corpus(args.megabytes)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; tokenizers {tokenizers.__version__}")
    print(f"text: {len(text.encode('utf-8'))} bytes, {len(text)} characters")
    print(f"{'tokenizer':40} {'tokens':>9} {'layerwise tok/s':>16} {'tokenizers tok/s':>17} {'ratio':>6}  ids equal")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "text.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        for directory in dirs:
            rust = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
            best_rust, rust_ids = None, None
            for _ in range(args.repeat):
                start = time.perf_counter()
                encoding = rust.encode(text, add_special_tokens=False)
                seconds = time.perf_counter() - start
                best_rust = seconds if best_rust is None else min(best_rust, seconds)
                rust_ids = encoding.ids
            best_ours, our_ids = None, None
            for _ in range(args.repeat):
                run = subprocess.run([args.binary, "tokenize", "--model", directory, "--file", path, "--no-special-tokens", "--parse-special"],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"layerwise failed: {run.stderr}")
                # stderr: "encoded B bytes into T tokens in S s (...)"
                seconds = float(run.stderr.split(" in ")[1].split(" s")[0])
                best_ours = seconds if best_ours is None else min(best_ours, seconds)
                our_ids = [int(x) for x in run.stdout.split()]
            count = len(rust_ids)
            print(f"{os.path.relpath(directory, ROOT):40} {count:9d} {count / best_ours:16.0f} {count / best_rust:17.0f} "
                  f"{best_rust / best_ours:6.2f}  {our_ids == rust_ids}")


if __name__ == "__main__":
    main()
