#!/usr/bin/env python3
"""Kernel benchmark: layerwise's prefill and decode speed, fully resident, against llama.cpp's
llama-bench on the same GGUF file and against this machine's measured ceilings, in one run.

    python3 bench/kernel_bench.py [--shape tinyllama-1.1b] [--dtypes f32,f16,bf16,q4_0,q4_k_m,...] [--prompt 512]
        [--decode 64] [--threads N] [--repeat 3] [--workdir DIR] [--keep] [--json OUT] [--no-llama]

Steps: describe the machine; run build/hw_probe with the same threads (read and copy bandwidth,
FP32 FMA and AMX BF16 peaks); then for each dtype write a random-weight checkpoint
(build/make_checkpoint), convert it to a GGUF file of the same dtype (bench/hf_to_gguf.py), delete
the checkpoint (for q4_0, q4_k_m, q8_0, iq4_xs, q5_k_m, q6_k: an F16 GGUF file quantized by
llama.cpp's llama-quantize, then deleted), and run on that one file, interleaved, a warm-up round (not counted) and --repeat
counted rounds of: `layerwise bench --prompt PROMPT --decode DECODE --repeat 1 --json` (our
counterpart of llama-bench: the model read once, a warm-up pass, then a PROMPT-token prefill and
DECODE one-token steps from an empty cache on random ids; F16 files twice, computing in float32 as
by default and with --compute-dtype bf16 on AMX) and `llama-bench -p PROMPT -n DECODE -r 1 -o json`
(its pp and tg tests, after its own warm-up). Prints one table (medians of
the rounds, ratios, achieved GB/s and TFLOP/s, share of the ceilings), the targets, and deletes the
scratch files unless --keep. See bench/README.md.

Needs numpy and the gguf package (bench/hf_to_gguf.py) and llama.cpp's llama-bench from
bench/build_llama_cpp.sh (built on first use, about 5 minutes; --no-llama skips llama.cpp).
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stream_bench import (run_main, engine_tools, find_llama_cpp, ROOT, BenchError, checkpoint_bytes, describe_machine, fmt_size,  # noqa: E402
                          indent, known_shapes, make_workdir, meminfo_bytes, parse_size, print_table,
                          run_tool, say)
from stream_bench import spawn as spawn_process  # noqa: E402

HF_TO_GGUF = os.path.join(ROOT, "bench", "hf_to_gguf.py")
# Quantized files: an F16 GGUF file made as for "f16", then llama.cpp's llama-quantize to this
# type (its own name for it), the F16 file deleted.
QUANTIZED = {"q4_0": "Q4_0", "q4_k_m": "Q4_K_M", "q8_0": "Q8_0", "iq4_xs": "IQ4_XS", "q5_k_m": "Q5_K_M",
             "q6_k": "Q6_K"}
DTYPES = ("f32", "f16", "bf16") + tuple(QUANTIZED)
# Our runs of each checkpoint dtype: (precision of the products, extra flags). F16 checkpoints
# multiply in float32 unless asked for BF16 (AMX); quantized files run on their blocks ("q":
# integer products in decode, blocks widened to float tiles in prefill).
VARIANTS = {"f32": [("f32", [])], "f16": [("f32", []), ("bf16", ["--compute-dtype", "bf16"])], "bf16": [("bf16", [])]}
VARIANTS.update({q: [("q", [])] for q in QUANTIZED})
# Targets (GitHub issues 6 and 13): decode at least as fast as llama.cpp and at 90 % (85 % for
# quantized files) of the read bandwidth; a 512-token prefill 5x llama.cpp's for F16/BF16, 1.5x for
# quantized files and at least its speed for F32.
DECODE_VS_LLAMA, DECODE_VS_BANDWIDTH = 1.0, {"f32": 0.90, "bf16": 0.90, "q": 0.85}
PREFILL_VS_LLAMA = {"f32": 1.0, "bf16": 5.0, "q": 1.5}  # by the precision of our products
# And a resident run of a quantized file holds at most 1.1x what llama-bench holds (peak RSS by wait4;
# llama.cpp's mapped file pages count once touched, as our read copy does).
PEAK_RSS_VS_LLAMA = 1.1
TARGET_PROMPT = 512
# A run during which other processes used more than this share of the machine's CPUs is flagged.
BUSY_SHARE = 0.15


def usable_cpus():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fmt_rate(value, unit, scale):
    if value is None:
        return "n/a"
    x = value / scale
    return "%s %s" % ("%.2f" % x if x >= 1 else "%.3g" % x, unit)


def fmt_pct(x):
    return "n/a" if x is None else "%.0f%%" % (100 * x)


def largest(values):
    values = [v for v in values if v is not None]
    return max(values) if values else None


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------- processes

def cpu_seconds():
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat; None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / tick, steal / tick


def spawn(command, timeout):
    """Runs command (stream_bench's spawn). Returns a dict: exit (negative: the signal), stdout,
    stderr, wall_s, cpu_s (the child's, wait4), peak_rss (wait4's, bytes; None when it cannot be
    told from this script's own peak, the floor), timed_out, and others_share: the CPU time other
    processes used during the run (the machine's busy time from /proc/stat minus the child's) as a
    share of wall time x the machine's CPUs; steal_share likewise for time the hypervisor took."""
    before = cpu_seconds()
    code, stdout, stderr, wall, cpu, rss, floor, timed_out = spawn_process(command, timeout=timeout)
    after = cpu_seconds()
    result = {"exit": code, "stdout": stdout, "stderr": stderr, "wall_s": wall, "cpu_s": cpu, "timed_out": timed_out,
              "peak_rss": rss if rss > floor else None, "others_share": None, "steal_share": None}
    if before and after and wall > 0:
        capacity = wall * (os.cpu_count() or 1)
        result["others_share"] = max(0.0, (after[0] - before[0]) - cpu) / capacity
        result["steal_share"] = max(0.0, after[1] - before[1]) / capacity
    return result


def exit_text(result, timeout):
    if result["timed_out"]:
        return "killed after the %d s timeout" % timeout
    code = result["exit"]
    return "killed by signal %d" % -code if code < 0 else "exit status %d" % code


def busy_text(run):
    share = run.get("others_share")
    return "other processes %s of the CPUs%s" % (
        "n/a" if share is None else "%.0f%%" % (100 * share),
        "  <- BUSY: this run's timing is not reliable" if share is not None and share > BUSY_SHARE else "")


# ----------------------------------------------------------------------------- tools

def find_hw_probe(build_dir):
    """build_dir/hw_probe, built with cmake first when it is missing and build_dir is a cmake build."""
    probe = os.path.join(build_dir, "hw_probe")
    if not os.access(probe, os.X_OK) and os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
        say("  hw_probe      not in %s yet: cmake --build %s --target hw_probe" % (build_dir, build_dir))
        built = subprocess.run(["cmake", "--build", build_dir, "--target", "hw_probe"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True)
        if built.returncode != 0:
            raise BenchError("building hw_probe failed:\n%s" % built.stdout[-3000:])
    if not os.access(probe, os.X_OK):
        raise BenchError("%s not found; build it: cmake --build %s --target hw_probe (or pass --build-dir)" % (
            probe, build_dir))
    return probe


def run_probe(probe, threads, probe_bytes):
    command = [probe, "--threads", str(threads)] + (["--bytes", str(probe_bytes)] if probe_bytes else [])
    say("  $ " + " ".join(command))
    result = spawn(command, 300)
    if result["exit"] != 0:
        raise BenchError("hw_probe failed (%s):\n%s%s" % (exit_text(result, 300), result["stdout"][-2000:],
                                                         result["stderr"][-2000:]))
    try:
        probe_result = json.loads(result["stdout"])
    except ValueError as e:
        raise BenchError("hw_probe printed something that is not JSON (%s):\n%s" % (e, result["stdout"][-2000:]))
    probe_result["stderr"] = result["stderr"]
    probe_result["wall_s"] = result["wall_s"]
    probe_result["others_share"] = result["others_share"]
    return probe_result


def describe_probe(p):
    parts = ["read %s" % fmt_rate(p.get("read_bytes_per_second"), "GB/s", 1e9),
             "copy %s" % fmt_rate(p.get("copy_bytes_per_second"), "GB/s", 1e9),
             "FP32 FMA %s (%s)" % (fmt_rate(p.get("fp32_fma_flops"), "TFLOP/s", 1e12), p.get("fp32_fma_isa", "?")),
             "AMX BF16 %s" % (fmt_rate(p.get("amx_bf16_flops"), "TFLOP/s", 1e12) if p.get("amx_bf16_flops")
                              else "none (%s)" % (p.get("amx_note") or "no AMX"))]
    return "; ".join(parts)


# ----------------------------------------------------------------------------- the model's work

def gguf_work(gguf_path, shape):
    """What one token costs, from the GGUF file's tensors (what both engines read) and the shape.
    decode_bytes: every 2-D weight but the embedding table (looked up row by row); with a tied
    head the table is the head and counts once. layer_params / head_params: matrix parameters."""
    import gguf  # noqa: E402  (the package hf_to_gguf.py needs anyway)
    reader = gguf.GGUFReader(gguf_path)
    tensors = {t.name: t for t in reader.tensors}
    decode_bytes = layer_params = 0
    for name, t in tensors.items():
        if len(t.shape) < 2 or name == "token_embd.weight":
            continue
        decode_bytes += int(t.n_bytes)
        if name.startswith("blk."):
            layer_params += int(t.n_elements)
    tied = "output.weight" not in tensors
    head = tensors["token_embd.weight"] if tied else tensors["output.weight"]
    if tied:
        decode_bytes += int(head.n_bytes)
    hidden, layers, heads, kv_heads, ffn, vocab = shape
    q_dim = heads * (hidden // heads)
    return {"decode_bytes": decode_bytes, "layer_params": layer_params, "head_params": int(head.n_elements),
            "layers": layers, "q_dim": q_dim, "file_bytes": os.path.getsize(gguf_path),
            "tied_head": tied, "tensor_types": sorted({t.tensor_type.name for t in tensors.values() if len(t.shape) >= 2})}


def prefill_flops(work, tokens):
    """2 x layer matrix parameters x tokens + 2 x head parameters (the last position only: both
    engines compute logits for it alone) + attention 4 x layers x q_dim x tokens(tokens+1)/2
    (q.k and p.v over the causal triangle)."""
    return (2 * work["layer_params"] * tokens + 2 * work["head_params"] +
            4 * work["layers"] * work["q_dim"] * tokens * (tokens + 1) // 2)


# ----------------------------------------------------------------------------- runs

def run_ours(name, command, timeout):
    """`layerwise bench --json`: one JSON object on stdout with its pp and tg tests."""
    say("  %s\n    $ %s" % (name, " ".join(command)))
    run = spawn(command, timeout)
    stdout, stderr, wall, cpu = run["stdout"], run["stderr"], run["wall_s"], run["cpu_s"]
    run.update({"name": name, "command": command, "report": None, "pp": None, "tg": None, "compute": None,
                "error": None})
    if run["exit"] != 0:
        run["error"] = exit_text(run, timeout)
    else:
        try:
            report_json = json.loads(stdout)
            run["report"] = report_json
            run["compute"] = report_json["compute"]
            for test in report_json["tests"]:
                run["pp" if test["test"].startswith("pp") else "tg"] = test
            if not run["pp"] or not run["tg"]:
                run["error"] = "layerwise bench's JSON lacks the pp or tg test"
        except (ValueError, KeyError) as e:
            run["error"] = "layerwise bench's output is not the expected JSON: %s" % e
    if run["error"]:
        say("    FAILED: %s\n    stdout (tail):\n%s\n    stderr (tail):\n%s" % (
            run["error"], indent(stdout[-1500:]), indent(stderr[-3000:])))
    else:
        say("    %s %.1f tok/s; %s %.2f tok/s; warm-up %.2f s; %s; wall %.2f s, %.2f cores busy; %s" % (
            run["pp"]["test"], run["pp"]["tokens_per_second"], run["tg"]["test"], run["tg"]["tokens_per_second"],
            run["report"]["warm_up_seconds"], run["compute"], wall, cpu / wall if wall else 0, busy_text(run)))
    return run


def run_llama_bench(name, command, prompt, decode, timeout):
    say("  %s\n    $ %s" % (name, " ".join(command)))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    run = spawn(command, timeout)
    stdout, stderr, wall, cpu = run["stdout"], run["stderr"], run["wall_s"], run["cpu_s"]
    run.update({"name": name, "command": command, "load_before": load, "pp": None, "tg": None, "tests": None,
                "error": None})
    if run["exit"] != 0:
        run["error"] = exit_text(run, timeout)
    else:
        try:
            start = stdout.index("[")
            tests = json.loads(stdout[start:])
            run["tests"] = tests
            for test in tests:
                if test.get("n_prompt") == prompt and test.get("n_gen") == 0:
                    run["pp"] = test
                elif test.get("n_gen") == decode and test.get("n_prompt") == 0:
                    run["tg"] = test
            if (prompt and not run["pp"]) or (decode and not run["tg"]):
                run["error"] = "llama-bench's JSON lacks the pp%d or tg%d test" % (prompt, decode)
        except ValueError as e:
            run["error"] = "llama-bench's output is not the expected JSON: %s" % e
    if run["error"]:
        say("    FAILED: %s\n    stdout (tail):\n%s\n    stderr (tail):\n%s" % (
            run["error"], indent(stdout[-1500:]), indent(stderr[-3000:])))
    else:
        say("    pp%d %.1f tok/s; tg%d %.2f tok/s; %s; wall %.2f s, %.2f cores busy; %s" % (
            prompt, run["pp"]["avg_ts"], decode, run["tg"]["avg_ts"],
            "%s, %s" % (run["pp"].get("model_type", "?"), run["pp"].get("backends", "?")),
            wall, cpu / wall if wall else 0, busy_text(run)))
    return run


def products_of(s):
    """The key of a summary's targets: "bf16" on AMX, "q" for a quantized file, else "f32"."""
    return "bf16" if s["uses_amx"] else ("q" if s["precision"] == "q" else "f32")


def bench_dtype(args, dtype, tools, shape, scratch, probe):
    """Makes the dtype's GGUF file and runs the rounds; returns its entry for the results. The
    checkpoint is deleted once the GGUF file exists, the GGUF file after the runs (unless --keep),
    also when something fails."""
    hf_dir = os.path.join(scratch, "hf-%s" % dtype)
    gguf_path = os.path.join(scratch, "model-%s.gguf" % dtype)
    try:
        return run_dtype(args, dtype, tools, shape, scratch, probe, hf_dir, gguf_path)
    finally:
        shutil.rmtree(hf_dir, ignore_errors=True)
        if not args.keep and os.path.exists(gguf_path):
            os.remove(gguf_path)


def run_dtype(args, dtype, tools, shape, scratch, probe, hf_dir, gguf_path):
    layerwise, make_checkpoint, llama_bench, llama_quantize = tools
    entry = {"dtype": dtype, "error": None, "ours": {}, "llama": []}
    made = "f16" if dtype in QUANTIZED else dtype  # what make_checkpoint and hf_to_gguf.py write
    _, model_bytes = checkpoint_bytes(shape, made)
    free = shutil.disk_usage(scratch).free
    if free < 2.05 * model_bytes:
        raise BenchError("not enough disk space in %s for the %s checkpoint and its GGUF file: %s free, %s needed" % (
            scratch, dtype, fmt_size(free), fmt_size(2.05 * model_bytes)))
    say()
    say("%s: %s %s, %s" % (dtype.upper(), args.shape, dtype, fmt_size(model_bytes)))
    seconds, _ = run_tool([make_checkpoint, "--shape", args.shape, "--dtype", made, "--out", hf_dir, "--quiet"],
                          "make_checkpoint")
    say("    wrote %s in %.1f s" % (fmt_size(os.path.getsize(os.path.join(hf_dir, "model.safetensors"))), seconds))
    float_path = gguf_path + ".f16.gguf" if dtype in QUANTIZED else gguf_path
    try:
        seconds, _ = run_tool([sys.executable, HF_TO_GGUF, hf_dir, float_path, "--outtype", made], "hf_to_gguf.py")
        shutil.rmtree(hf_dir)  # the GGUF file is what both engines read
        if dtype in QUANTIZED:
            if not llama_quantize:
                raise BenchError("%s files are made by llama.cpp's llama-quantize (not with --no-llama)" % dtype)
            quantized, _ = run_tool([llama_quantize, float_path, gguf_path, QUANTIZED[dtype], str(args.threads)],
                                    "llama-quantize")
            seconds += quantized
    finally:
        if float_path != gguf_path and os.path.exists(float_path):
            os.remove(float_path)
    work = gguf_work(gguf_path, shape)
    entry["gguf"] = gguf_path
    entry["work"] = work
    say("    wrote %s (%s) in %.1f s and deleted the checkpoint; a decode token reads %s of weights (2-D tensors "
        "but the embedding table); a %d-token prefill is %s" % (
            fmt_size(work["file_bytes"]), "/".join(work["tensor_types"]), seconds, fmt_size(work["decode_bytes"]),
            args.prompt, fmt_rate(prefill_flops(work, args.prompt), "GFLOP", 1e9)))
    available = meminfo_bytes("MemAvailable") or 0
    if available and work["file_bytes"] > 0.5 * available:
        say("    !! the file is %s and %s of memory is available: it may not stay in the page cache, and both engines "
            "hold the weights too" % (fmt_size(work["file_bytes"]), fmt_size(available)))

    llama_command = [llama_bench, "-m", gguf_path, "-p", str(args.prompt), "-n", str(args.decode),
                     "-t", str(args.threads), "-r", "1", "-o", "json"] if llama_bench else None
    ours = [(precision, [layerwise, "bench", "--model", gguf_path, "--prompt", str(args.prompt), "--decode",
                         str(args.decode), "--repeat", "1", "--seed", str(args.seed), "--threads", str(args.threads),
                         "--json"] + flags) for precision, flags in VARIANTS[dtype]]
    entry["ours"] = {precision: [] for precision, _ in ours}
    for round_number in range(args.repeat + 1):
        label = "warm-up round (not counted)" if round_number == 0 else "round %d of %d" % (round_number, args.repeat)
        say("  %s %s" % (dtype.upper(), label))
        for precision, command in ours:
            run = run_ours("layerwise bench, %s products" % precision, command, args.timeout)
            run["round"] = round_number
            entry["ours"][precision].append(run)
        if llama_command:
            run = run_llama_bench("llama-bench pp%d + tg%d" % (args.prompt, args.decode), llama_command, args.prompt,
                                  args.decode, args.timeout)
            run["round"] = round_number
            entry["llama"].append(run)
    summarize_dtype(args, entry, probe)
    return entry


# ----------------------------------------------------------------------------- figures

def summarize_dtype(args, entry, probe):
    """entry["summaries"]: one per precision of our products, each against the same llama.cpp runs."""
    counted = lambda runs: [r for r in runs if r["round"] > 0]  # noqa: E731
    llama = [r for r in counted(entry["llama"]) if not r["error"]]
    work = entry["work"]
    flops = prefill_flops(work, args.prompt)
    ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731

    def busiest(runs):
        shares = [r["others_share"] for r in runs if r.get("others_share") is not None]
        return max(shares) if shares else None

    entry["summaries"] = []
    for precision, runs in entry["ours"].items():
        good = [r for r in counted(runs) if not r["error"]]
        compute = next((r["compute"] for r in good if r["compute"]), None)
        uses_amx = bool(compute and compute.startswith("bf16 matrix products"))
        if uses_amx and probe.get("amx_bf16_flops"):
            prefill_peak, prefill_peak_name = probe["amx_bf16_flops"], "AMX BF16 peak"
        else:
            prefill_peak, prefill_peak_name = probe.get("fp32_fma_flops"), "FP32 FMA peak"
        s = {
            "precision": precision,
            "compute": compute,
            "uses_amx": uses_amx,
            "ours_prefill_tps": median(r["pp"]["tokens_per_second"] for r in good),
            "ours_decode_tps": median(r["tg"]["tokens_per_second"] for r in good),
            "ours_warm_up_s": median(r["report"]["warm_up_seconds"] for r in good),
            "ours_peak_rss": largest(r["peak_rss"] for r in good),
            "llama_peak_rss": largest(r["peak_rss"] for r in llama),
            "llama_pp_tps": median(r["pp"]["avg_ts"] for r in llama),
            "llama_tg_tps": median(r["tg"]["avg_ts"] for r in llama),
            "prefill_flops": flops,
            "decode_bytes": work["decode_bytes"],
            "prefill_peak": prefill_peak,
            "prefill_peak_name": prefill_peak_name,
            "read_bandwidth": probe.get("read_bytes_per_second"),
            "samples": {
                "ours_prefill_tps": [r["pp"]["tokens_per_second"] for r in good],
                "ours_decode_tps": [r["tg"]["tokens_per_second"] for r in good],
                "llama_pp_tps": [r["pp"]["avg_ts"] for r in llama],
                "llama_tg_tps": [r["tg"]["avg_ts"] for r in llama],
            },
            "failed_runs": sum(1 for r in runs if r["error"]) + sum(1 for r in entry["llama"] if r["error"]),
            "others_share_max": {"ours_prefill": busiest(counted(runs)), "ours_decode": busiest(counted(runs)),
                                 "llama": busiest(counted(entry["llama"]))},
        }

        def per_second(tps, amount):
            return tps * amount / args.prompt if tps is not None and amount is not None else None

        s["ours_prefill_flops"] = per_second(s["ours_prefill_tps"], flops)
        s["llama_prefill_flops"] = per_second(s["llama_pp_tps"], flops)
        s["ours_decode_bps"] = s["ours_decode_tps"] * work["decode_bytes"] if s["ours_decode_tps"] else None
        s["llama_decode_bps"] = s["llama_tg_tps"] * work["decode_bytes"] if s["llama_tg_tps"] else None
        s["prefill_ratio"] = ratio(s["ours_prefill_tps"], s["llama_pp_tps"])
        s["peak_rss_ratio"] = ratio(s["ours_peak_rss"], s["llama_peak_rss"])
        s["decode_ratio"] = ratio(s["ours_decode_tps"], s["llama_tg_tps"])
        s["prefill_of_peak"] = ratio(s["ours_prefill_flops"], prefill_peak)
        s["llama_prefill_of_peak"] = ratio(s["llama_prefill_flops"], prefill_peak)
        s["decode_of_bandwidth"] = ratio(s["ours_decode_bps"], s["read_bandwidth"])
        s["llama_decode_of_bandwidth"] = ratio(s["llama_decode_bps"], s["read_bandwidth"])
        s["token_counts_ok"] = all(r["pp"]["tokens"] == args.prompt and r["tg"]["tokens"] == args.decode for r in good)
        entry["summaries"].append(s)


def targets_for(args, s):
    """[(regime, text, met: True/False/None)] for one summary (one precision of our products)."""
    out = []
    need = PREFILL_VS_LLAMA[products_of(s)]
    note = "" if args.prompt == TARGET_PROMPT else " (the target is for %d tokens; this run used %d)" % (
        TARGET_PROMPT, args.prompt)
    met = None if s["prefill_ratio"] is None else s["prefill_ratio"] >= need
    out.append(("prefill", "prefill >= %.1fx llama.cpp%s" % (need, note), met))
    parts = [s["decode_ratio"] >= DECODE_VS_LLAMA if s["decode_ratio"] is not None else None,
             s["decode_of_bandwidth"] >= DECODE_VS_BANDWIDTH[products_of(s)] if s["decode_of_bandwidth"] is not None
             else None]
    met = False if False in parts else (None if None in parts else True)
    out.append(("decode", "decode >= %.1fx llama.cpp and >= %.0f%% of read bandwidth" % (
        DECODE_VS_LLAMA, 100 * DECODE_VS_BANDWIDTH[products_of(s)]), met))
    return out


def report(args, entries, probe, results):
    say()
    say("results: %s, %d threads, prompt %d tokens, decode %d tokens, median of %d rounds (after a warm-up round); "
        "each round a fresh process of each engine on the same GGUF file, in the page cache" % (
            args.shape, args.threads, args.prompt, args.decode, args.repeat))
    headers = ["file", "ours: products", "regime", "ours tok/s", "llama.cpp tok/s", "ours/llama.cpp",
               "ours GB/s | TFLOP/s", "llama.cpp GB/s | TFLOP/s", "ceiling", "ours % of ceiling",
               "llama.cpp % of ceiling"]
    rows = []
    for entry in entries:
        dtype = entry["dtype"].upper()
        if entry.get("error"):
            rows.append([dtype, "FAILED: %s" % entry["error"][:70]] + [""] * (len(headers) - 2))
            continue
        for s in entry["summaries"]:
            precision = {"bf16": "bf16 (AMX)", "q": "blocks", "f32": "f32"}[products_of(s)]
            busy = {k: " *" if v is not None and v > BUSY_SHARE else "" for k, v in s["others_share_max"].items()}
            rows.append([dtype, precision, "prefill %d" % args.prompt,
                         "%.1f%s" % (s["ours_prefill_tps"], busy["ours_prefill"]) if s["ours_prefill_tps"] else "FAILED",
                         "%.1f%s" % (s["llama_pp_tps"], busy["llama"]) if s["llama_pp_tps"] else "n/a",
                         "%.2fx" % s["prefill_ratio"] if s["prefill_ratio"] else "n/a",
                         fmt_rate(s["ours_prefill_flops"], "TFLOP/s", 1e12),
                         fmt_rate(s["llama_prefill_flops"], "TFLOP/s", 1e12),
                         "%s %s" % (s["prefill_peak_name"], fmt_rate(s["prefill_peak"], "TFLOP/s", 1e12)),
                         fmt_pct(s["prefill_of_peak"]), fmt_pct(s["llama_prefill_of_peak"])])
            rows.append([dtype, precision, "decode %d" % args.decode,
                         "%.2f%s" % (s["ours_decode_tps"], busy["ours_decode"]) if s["ours_decode_tps"] else "FAILED",
                         "%.2f%s" % (s["llama_tg_tps"], busy["llama"]) if s["llama_tg_tps"] else "n/a",
                         "%.2fx" % s["decode_ratio"] if s["decode_ratio"] else "n/a",
                         fmt_rate(s["ours_decode_bps"], "GB/s", 1e9), fmt_rate(s["llama_decode_bps"], "GB/s", 1e9),
                         "read %s" % fmt_rate(s["read_bandwidth"], "GB/s", 1e9),
                         fmt_pct(s["decode_of_bandwidth"]), fmt_pct(s["llama_decode_of_bandwidth"])])
    print_table(headers, rows)
    shares = [r["others_share"] for e in entries if not e.get("error")
              for r in [run for runs in e["ours"].values() for run in runs] + e["llama"] if r.get("others_share") is not None]
    if shares:
        marked = any("*" in str(c) for row in rows for c in row)
        say("other processes used %.0f%% of the CPUs during the median run, %.0f%% at most%s" % (
            100 * statistics.median(shares), 100 * max(shares),
            "; * marks a figure with a counted run above %.0f%%: not reliable, rerun on a quiet machine" % (
                100 * BUSY_SHARE) if marked else ""))
        results["others_share"] = {"median": statistics.median(shares), "max": max(shares)}
    say()
    say("ceilings (hw_probe, %d threads, best of %s): %s" % (probe.get("threads", 0), probe.get("repetitions", "?"),
                                                             describe_probe(probe)))
    if probe.get("bandwidth_note"):
        say("  !! %s" % probe["bandwidth_note"])
    if probe.get("others_share") is not None and probe["others_share"] > BUSY_SHARE:
        say("  !! other processes used %.0f%% of the CPUs while hw_probe ran: the ceilings are too low" % (
            100 * probe["others_share"]))
    for entry in entries:
        if entry.get("error"):
            continue
        for s in entry["summaries"]:
            say("%s, %s products: a decode token reads %s of weights; a %d-token prefill is %s; tok/s of each counted "
                "round: ours prefill %s, decode %s; llama.cpp pp %s, tg %s; our warm-up pass (reading the weights) "
                "%s%s%s%s" % (
                    entry["dtype"].upper(), s["precision"], fmt_size(s["decode_bytes"]), args.prompt,
                    fmt_rate(s["prefill_flops"], "GFLOP", 1e9),
                    " ".join("%.1f" % v for v in s["samples"]["ours_prefill_tps"]) or "-",
                    " ".join("%.2f" % v for v in s["samples"]["ours_decode_tps"]) or "-",
                    " ".join("%.1f" % v for v in s["samples"]["llama_pp_tps"]) or "-",
                    " ".join("%.2f" % v for v in s["samples"]["llama_tg_tps"]) or "-",
                    "n/a" if s["ours_warm_up_s"] is None else "%.2f s" % s["ours_warm_up_s"],
                    "; peak RSS ours %s, llama.cpp %s (%s)" % (
                        fmt_size(s["ours_peak_rss"]) if s["ours_peak_rss"] else "n/a",
                        fmt_size(s["llama_peak_rss"]) if s["llama_peak_rss"] else "n/a",
                        "%.2fx" % s["peak_rss_ratio"] if s["peak_rss_ratio"] else "n/a"),
                    "; !! %d runs FAILED" % s["failed_runs"] if s["failed_runs"] else "",
                    "" if s["token_counts_ok"] else "; !! layerwise bench reports other token counts than asked"))
            for name, value in (("prefill", s["prefill_of_peak"]), ("decode", s["decode_of_bandwidth"])):
                if value is not None and value > 1.0:
                    cached = name == "decode" and probe.get("largest_cache_bytes") and \
                        s["decode_bytes"] < probe["largest_cache_bytes"]
                    say("  !! %s %s is above its ceiling (%.0f%%): %s" % (
                        entry["dtype"], name, 100 * value,
                        "the weights (%s) fit in the CPU's %s cache, so decode reads them from the cache; use a larger "
                        "--shape" % (fmt_size(s["decode_bytes"]), fmt_size(probe["largest_cache_bytes"])) if cached else
                        "the ceiling was measured low (a busy machine?) or the work formula is off"))
    say()
    say("targets")
    results["targets"] = []
    for entry in entries:
        if entry.get("error"):
            continue
        for s in entry["summaries"]:
            shares = s["others_share_max"]
            targets = targets_for(args, s)
            if products_of(s) == "q":
                met = None if s["peak_rss_ratio"] is None else s["peak_rss_ratio"] <= PEAK_RSS_VS_LLAMA
                targets.append(("memory", "peak RSS <= %.1fx llama.cpp's (the largest of the counted runs)" % PEAK_RSS_VS_LLAMA,
                                met))
            for regime, text, met in targets:
                verdict = "met" if met else ("n/a" if met is None else "NOT met")
                if regime != "memory" and any(v is not None and v > BUSY_SHARE for v in (shares["ours_" + regime], shares["llama"])):
                    verdict += " (from figures marked *: unreliable)"
                say("  %-5s %-5s %-8s %-90s %s" % (entry["dtype"], s["precision"], regime, text, verdict))
                results["targets"].append({"dtype": entry["dtype"], "products": s["precision"], "regime": regime,
                                           "target": text, "met": met})


# ----------------------------------------------------------------------------- main

def main():
    shapes = known_shapes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Column meanings and formulas: bench/README.md")
    parser.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(shapes),
                        help="checkpoint shape (make_checkpoint; default tinyllama-1.1b)")
    parser.add_argument("--dtypes", default="f32,f16,bf16",
                        help="comma-separated checkpoint and GGUF dtypes: f32, f16, bf16, or a type llama-quantize "
                        "makes from the F16 file: %s (default f32,f16,bf16)" % ", ".join(QUANTIZED))
    parser.add_argument("--prompt", type=int, default=512, help="prefill prompt tokens (default 512)")
    parser.add_argument("--decode", type=int, default=64, help="decode tokens (default 64)")
    parser.add_argument("--threads", type=int, default=usable_cpus(),
                        help="threads of hw_probe and both engines (default: the usable CPUs, %d here)" % usable_cpus())
    parser.add_argument("--repeat", type=int, default=3, help="counted rounds after the warm-up round (default 3)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random prompt ids (default 1)")
    parser.add_argument("--probe-bytes", type=parse_size, help="hw_probe --bytes (default: its own, 1GiB)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds before one run is killed (default 1800)")
    parser.add_argument("--no-llama", action="store_true", help="skip llama.cpp (no build, no llama-bench)")
    parser.add_argument("--llama-bin", help="folder with llama-bench (default: bench/build_llama_cpp.sh's, built if "
                                            "missing)")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"),
                        help="where layerwise, make_checkpoint and hw_probe are (default build/)")
    parser.add_argument("--workdir", help="scratch folder (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the GGUF files and binaries afterwards")
    parser.add_argument("--json", help="also write everything measured (runs, their stderr, the probe, the machine)")
    args = parser.parse_args()
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in DTYPES]
    if bad or not dtypes:
        parser.error("--dtypes takes a comma-separated list of %s, not %r" % (", ".join(DTYPES), args.dtypes))
    if args.prompt < 1 or args.decode < 1 or args.threads < 1 or args.repeat < 1:
        parser.error("--prompt, --decode, --threads and --repeat must be at least 1")
    args.build_dir = os.path.abspath(args.build_dir)

    layerwise, make_checkpoint = engine_tools(args.build_dir)
    probe_tool = find_hw_probe(args.build_dir)

    workdir, created_workdir = make_workdir(args.workdir, "layerwise-kernel-bench-")
    scratch = os.path.join(workdir, "kernel-bench")
    results = {"args": vars(args), "dtypes": {}}
    made_scratch = made_models = False
    try:
        machine = describe_machine(workdir)
        results["machine"] = machine
        if os.path.exists(scratch):
            raise BenchError("%s already exists; use an empty --workdir (nothing was deleted)" % scratch)
        os.makedirs(scratch)
        made_scratch = True
        bin_dir = os.path.join(scratch, "bin")
        os.makedirs(bin_dir)
        # One snapshot of the binaries for every run, even if the build folder is rebuilt meanwhile.
        layerwise, make_checkpoint, probe_tool = (shutil.copy2(t, os.path.join(bin_dir, os.path.basename(t)))
                                                  for t in (layerwise, make_checkpoint, probe_tool))
        version = subprocess.run([layerwise, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        say("  engine        %s (%s, built %s; copied to %s for this run)" % (
            version, os.path.join(args.build_dir, "layerwise"),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(layerwise))), bin_dir))
        results["engine_version"] = version
        llama_bench = llama_quantize = None
        if not args.no_llama:
            bin_dir, info = find_llama_cpp(args.llama_bin, "llama-bench")
            llama_bench, results["llama_cpp"] = os.path.join(bin_dir, "llama-bench"), {"bin": bin_dir, "info": info}
            if any(d in QUANTIZED for d in dtypes):
                llama_quantize = os.path.join(bin_dir, "llama-quantize")
                if not os.access(llama_quantize, os.X_OK):
                    raise BenchError("%s not found (bench/build_llama_cpp.sh builds it)" % llama_quantize)

        shape = shapes[args.shape]
        sizes = {d: checkpoint_bytes(shape, "f16" if d in QUANTIZED else d)[1] for d in dtypes}
        # One dtype at a time: its checkpoint and GGUF file together (the checkpoint is deleted once the file
        # exists, the file after the runs unless --keep, when every file stays).
        needed = max(2 * sizes[d] for d in dtypes) if not args.keep else \
            sum(sizes.values()) + max(sizes.values())
        needed = int(needed * 1.02) + (64 << 20)
        say()
        say("model: %s, %.1f M parameters; %s; the largest checkpoint and its GGUF file%s need %s, %s free in %s" % (
            args.shape, checkpoint_bytes(shape, "f32")[0] / 1e6,
            ", ".join("%s %s" % (d, fmt_size(sizes[d])) for d in dtypes),
            " (every GGUF file kept: --keep)" if args.keep else "", fmt_size(needed),
            fmt_size(machine["disk_free"]), workdir))
        if machine["disk_free"] < needed:
            raise BenchError("not enough disk space in %s: %s free, %s needed; free some space or pass --workdir on a "
                             "bigger disk" % (workdir, fmt_size(machine["disk_free"]), fmt_size(needed)))

        say()
        say("ceilings")
        probe = run_probe(probe_tool, args.threads, args.probe_bytes)
        results["probe"] = probe
        say("  %s  [%.1f s; %s]" % (describe_probe(probe), probe["wall_s"], busy_text(probe)))
        if probe.get("bandwidth_note"):
            say("  !! %s" % probe["bandwidth_note"])

        entries = []
        made_models = True
        for dtype in dtypes:
            try:
                entry = bench_dtype(args, dtype, (layerwise, make_checkpoint, llama_bench, llama_quantize), shape, scratch,
                                    probe)
            except (BenchError, OSError, ValueError, KeyError) as e:  # the next dtype may still run
                say("  !! %s failed: %s" % (dtype, e))
                entry = {"dtype": dtype, "error": (str(e).splitlines() or [type(e).__name__])[0],
                         "error_detail": str(e)}
            entries.append(entry)
            results["dtypes"][dtype] = entry
        report(args, entries, probe, results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
            say("wrote %s" % args.json)
        failed = any(e.get("error") or any(s["failed_runs"] for s in e["summaries"]) for e in entries)
        return 1 if failed else 0
    finally:
        if args.keep and made_models:
            say("\nkept %s" % scratch)
        else:
            if made_scratch:
                shutil.rmtree(scratch, ignore_errors=True)
            if created_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            say("\nremoved %s" % (workdir if created_workdir else scratch if made_scratch else "nothing"))


if __name__ == "__main__":
    run_main(main, "kernel_bench")
