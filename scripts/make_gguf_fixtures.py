#!/usr/bin/env python3
"""Tiny GGUF Llama models converted from the random HF fixtures, and transformers goldens for them.

What it makes (under tests/fixtures/gguf_models/):
  mha-f32.gguf    tests/fixtures/mha-f32 (4 q / 4 kv heads), every tensor F32  (file_type 0)
  mha-q8_0.gguf   mha-f32 with every 2-D weight Q8_0, norms F32               (file_type 7)
  gqa-f16.gguf    tests/fixtures/gqa-f16 (2 kv heads), 2-D weights F16, norms F32 (file_type 1)
  mha-q4_1.gguf   mha-f32 with 2-D weights Q4_1 (SmolLM2's type), norms F32, output.weight Q8_0
                  as llama-quantize does for an output whose row (32) is not a multiple of 256
                  (file_type 3)
  goldens.json    for each file, with the prompts of its source fixture in
                  tests/fixtures/goldens.json: per-position float32 logits of every prompt run
                  alone, logits of the same left-padded 2-prompt batch, 16-token greedy
                  continuations with EOS disabled (the layout of tests/fixtures/goldens.json), and
                  the largest |difference| to the source fixture's float32 goldens.

The conversion follows llama.cpp's convert_hf_to_gguf.py for LlamaForCausalLM (LlamaModel),
written here with gguf.GGUFWriter: general.architecture "llama"; llama.context_length,
embedding_length, block_count, feed_forward_length, attention.head_count, attention.head_count_kv,
rope.freq_base, attention.layer_norm_rms_epsilon, general.file_type, vocab_size,
rope.dimension_count; general.quantization_version; tensors token_embd, blk.N.{attn_norm, attn_q,
attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}, output_norm, output; q_proj
and k_proj rows permuted as LlamaModel.permute does (reshape(n_head, 2, rows/n_head/2, cols)
.swapaxes(1, 2), with n_head_kv heads for k) so that llama.cpp's rotate-adjacent-pairs RoPE
equals the HF rotate-half one. The fixtures have no tokenizer, so each file gets a minimal
sentencepiece-style ("llama") vocabulary of 128 pieces: <unk>, <s>, </s> (ids 0, 1, 2 as the
fixtures' bos/eos), <0x0A>, then letters, "▁"+letters, digits, punctuation and "▁w<id>" words.

transformers loads every file (from_pretrained(dir, gguf_file=..., dtype=float32), eager, one
thread): it maps the llama.* keys back to LlamaConfig, un-permutes attn_q/attn_k and dequantizes.
The script asserts that mha-f32.gguf and gqa-f16.gguf reproduce their source fixtures' goldens
within 1e-5, which proves the permutation is llama.cpp's and that transformers undoes it.

    python3 scripts/make_gguf_fixtures.py

Made with transformers 5.24.0, gguf 0.19.0, torch 2.15.0, accelerate 1.15.0 (transformers needs
it to load GGUF), numpy (see goldens.json "generator").
Deterministic: rerunning with the same versions reproduces byte-identical files.
"""

import importlib.metadata
import json
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF loader draws a progress bar

import gguf
import numpy as np
import torch
import transformers
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_fixtures import dump  # noqa: E402  (same JSON layout as tests/fixtures/goldens.json)

# The conversion itself (tensor names, q/k permutation, llama.* keys, the vocabulary keys) is
# shared with bench/hf_to_gguf.py, the streaming converter for large checkpoints.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from hf_to_gguf import LAYER_TENSORS, add_llama_metadata, add_spm_vocab, permute, tensor_data  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
OUT = os.path.join(FIXTURES, "gguf_models")
COMMAND = "python3 scripts/make_gguf_fixtures.py"
NEW_TOKENS = 16
PAD = 0
TOLERANCE = 1e-5

# file, source fixture, type of 2-D weights, file_type, type of output.weight (None: same)
FILES = [
    ("mha-f32.gguf", "mha-f32", QT.F32, FT.ALL_F32, None),
    ("mha-q8_0.gguf", "mha-f32", QT.Q8_0, FT.MOSTLY_Q8_0, None),
    ("gqa-f16.gguf", "gqa-f16", QT.F16, FT.MOSTLY_F16, None),
    ("mha-q4_1.gguf", "mha-f32", QT.Q4_1, FT.MOSTLY_Q4_1, QT.Q8_0),
]
EXACT = {"mha-f32.gguf", "gqa-f16.gguf"}  # lossless conversions: must match the source goldens

def log(*a):
    print(*a, file=sys.stderr, flush=True)


def vocabulary(n):
    pieces = ["<unk>", "<s>", "</s>", "<0x0A>"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += ["\u2581" + chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [str(d) for d in range(10)] + ["\u2581", ".", ",", "!", "?", "'"]
    pieces += [f"\u2581w{i}" for i in range(len(pieces), n)]
    assert len(pieces) == n and len(set(pieces)) == n
    scores = [0.0 if i < 4 else -float(i) for i in range(n)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL, gguf.TokenType.BYTE]
    types += [gguf.TokenType.NORMAL] * (n - 4)
    return pieces, scores, [int(t) for t in types]


def convert(name, source, qtype, file_type, output_type):
    src = os.path.join(FIXTURES, source)
    with open(os.path.join(src, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["architectures"] == ["LlamaForCausalLM"] and not cfg["tie_word_embeddings"]
    assert cfg.get("rope_scaling") is None and "head_dim" not in cfg
    assert not cfg["attention_bias"] and not cfg["mlp_bias"]
    tensors = load_file(os.path.join(src, "model.safetensors"))
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    vocab = cfg["vocab_size"]

    path = os.path.join(OUT, name)
    w = gguf.GGUFWriter(path, arch="llama")
    add_llama_metadata(w, cfg, file_type, f"layerwise {source}")
    pieces, scores, types = vocabulary(vocab)
    add_spm_vocab(w, pieces, scores, types, bos=cfg["bos_token_id"], eos=cfg["eos_token_id"], unk=0, add_bos=True)

    def add(gguf_name, hf_name, transform=None, as_type=None):
        t = tensors.pop(hf_name).astype(np.float32)  # f16 values are exact in float32
        if transform:
            t = transform(t)
        data, raw = tensor_data(t, QT.F32 if t.ndim == 1 else (as_type or qtype))
        w.add_tensor(gguf_name, data, raw_dtype=raw)

    add("token_embd.weight", "model.embed_tokens.weight")
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in LAYER_TENSORS:
            transform = None
            if gg == "attn_q":
                transform = lambda t: permute(t, n_head, n_head)
            elif gg == "attn_k":
                transform = lambda t: permute(t, n_head, n_kv)
            add(f"blk.{i}.{gg}.weight", f"model.layers.{i}.{hf}.weight", transform)
    add("output_norm.weight", "model.norm.weight")
    add("output.weight", "lm_head.weight", as_type=output_type)
    assert not tensors, sorted(tensors)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def load(name):
    m = AutoModelForCausalLM.from_pretrained(OUT, gguf_file=name, dtype=torch.float32, attn_implementation="eager")
    m.eval()
    return m


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def r7(x):
    return float(f"{x:.7g}")


def rows(t):
    return [[r7(v) for v in row] for row in t.tolist()]


def goldens_for(name, source, source_golden, eos):
    prompts = source_golden["prompts"]
    model = load(name)
    single = [logits_of(model, p) for p in prompts]
    diff = max(float((s - torch.tensor(g)).abs().max()) for s, g in zip(single, source_golden["logits"]))

    bi = source_golden["batch"]["prompts"]
    L = max(len(prompts[i]) for i in bi)
    ids = torch.tensor([[PAD] * (L - len(prompts[i])) + prompts[i] for i in bi])
    mask = torch.tensor([[0] * (L - len(prompts[i])) + [1] * len(prompts[i]) for i in bi])
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    with torch.no_grad():
        bl = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    batch = [bl[k, L - len(prompts[i]):] for k, i in enumerate(bi)]
    bdiff = max(float((batch[k] - single[i]).abs().max()) for k, i in enumerate(bi))

    greedy = []
    for p in prompts:
        m = load(name)
        m.generation_config.eos_token_id = None
        gc = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=0, eos_token_id=None,
                              bos_token_id=1, pad_token_id=PAD)
        with torch.no_grad():
            out = m.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             generation_config=gc)
        new = out[0, len(p):].tolist()
        assert len(new) == NEW_TOKENS, new
        greedy.append(new)

    if name in EXACT:
        assert diff <= TOLERANCE, f"{name}: logits differ from {source}'s goldens by {diff}"
        assert greedy == source_golden["greedy"], (greedy, source_golden["greedy"])
    log(f"  {name}: max |logit - {source} golden| {diff:.3g}; batch vs single {bdiff:.3g}; "
        f"greedy {'equals' if greedy == source_golden['greedy'] else 'differs from'} {source}'s; "
        f"eos in greedy: {sum(t == eos for s in greedy for t in s)}")
    return {
        "source": source,
        "file_type": None,  # filled in by the caller
        "prompts": prompts,
        "max_abs_diff_vs_source": r7(diff),
        "logits": [rows(t) for t in single],
        "batch": {"prompts": bi, "logits": [rows(t) for t in batch]},
        "greedy": greedy,
    }


def check_loaded_config(name, source):
    m = load(name)
    with open(os.path.join(FIXTURES, source, "config.json")) as f:
        cfg = json.load(f)
    c = m.config
    for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "vocab_size", "max_position_embeddings", "bos_token_id", "eos_token_id"):
        assert getattr(c, k) == cfg[k], (name, k, getattr(c, k), cfg[k])
    assert c.tie_word_embeddings is False and c.rope_parameters["rope_theta"] == cfg["rope_theta"]
    assert abs(c.rms_norm_eps - cfg["rms_norm_eps"]) < 1e-12, c.rms_norm_eps


def check_tokenizer(name):
    tok = AutoTokenizer.from_pretrained(OUT, gguf_file=name)
    ids = tok("hello world 42!").input_ids
    back = tok.decode(ids, skip_special_tokens=True)
    assert ids[0] == 1 and back == "hello world 42!", (ids, back)
    return ids


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(FIXTURES, "goldens.json")) as f:
        source_goldens = json.load(f)
    goldens = {
        "generator": {
            "command": COMMAND,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "gguf": importlib.metadata.version("gguf"),
            "notes": "GGUF files converted from the HF fixtures as llama.cpp's convert_hf_to_gguf.py does for "
                     "LlamaForCausalLM (q/k rows permuted), quantized with gguf.quants; goldens from transformers "
                     "loading each .gguf (dequantized to float32, q/k un-permuted), eager attention, one CPU "
                     "thread; logits float32 rounded to 7 significant digits; prompts are the source fixture's; "
                     "batch: left padding (pad id 0), attention_mask and position_ids = cumsum(mask)-1; greedy: "
                     "generate() with a KV cache, EOS disabled; max_abs_diff_vs_source: largest |logit "
                     "difference| to the source fixture's float32 goldens (<= 1e-5 asserted for the lossless "
                     "mha-f32 and gqa-f16).",
        }
    }
    for name, source, qtype, file_type, output_type in FILES:
        path = convert(name, source, qtype, file_type, output_type)
        check_loaded_config(name, source)
        tok_ids = check_tokenizer(name)
        entry = goldens_for(name, source, source_goldens[source], eos=2)
        entry["file_type"] = file_type.name
        goldens[name] = entry
        log(f"  {name}: {os.path.getsize(path)} bytes; tokenizer 'hello world 42!' -> {tok_ids}")
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        f.write(dump(goldens) + "\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    log(f"wrote {OUT} ({total} bytes in all)")


if __name__ == "__main__":
    main()
