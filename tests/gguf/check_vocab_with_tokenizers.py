#!/usr/bin/env python3
"""Checks the tokenizer.json that src/gguf converts from a GGUF vocabulary with Hugging Face
`tokenizers` itself, against llama.cpp's test vectors (../shared/vocab/ggml-vocab-NAME.gguf.inp /
.out: made with Hugging Face tokenizers, no BOS, special tokens not parsed).

A developer tool, not run in CI (it needs `pip install tokenizers`, and `transformers gguf` for
--compare-transformers):

    cmake --build build-gguf --target gguf_tokenizer_json
    python3 tests/gguf/check_vocab_with_tokenizers.py [--tool build-gguf/src/gguf/gguf_tokenizer_json]
        [--vocab-dir ../shared/vocab] [--compare-transformers] [NAME ...]

Exits non-zero if any vector differs. --compare-transformers also converts each file with
transformers (AutoTokenizer.from_pretrained(..., gguf_file=...)) and reports where the two
tokenizer.json files differ, and how transformers' own conversion does on the vectors.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_NAMES = ["llama-spm", "phi-3", "gpt-2", "starcoder", "refact", "mpt", "falcon", "deepseek-llm",
                 "deepseek-coder"]


def read_vectors(vocab_dir, name):
    with open(os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf.inp"), encoding="utf-8", newline="") as f:
        texts = f.read().split("\n__ggml_vocab_test__\n")
    if texts and texts[-1] == "":
        texts.pop()
    with open(os.path.join(vocab_dir, f"ggml-vocab-{name}.gguf.out"), encoding="utf-8") as f:
        lines = f.read().split("\n")
    expected = [[int(x) for x in line.split()] for line in lines[: len(texts)]]
    if len(expected) != len(texts):
        raise SystemExit(f"{name}: {len(texts)} test strings but {len(expected)} expected lines")
    return texts, expected


def run_vectors(tokenizer, texts, expected, label, show=3):
    bad = 0
    for text, want in zip(texts, expected):
        got = tokenizer.encode(text, add_special_tokens=False).ids
        if got != want:
            bad += 1
            if bad <= show:
                print(f"    {label}: {text!r}\n      got      {got}\n      expected {want}")
    return bad


def compare_json(mine, theirs):
    notes = []
    for key in ("normalizer", "pre_tokenizer", "decoder", "post_processor"):
        if mine.get(key) != theirs.get(key):
            notes.append(f"{key} differs")
    mm, tm = mine["model"], theirs["model"]
    for key in sorted(set(mm) | set(tm)):
        if key in ("vocab", "merges"):
            continue
        if mm.get(key) != tm.get(key):
            notes.append(f"model.{key}: ours {mm.get(key)!r}, transformers {tm.get(key)!r}")
    if mm["vocab"] != tm["vocab"]:
        ours, theirs_v = mm["vocab"], tm["vocab"]
        only_ours = [k for k in ours if k not in theirs_v]
        only_theirs = [k for k in theirs_v if k not in ours]
        moved = [k for k in ours if k in theirs_v and ours[k] != theirs_v[k]]
        notes.append(f"vocab: {len(ours)} vs {len(theirs_v)} entries; {len(only_ours)} only ours "
                     f"{only_ours[:3]}, {len(only_theirs)} only transformers' {only_theirs[:3]}, "
                     f"{len(moved)} with other ids")
    to_pairs = lambda merges: [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    if to_pairs(mm["merges"]) != to_pairs(tm["merges"]):
        a, b = to_pairs(mm["merges"]), to_pairs(tm["merges"])
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        notes.append(f"merges: {len(a)} vs {len(b)}, first difference at {first}")
    ours_added = {t["id"]: (t["content"], t["special"]) for t in mine["added_tokens"]}
    theirs_added = {t["id"]: (t["content"], t["special"]) for t in theirs["added_tokens"]}
    if ours_added != theirs_added:
        diff = sorted(set(ours_added.items()) ^ set(theirs_added.items()))
        notes.append(f"added tokens differ ({len(diff)} entries), e.g. {diff[:4]}")
    return notes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", default=DEFAULT_NAMES)
    parser.add_argument("--tool", default=os.path.join(REPO, "build-gguf", "src", "gguf", "gguf_tokenizer_json"))
    parser.add_argument("--vocab-dir", default=os.path.join(REPO, "..", "shared", "vocab"))
    parser.add_argument("--compare-transformers", action="store_true")
    args = parser.parse_args()

    from tokenizers import Tokenizer

    if not os.path.exists(args.tool):
        raise SystemExit(f"{args.tool} not found: cmake --build build-gguf --target gguf_tokenizer_json")
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.names:
            gguf = os.path.join(args.vocab_dir, f"ggml-vocab-{name}.gguf")
            out_dir = os.path.join(tmp, name)
            os.makedirs(out_dir)
            result = subprocess.run([args.tool, gguf, out_dir], capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{name}: conversion failed: {result.stderr.strip()}")
                failed.append(name)
                continue
            with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
                text = f.read()
            with open(os.path.join(out_dir, "tokenizer_config.json"), encoding="utf-8") as f:
                config = json.load(f)
            mine = json.loads(text)
            tokenizer = Tokenizer.from_str(text)
            if not os.path.exists(gguf + ".inp"):
                print(f"{name}: converted and loaded ({tokenizer.get_vocab_size()} tokens); no test vectors")
                continue
            texts, expected = read_vectors(args.vocab_dir, name)
            bad = run_vectors(tokenizer, texts, expected, "ours")
            status = "ok" if bad == 0 else f"{bad} FAILED"
            print(f"{name}: {len(texts) - bad}/{len(texts)} vectors match ({status}); "
                  f"bos {config.get('bos_token')!r} add_bos {config.get('add_bos_token')}")
            if bad:
                failed.append(name)
            if args.compare_transformers:
                try:
                    from transformers import AutoTokenizer
                    theirs_tok = AutoTokenizer.from_pretrained(args.vocab_dir, gguf_file=os.path.basename(gguf))
                except Exception as e:  # transformers refuses some architectures
                    print(f"    transformers: cannot convert ({str(e)[:120]})")
                    continue
                theirs = json.loads(theirs_tok.backend_tokenizer.to_str())
                theirs_bad = run_vectors(Tokenizer.from_str(json.dumps(theirs)), texts, expected, "transformers", 0)
                print(f"    transformers' conversion: {len(texts) - theirs_bad}/{len(texts)} vectors match")
                for note in compare_json(mine, theirs):
                    print(f"    vs transformers: {note}")
    if failed:
        print("FAILED:", " ".join(failed))
        return 1
    print("all vectors match")
    return 0


if __name__ == "__main__":
    sys.exit(main())
