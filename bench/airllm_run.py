#!/usr/bin/env python3
"""AirLLM (PyPI `airllm`, unpatched) on the CPU, for bench/stream_bench.py: splits a Hugging Face
Llama checkpoint into AirLLM's per-layer files, then times greedy generation of 1 and of N new
tokens, so the time of one decode sweep is (t_N - t_1) / (N - 1), the prefill excluded as in the
engine's own statistics.

    PYTHON bench/airllm_run.py --model HF_DIR --shards DIR --prompt-ids "1 2 3" --max-new-tokens N
        [--threads T]

PYTHON is an interpreter with `airllm` and `torch` installed (pip install airllm torch); AirLLM
runs on the CPU when asked for device="cpu" with compression=None (its 4-bit and 8-bit modes need
bitsandbytes and CUDA). Prints `split_seconds`, `generated_ids`, `seconds_per_token`.
"""
import argparse
import os
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--shards", required=True, help="where AirLLM writes its per-layer files")
    parser.add_argument("--prompt-ids", required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.max_new_tokens < 2:
        parser.error("--max-new-tokens must be at least 2")

    import torch
    from airllm import AutoModel

    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.shards, exist_ok=True)
    start = time.perf_counter()
    model = AutoModel.from_pretrained(args.model, device="cpu", compression=None, layer_shards_saving_path=args.shards)
    print("split_seconds %.3f" % (time.perf_counter() - start), flush=True)

    ids = torch.tensor([[int(t) for t in args.prompt_ids.split()]], dtype=torch.long)
    seconds = {}
    for new_tokens in (1, args.max_new_tokens):
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                                 use_cache=True)
        seconds[new_tokens] = time.perf_counter() - start
    print("generated_ids %s" % " ".join(str(t) for t in out[0, ids.shape[1]:].tolist()))
    print("first_token_seconds %.3f" % seconds[1])
    print("seconds_per_token %.3f" % ((seconds[args.max_new_tokens] - seconds[1]) / (args.max_new_tokens - 1)))


if __name__ == "__main__":
    main()
