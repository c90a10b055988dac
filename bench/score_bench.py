#!/usr/bin/env python3
"""The Kaggle "LLM Science Exam" scoring shape, layerwise against llama.cpp, in one run: many
rows of a long prefix and a few short choices, every choice scored (sum of log-probabilities),
on a random checkpoint under a memory budget below the model's size.

    python3 bench/score_bench.py [--shape tinyllama-1.1b] [--dtype f16] [--budget 2GiB]
        [--rows 200] [--prefix 256] [--choices 5] [--choice-tokens 16] [--baseline-rows 5]
        [--llama-rows 40] [--llama-limited-rows 10] [--threads 2] [--quick] [--json OUT]

Steps: describe the machine; write a random-weight checkpoint (build/make_checkpoint), split it
(layerwise split) and write it as GGUF (bench/hf_to_gguf.py, same dtype, a vocabulary whose text
tokenizes back to the ids); write the rows (random ids in [3, vocab), fixed seed); run
`layerwise score` at the budget on all rows with prefix sharing (the default), then the baseline
"one prompt at a time" (--no-share-prefix --max-batch-rows 1: every prefix + choice its own
sweep) on the first --baseline-rows rows; run llama.cpp's `llama-perplexity --multiple-choice` on
the same token ids (first --llama-rows rows) without a memory limit and, where this process can
make a memory cgroup, with the budget as its limit; print a table; delete the scratch files
unless --keep. See bench/README.md.

Needs numpy and the gguf package (for the GGUF file) and llama.cpp's tools from
bench/build_llama_cpp.sh (built on first use, about 5 minutes; --no-llama skips llama.cpp).
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stream_bench import (run_main, engine_tools, find_llama_cpp, ROOT, BenchError, MemoryCgroup, checkpoint_bytes,  # noqa: E402
                          describe_machine, drop_file_cache, fmt_seconds, fmt_size, spawn,
                          indent, known_shapes, make_workdir, parse_engine_size, parse_size, print_table,
                          run_tool, say)



# ----------------------------------------------------------------------------- rows

def make_rows(count, prefix, choices, choice_tokens, vocab, seed):
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        rows.append({"id": i,
                     "prefix_ids": [rng.randrange(3, vocab) for _ in range(prefix)],
                     "choices_ids": [[rng.randrange(3, vocab) for _ in range(choice_tokens)] for _ in range(choices)]})
    return rows


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- layerwise score

SCORE_PATTERNS = {
    "score": re.compile(r"^score\s+(\d+) rows?, (\d+) choices?, (\d+) tokens? in (\d+) batch(?:es)? of up to (\d+) tokens?"
                        r"[^:]*: ([0-9.]+) s", re.M),
    "sweeps": re.compile(r"^sweeps\s+(\d+) in ([0-9.]+) s; layer loads (\d+); read ([0-9.]+ [KMGT]?i?B) in ([0-9.]+) s",
                         re.M),
    "waited": re.compile(r"^sweeps\s.*waited for reads ([0-9.]+) s", re.M),
    "memory": re.compile(r"^memory\s+budget ([0-9.]+ [KMGT]?i?B); plan ([0-9.]+ [KMGT]?i?B) \([^)]*\); "
                         r"peak RSS ([0-9.]+ [KMGT]?i?B)", re.M),
}


def parse_score_stats(stderr):
    found = {k: p.search(stderr) for k, p in SCORE_PATTERNS.items()}
    missing = [k for k in ("score", "sweeps", "memory") if not found[k]]
    if missing:
        raise ValueError("statistics line(s) missing or in an unexpected format: " + ", ".join(missing))
    s, w, m = found["score"], found["sweeps"], found["memory"]
    return {
        "rows": int(s.group(1)), "choices": int(s.group(2)), "tokens": int(s.group(3)), "batches": int(s.group(4)),
        "tokens_per_batch": int(s.group(5)), "score_s": float(s.group(6)),
        "sweeps": int(w.group(1)), "sweeps_s": float(w.group(2)), "unit_loads": int(w.group(3)),
        "read_bytes": parse_engine_size(w.group(4))[0], "read_s": float(w.group(5)),
        "wait_s": float(found["waited"].group(1)) if found["waited"] else None,
        "budget": parse_engine_size(m.group(1))[0], "plan": parse_engine_size(m.group(2))[0],
        "engine_peak_rss": parse_engine_size(m.group(3))[0],
    }


def run_score(name, command):
    say("  %s\n    $ %s" % (name, " ".join(command)))
    load = os.getloadavg()[0]
    code, stdout, stderr, wall, cpu, rss, floor, _ = spawn(command)
    run = {"name": name, "command": command, "exit": code, "wall_s": wall, "cpu_s": cpu, "wait4_peak_rss": rss,
           "wait4_floor": floor, "load_before": load, "stderr": stderr, "stats": None, "error": None}
    if code != 0:
        run["error"] = "exit status %d" % code
    else:
        try:
            run["stats"] = parse_score_stats(stderr)
        except ValueError as e:
            run["error"] = str(e)
    if run["error"]:
        raise BenchError("%s failed: %s\nstdout (tail):\n%s\nstderr (tail):\n%s" % (
            name, run["error"], stdout[-2000:], stderr[-3000:]))
    say(indent(stderr.rstrip(), "    | "))
    say("    wall %.1f s, CPU %.1f s (%.2f cores busy), peak RSS by wait4 %s; load average before %.2f" % (
        wall, cpu, cpu / wall if wall else 0, fmt_size(rss), load))
    return run


# ----------------------------------------------------------------------------- llama.cpp

def llama_task_file(path, rows, labels, vocab):
    """llama-perplexity's multiple-choice format (tools/perplexity/perplexity.cpp,
    multiple_choice_task::deserialize): u32 task count, u32 byte offset of each task, then per task
    the context string, mc1 (u32 n, n strings, n i32 labels) and mc2 (empty); strings are u32
    length + UTF-8. llama-perplexity tokenizes context + " " + ending for each ending; with the
    roundtrip vocabulary the " " becomes the first ending token's own "▁"."""
    from hf_to_gguf import roundtrip_text

    def string(text):
        data = text.encode("utf-8")
        return struct.pack("<I", len(data)) + data

    tasks = []
    for row, label in zip(rows, labels):
        endings = [roundtrip_text(c, vocab, leading_space=False) for c in row["choices_ids"]]
        task = string(roundtrip_text(row["prefix_ids"], vocab))
        task += struct.pack("<I", len(endings)) + b"".join(string(e) for e in endings)
        task += struct.pack("<%di" % len(endings), *[1 if i == label else 0 for i in range(len(endings))])
        task += struct.pack("<I", 0)
        tasks.append(task)
    offset, offsets = 4 + 4 * len(tasks), []
    for task in tasks:
        offsets.append(offset)
        offset += len(task)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", len(tasks)) + struct.pack("<%dI" % len(tasks), *offsets) + b"".join(tasks))


def check_tokenization(bin_dir, gguf_path, row, vocab, workdir):
    """llama-tokenize on context + " " + first ending must give exactly prefix + choice ids."""
    from hf_to_gguf import roundtrip_text
    text = roundtrip_text(row["prefix_ids"], vocab) + " " + roundtrip_text(row["choices_ids"][0], vocab, leading_space=False)
    path = os.path.join(workdir, "tokenize-check.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    result = subprocess.run([os.path.join(bin_dir, "llama-tokenize"), "-m", gguf_path, "-f", path, "--ids",
                             "--log-disable", "--no-bos"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True)
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    got = json.loads(lines[-1]) if lines else None
    expected = row["prefix_ids"] + row["choices_ids"][0]
    return got == expected, got, expected


TIMESTAMP = r"(\d+)\.(\d{2})\.(\d{3})\.(\d{3}) I "


def log_seconds(match):
    minutes, seconds, ms, us = (int(g) for g in match.groups()[:4])
    return minutes * 60 + seconds + ms / 1e3 + us / 1e6


def parse_llama(stdout, stderr, tasks):
    start = re.search(TIMESTAMP + r"multiple_choice_score : calculating", stderr)
    end = re.search(TIMESTAMP + r"Final result", stderr)
    cumulative = [float(m.group(2)) for m in re.finditer(r"^(\d+)\t([0-9.]+)$", stdout, re.M)]
    agree = [round(acc * (i + 1) / 100) for i, acc in enumerate(cumulative)]
    per_task = [agree[i] - (agree[i - 1] if i else 0) for i in range(len(agree))]
    return {"scoring_s": log_seconds(end) - log_seconds(start) if start and end else None,
            "start_s": log_seconds(start) if start else None,
            "tasks_done": len(cumulative), "tasks": tasks, "same_best": sum(per_task)}


def run_llama(name, bin_dir, gguf_path, task_path, tasks, choices, context, threads, extra=(), cgroup=None,
              drop=None, timeout=None):
    command = [os.path.join(bin_dir, "llama-perplexity"), "-m", gguf_path, "-bf", task_path, "--multiple-choice",
               "-t", str(threads), "-np", str(max(4, choices)), "-c", str(context)] + list(extra)
    say("  %s\n    $ %s%s" % (name, " ".join(command), "   [in memory cgroup %s, limit %s]" % (
        cgroup.path, fmt_size(cgroup.limit)) if cgroup else ""))
    if drop:
        drop_file_cache(drop)
    load = os.getloadavg()[0]
    code, stdout, stderr, wall, cpu, rss, floor, _ = spawn(command, preexec=cgroup.enter if cgroup else None,
                                                        timeout=timeout)
    run = {"name": name, "command": command, "exit": code, "wall_s": wall, "cpu_s": cpu, "wait4_peak_rss": rss,
           "load_before": load, "stdout": stdout, "stderr": stderr, "stats": None, "error": None,
           "cgroup": cgroup.report() if cgroup else None}
    if code != 0:
        killed = code == -signal.SIGKILL
        run["error"] = ("killed by SIGKILL%s" % (" (the cgroup's memory limit: %d failed charges)" % run["cgroup"]["failcnt"]
                                                  if cgroup and run["cgroup"].get("failcnt") else "")) if killed \
            else "exit status %d" % code
        say("    FAILED after %.1f s: %s\n    stderr (tail):\n%s" % (wall, run["error"], indent(stderr[-1500:])))
        return run
    stats = parse_llama(stdout, stderr, tasks)
    run["stats"] = stats
    if stats["tasks_done"] != tasks or stats["scoring_s"] is None:
        run["error"] = "scored %d of %d tasks" % (stats["tasks_done"], tasks)
        say("    FAILED: %s\n    stderr (tail):\n%s" % (run["error"], indent(stderr[-2000:])))
        return run
    say("    %d tasks scored in %.1f s (%.2f s per task) after %.1f s of loading; wall %.1f s, CPU %.1f s "
        "(%.2f cores busy), peak RSS by wait4 %s%s; best-by-mean choice the same as layerwise's in %d of %d; "
        "load average before %.2f" % (
            tasks, stats["scoring_s"], stats["scoring_s"] / tasks, stats["start_s"], wall, cpu, cpu / wall if wall else 0,
            fmt_size(rss), "; cgroup peak %s, %d failed charges" % (fmt_size(run["cgroup"]["max_usage"]),
                                                                   run["cgroup"]["failcnt"]) if cgroup else "",
            stats["same_best"], tasks, load))
    return run


# ----------------------------------------------------------------------------- report

def row_figures(run, rows):
    s = run["stats"]
    return {
        "rows": rows,
        "s_per_row": s["score_s"] / rows,
        "rows_per_s": rows / s["score_s"],
        "s_per_sweep": s["score_s"] / s["sweeps"] if s["sweeps"] else None,
        "read_per_row": s["read_bytes"] / rows,
        "tokens_per_row": s["tokens"] / rows,
        "sweeps_per_row": s["sweeps"] / rows,
    }


def compare_scores(a_path, b_path):
    a, b = read_jsonl(a_path), read_jsonl(b_path)
    worst, same_best = 0.0, 0
    for x, y in zip(a, b):
        for c, d in zip(x["choices"], y["choices"]):
            worst = max(worst, abs(c["sum_logprob"] - d["sum_logprob"]))
        same_best += x["best_by_sum"] == y["best_by_sum"]
    return worst, same_best, min(len(a), len(b))


def main():
    shapes = known_shapes()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Column meanings: bench/README.md")
    parser.add_argument("--shape", default="tinyllama-1.1b", choices=sorted(shapes), help="checkpoint shape (default tinyllama-1.1b)")
    parser.add_argument("--dtype", default="f16", choices=["f32", "f16", "bf16"], help="checkpoint dtype (default f16)")
    parser.add_argument("--budget", type=parse_size,
                        help="--max-memory of the layerwise runs and the cgroup limit of the limited llama.cpp runs "
                             "(default 2GiB; must be below the model's size)")
    parser.add_argument("--rows", type=int, default=200, help="rows (default 200)")
    parser.add_argument("--prefix", type=int, default=256, help="prefix tokens per row (default 256)")
    parser.add_argument("--choices", type=int, default=5, help="choices per row (default 5)")
    parser.add_argument("--choice-tokens", type=int, default=16, help="tokens per choice (default 16)")
    parser.add_argument("--baseline-rows", type=int, default=5,
                        help="rows for the one-prompt-at-a-time baseline, the first N (default 5; 0 skips it)")
    parser.add_argument("--llama-rows", type=int, default=40,
                        help="rows for llama-perplexity without a memory limit, the first N (default 40; 0 skips)")
    parser.add_argument("--llama-limited-rows", type=int, default=10,
                        help="rows for the llama-perplexity runs in a memory cgroup at the budget (default 10; 0 skips)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both engines (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the random rows (default 1)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 20 rows, prefix 64, 2 baseline rows, 10 + 3 llama.cpp rows (given options win)")
    parser.add_argument("--no-llama", action="store_true", help="skip llama.cpp (no build, no GGUF)")
    parser.add_argument("--llama-bin", help="folder with llama-perplexity and llama-tokenize (default: "
                                            "bench/build_llama_cpp.sh's, built if missing)")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build"), help="where layerwise and make_checkpoint are")
    parser.add_argument("--workdir", help="scratch folder (default: a new folder under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--json", help="also write everything measured to this JSON file")
    given = {a[2:].split("=")[0].replace("-", "_") for a in sys.argv[1:] if a.startswith("--")}
    args = parser.parse_args()
    if args.quick:
        for key, value in (("rows", 20), ("prefix", 64), ("baseline_rows", 2), ("llama_rows", 10), ("llama_limited_rows", 3)):
            if key not in given:
                setattr(args, key, value)
    if min(args.rows, args.prefix, args.choices, args.choice_tokens, args.threads) < 1:
        parser.error("--rows, --prefix, --choices, --choice-tokens and --threads must be at least 1")
    if args.choices > 100:
        parser.error("llama-perplexity takes at most 100 endings per task")
    baseline_rows = min(args.baseline_rows, args.rows)
    llama_rows = 0 if args.no_llama else min(args.llama_rows, args.rows)
    limited_rows = 0 if args.no_llama else min(args.llama_limited_rows, args.rows)

    layerwise, make_checkpoint = engine_tools(args.build_dir)

    workdir, created_workdir = make_workdir(args.workdir, "layerwise-score-bench-")
    scratch = os.path.join(workdir, "score-bench")
    results = {"args": vars(args), "runs": {}}
    cgroup = None
    try:
        machine = describe_machine(workdir)
        results["machine"] = machine
        if os.path.exists(scratch):
            raise BenchError("%s already exists; use an empty --workdir (nothing was deleted)" % scratch)
        os.makedirs(scratch)
        bin_dir, hf_dir, split_dir = (os.path.join(scratch, n) for n in ("bin", "hf", "split"))
        os.makedirs(bin_dir)
        layerwise, make_checkpoint = (shutil.copy2(t, os.path.join(bin_dir, os.path.basename(t)))
                                      for t in (layerwise, make_checkpoint))
        version = subprocess.run([layerwise, "--version"], stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
        say("  engine        %s (%s, built %s; copied to %s for this run)" % (
            version, os.path.join(args.build_dir, "layerwise"),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(layerwise))), bin_dir))
        results["engine_version"] = version

        llama_bin = None
        if llama_rows or limited_rows:
            llama_bin, llama_info = find_llama_cpp(args.llama_bin, "llama-perplexity")
            results["llama_cpp"] = {"bin": llama_bin, "info": llama_info}

        shape = shapes[args.shape]
        parameters, model_bytes = checkpoint_bytes(shape, args.dtype)
        budget = args.budget or (2 << 30)
        needed = model_bytes * (3 if llama_bin else 2)
        say()
        say("checkpoint")
        say("  %s %s: %.1f M parameters, %s; checkpoint, split%s need %s, %s free in %s" % (
            args.shape, args.dtype, parameters / 1e6, fmt_size(model_bytes), " and GGUF" if llama_bin else "",
            fmt_size(needed), fmt_size(machine["disk_free"]), workdir))
        if machine["disk_free"] < needed:
            raise BenchError("not enough disk space in %s: %s free, %s needed" % (
                workdir, fmt_size(machine["disk_free"]), fmt_size(needed)))
        seconds, _ = run_tool([make_checkpoint, "--shape", args.shape, "--dtype", args.dtype, "--out", hf_dir, "--quiet"],
                              "make_checkpoint")
        say("    wrote %s in %.1f s" % (fmt_size(os.path.getsize(os.path.join(hf_dir, "model.safetensors"))), seconds))
        seconds, _ = run_tool([layerwise, "split", "--model", hf_dir, "--out", split_dir, "--quiet"], "layerwise split")
        with open(os.path.join(split_dir, "manifest.json")) as f:
            manifest = json.load(f)
        units = {u["name"]: u["bytes"] for u in manifest["units"]}
        loadable = sum(b for n, b in units.items() if n != "embed")
        split_bytes = sum(units.values())
        say("    split into %d unit files, %s (%s without the embedding table, which is never loaded whole), in %.1f s"
            % (len(units), fmt_size(split_bytes), fmt_size(loadable), seconds))
        vocab = int(manifest["config"]["vocab_size"])
        if budget >= split_bytes:
            say("  !! the budget %s is not below the model's %s: the model fits, nothing streams" % (
                fmt_size(budget), fmt_size(split_bytes)))
        hidden, layers, heads, kv_heads, ffn, _ = shape
        kv_dim = kv_heads * (hidden // heads)
        layer_parameters = layers * (2 * hidden * hidden + 2 * hidden * kv_dim + 3 * hidden * ffn)
        # Matrix products per row with the prefix shared: every token through the layers, and the head for every
        # position that predicts a choice token (attention, norms and the softmax not counted).
        flops_per_row = 2 * (layer_parameters * (args.prefix + args.choices * args.choice_tokens) +
                             hidden * vocab * args.choices * args.choice_tokens)
        results["model"] = {"shape": args.shape, "dtype": args.dtype, "parameters": parameters, "bytes": split_bytes,
                            "loadable_bytes": loadable, "vocab": vocab, "layers": layers,
                            "flops_per_row": flops_per_row}

        gguf_path = None
        if llama_bin:
            from hf_to_gguf import convert
            gguf_path = os.path.join(scratch, "model-%s.gguf" % args.dtype)
            say("  $ python3 bench/hf_to_gguf.py %s %s --outtype %s --vocab roundtrip --no-add-bos" % (
                hf_dir, gguf_path, args.dtype))
            summary = convert(hf_dir, gguf_path, args.dtype, "roundtrip", add_bos=False)
            say("    wrote %s in %.1f s (this script's peak RSS %s)" % (
                fmt_size(summary["bytes"]), summary["seconds"], fmt_size(summary["peak_rss"])))
            results["gguf"] = summary
        shutil.rmtree(hf_dir)  # the split and the GGUF file are what the runs read

        # ------------------------------------------------------------------ rows
        rows = make_rows(args.rows, args.prefix, args.choices, args.choice_tokens, vocab, args.seed)
        rows_path = os.path.join(scratch, "rows.jsonl")
        write_jsonl(rows_path, rows)
        per_row_shared = args.prefix + args.choices * args.choice_tokens
        per_row_alone = args.choices * (args.prefix + args.choice_tokens)
        say()
        say("rows: %d, each a %d-token prefix and %d choices of %d tokens (random ids in [3, %d), seed %d): %d tokens "
            "per row with the prefix shared, %d one prompt at a time" % (
                args.rows, args.prefix, args.choices, args.choice_tokens, vocab, args.seed, per_row_shared, per_row_alone))

        # ------------------------------------------------------------------ layerwise
        say()
        say("layerwise score at --max-memory %s, --threads %d, each run in a fresh process" % (fmt_size(budget), args.threads))
        base = [layerwise, "score", "--model", split_dir, "--max-memory", str(budget), "--threads", str(args.threads)]
        shared_out = os.path.join(scratch, "shared.jsonl")
        shared = run_score("shared prefix (default), all %d rows" % args.rows,
                           base + ["--input", rows_path, "--output", shared_out])
        shared["figures"] = row_figures(shared, args.rows)
        results["runs"]["shared"] = shared
        baseline = None
        if baseline_rows:
            baseline_path = os.path.join(scratch, "rows-baseline.jsonl")
            write_jsonl(baseline_path, rows[:baseline_rows])
            baseline_out = os.path.join(scratch, "baseline.jsonl")
            baseline = run_score("one prompt at a time (--no-share-prefix --max-batch-rows 1), first %d rows" % baseline_rows,
                                 base + ["--input", baseline_path, "--output", baseline_out, "--no-share-prefix",
                                         "--max-batch-rows", "1"])
            baseline["figures"] = row_figures(baseline, baseline_rows)
            worst, same, n = compare_scores(shared_out, baseline_out)
            baseline["vs_shared"] = {"max_abs_sum_logprob_diff": worst, "same_best_by_sum": same, "rows": n}
            say("    scores vs the shared run on the same %d rows: largest |sum_logprob difference| %.3g, best choice "
                "(by sum) the same in %d of %d" % (n, worst, same, n))
            results["runs"]["baseline"] = baseline

        # ------------------------------------------------------------------ llama.cpp
        llama_runs = []
        if llama_bin:
            labels = [r["best_by_mean"] for r in read_jsonl(shared_out)]
            say()
            ok, got, expected = check_tokenization(llama_bin, gguf_path, rows[0], vocab, scratch)
            say("llama.cpp: llama-perplexity --multiple-choice reads tasks as text (a context and its endings) and "
                "tokenizes context + \" \" + ending. The GGUF file's vocabulary gives every id its own piece "
                "(\"▁\" + one character), so the text of the ids tokenizes back to them: llama-tokenize on row 0's "
                "prefix + \" \" + choice 0 gives %s." % (
                    "exactly its %d ids" % len(expected) if ok else "DIFFERENT ids (%s ... vs %s ...): the comparison "
                    "below is not on the same tokens" % (str(got)[:80], str(expected)[:80])))
            say("Each task's label is layerwise's best choice by mean log-prob (the shared run), so llama.cpp's "
                "accuracy is its agreement with layerwise. -np %d (one task per decode, the most it runs with %d "
                "endings; more tasks per batch were slower in a trial: its unified KV cache makes every token attend "
                "over all of the batch's cells)." % (max(4, args.choices), args.choices))
            results["tokenization_roundtrip"] = {"ok": ok, "got": got, "expected": expected}
            context = max(512, -(-(args.prefix + args.choices * args.choice_tokens + 8) // max(4, args.choices)))
            context = -(-context // 256) * 256
            common = (llama_bin, gguf_path)
            if llama_rows:
                path = os.path.join(scratch, "tasks-%d.bin" % llama_rows)
                llama_task_file(path, rows[:llama_rows], labels, vocab)
                run = run_llama("llama.cpp defaults (mmap, weights repacked for the CPU), no memory limit, first %d rows"
                                % llama_rows, *common, path, llama_rows, args.choices, context, args.threads)
                run["label"] = "llama.cpp, no limit"
                run["rows"] = llama_rows
                llama_runs.append(run)
            if limited_rows:
                try:
                    cgroup = MemoryCgroup(budget)
                    cgroup_note = "cgroup v%d %s, memory limit %s" % (cgroup.version, cgroup.path, fmt_size(budget))
                except OSError as e:
                    cgroup, cgroup_note = None, "no memory cgroup could be made: %s" % e
                say("  memory limit for llama.cpp: it has no option for one (it maps the file and lets the kernel "
                    "page); %s" % cgroup_note)
                results["cgroup"] = cgroup_note
                if cgroup:
                    path = os.path.join(scratch, "tasks-%d.bin" % limited_rows)
                    llama_task_file(path, rows[:limited_rows], labels, vocab)
                    for label, extra in (("llama.cpp defaults", []), ("llama.cpp --no-repack", ["--no-repack"])):
                        run = run_llama("%s in the cgroup (limit %s = the budget; the GGUF file's pages evicted first), "
                                        "first %d rows" % (label, fmt_size(budget), limited_rows),
                                        *common, path, limited_rows, args.choices, context, args.threads, extra=extra,
                                        cgroup=cgroup, drop=gguf_path, timeout=max(600, 60 * limited_rows))
                        run["label"] = "%s, cgroup %s" % (label, fmt_size(budget))
                        run["rows"] = limited_rows
                        llama_runs.append(run)
            results["runs"]["llama"] = llama_runs

        report(args, budget, shared, baseline, llama_runs, results)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1, default=str)
            say("wrote %s" % args.json)
        return 0
    finally:
        if cgroup:
            cgroup.remove()
        if args.keep:
            say("\nkept %s" % scratch)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            if created_workdir:
                shutil.rmtree(workdir, ignore_errors=True)
            say("\nremoved %s" % (workdir if created_workdir else scratch))


def report(args, budget, shared, baseline, llama_runs, results):
    say()
    say("results: %d rows of a %d-token prefix + %d x %d-token choices; %s %s; %d threads; budget %s" % (
        args.rows, args.prefix, args.choices, args.choice_tokens, args.shape, args.dtype, args.threads, fmt_size(budget)))
    headers = ["run", "rows run", "batches (rows each)", "sweeps", "s/sweep", "s/row", "rows/s", "tokens/row", "tokens/s",
               "read/row", "reading (waited)", "cores busy", "peak RSS", "memory limit"]
    table = []
    for run in [shared] + ([baseline] if baseline else []):
        s, f = run["stats"], run["figures"]
        table.append([
            "layerwise, shared prefix" if run is shared else "layerwise, one prompt at a time",
            "%d" % f["rows"], "%d (%.1f)" % (s["batches"], f["rows"] / s["batches"] if run is shared else 1.0 / args.choices),
            "%d" % s["sweeps"], fmt_seconds(f["s_per_sweep"]), "%.2f s" % f["s_per_row"], "%.3f" % f["rows_per_s"],
            "%d" % round(f["tokens_per_row"]), "%.1f" % (f["tokens_per_row"] / f["s_per_row"]), fmt_size(f["read_per_row"]),
            "%.1f s (%.1f s)" % (s["read_s"], s["wait_s"] or 0), "%.2f" % (run["cpu_s"] / run["wall_s"]),
            fmt_size(max(s["engine_peak_rss"], run["wait4_peak_rss"])), "--max-memory %s" % fmt_size(budget)])
    for run in llama_runs:
        st = run["stats"]
        if run["error"]:
            table.append([run["label"], "%d" % run["rows"], "FAILED (below)"] + [""] * (len(headers) - 4) +
                         ["cgroup %s" % fmt_size(run["cgroup"]["limit"]) if run.get("cgroup") else "none"])
            continue
        per = st["scoring_s"] / run["rows"]
        table.append([run["label"], "%d" % run["rows"], "%d (1)" % run["rows"], "", "", "%.2f s" % per, "%.3f" % (1 / per),
                      "%d" % (args.prefix + args.choices * args.choice_tokens),
                      "%.1f" % ((args.prefix + args.choices * args.choice_tokens) / per), "(mmap)", "",
                      "%.2f" % (run["cpu_s"] / run["wall_s"]),
                      fmt_size(run["wait4_peak_rss"]) + (" (cgroup %s)" % fmt_size(run["cgroup"]["max_usage"])
                                                         if run.get("cgroup") and run["cgroup"].get("max_usage") else ""),
                      "cgroup %s" % fmt_size(run["cgroup"]["limit"]) if run.get("cgroup") else "none"])
    print_table(headers, table)
    s, f = shared["stats"], shared["figures"]
    summary = {"shared_rows_per_s": f["rows_per_s"], "shared_s_per_sweep": f["s_per_sweep"],
               "shared_read_per_row": f["read_per_row"], "shared_sweeps": s["sweeps"]}
    say()
    layers = results["model"]["layers"]
    say("layerwise, shared: %d rows in %.1f s = %.3f rows/s; %d sweeps in %d batches of up to %d tokens (%.1f rows per "
        "batch), %s per sweep (%s per layer); about %.0f GFLOP/s of matrix products; %s read in all, %s per row; the "
        "reader thread spent %.1f s reading (%.0f%% of the run) and compute waited %.1f s for it: %s." % (
            args.rows, s["score_s"], f["rows_per_s"], s["sweeps"], s["batches"], s["tokens_per_batch"],
            args.rows / s["batches"], fmt_seconds(f["s_per_sweep"]), fmt_seconds(f["s_per_sweep"] / (layers + 1)),
            results["model"]["flops_per_row"] * args.rows / s["score_s"] / 1e9,
            fmt_size(s["read_bytes"]), fmt_size(f["read_per_row"]),
            s["read_s"], 100 * s["read_s"] / s["score_s"], s["wait_s"] or 0,
            "compute dominates" if s["read_s"] < 0.5 * s["score_s"] else "reading is a large share"))
    if baseline:
        b, bf = baseline["stats"], baseline["figures"]
        speedup = bf["s_per_row"] / f["s_per_row"]
        summary.update({"baseline_s_per_row": bf["s_per_row"], "speedup_shared_vs_baseline": speedup})
        say("layerwise, one prompt at a time: %d rows in %.1f s = %.2f s per row, %d sweeps (%d per row, one per prefix + "
            "choice), %s read per row. Extrapolated to all %d rows (measured on the first %d): %.0f s, %.0f sweeps, %s "
            "read." % (
                bf["rows"], b["score_s"], bf["s_per_row"], b["sweeps"], round(bf["sweeps_per_row"]),
                fmt_size(bf["read_per_row"]), args.rows, bf["rows"], bf["s_per_row"] * args.rows,
                bf["sweeps_per_row"] * args.rows, fmt_size(bf["read_per_row"] * args.rows)))
        say("speed-up of sharing over one prompt at a time, per row: %.2fx (%.2f s vs %.2f s per row; %d vs %d tokens "
            "computed per row: %.2fx; %s vs %s read per row)" % (
                speedup, f["s_per_row"], bf["s_per_row"], round(f["tokens_per_row"]), round(bf["tokens_per_row"]),
                bf["tokens_per_row"] / f["tokens_per_row"], fmt_size(f["read_per_row"]), fmt_size(bf["read_per_row"])))
    for run in llama_runs:
        if run["error"]:
            say("%s: %s" % (run["label"], run["error"]))
            continue
        per = run["stats"]["scoring_s"] / run["rows"]
        say("%s: %.2f s per row (task), about %.0f GFLOP/s; layerwise shared takes %.2fx its time per row (%.2f s); "
            "same best choice as layerwise in %d of %d rows" % (
                run["label"], per, results["model"]["flops_per_row"] / per / 1e9, f["s_per_row"] / per, f["s_per_row"],
                run["stats"]["same_best"], run["rows"]))
        summary.setdefault("llama", []).append({"label": run["label"], "s_per_row": per, "rows": run["rows"],
                                                "same_best": run["stats"]["same_best"]})
    results["summary"] = summary


if __name__ == "__main__":
    run_main(main, "score_bench")
