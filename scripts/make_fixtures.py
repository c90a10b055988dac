#!/usr/bin/env python3
"""Generate tiny random-weight Llama checkpoints and transformers goldens for the tests.

What it makes (under tests/fixtures/):
  <name>/            one directory per fixture, a LlamaForCausalLM checkpoint written by
                     save_pretrained (config.json, generation_config.json, *.safetensors):
      mha-f32                       4 q / 4 kv heads, untied, default rope, float32
      gqa-tied-llama3-f32           2 kv heads, tied embeddings, llama3 rope scaling
      mqa-headdim-linear-bias-f32   1 kv head, head_dim 16 != hidden/heads, linear rope,
                                    attention_bias + mlp_bias
      gqa-f16 / gqa-bf16            2 kv heads, weights stored as float16 / bfloat16
      sharded-f32                   like mha-f32, split into >= 3 safetensors shards with an
                                    index; its config.json is left in transformers-5 native
                                    style (`rope_parameters`, `dtype`)
      dynamic-f32                   2 kv heads, dynamic NTK rope, max_position_embeddings 16
  goldens.json       for each fixture: prompts, per-position float32 logits of every prompt
                     run alone, logits of a left-padded 2-prompt batch, 16-token greedy
                     continuations (and native-precision logits for the f16/bf16 fixtures).

All config.json files except sharded-f32 are rewritten to the classic transformers-4
style used by real Hub checkpoints (`rope_theta`, `rope_scaling` with `rope_type` and
`type`, `torch_dtype`), and every rewritten directory is reloaded with from_pretrained
and checked to reproduce the in-memory model's logits bit-for-bit. Goldens are computed
from checkpoints re-loaded from disk, in float32, eager attention, one CPU thread.

Rerun (from the repository root):
    python3 scripts/make_fixtures.py

The output is deterministic: rerunning with the same transformers/torch versions
reproduces byte-identical files. transformers and torch are needed ONLY to regenerate
these fixtures; they are never needed to build or test the engine.
"""

import copy
import json
import math
import os
import shutil
import sys

import torch
import transformers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "fixtures")
COMMAND = "python3 scripts/make_fixtures.py"

BOS, EOS, PAD = 1, 2, 0
NEW_TOKENS = 16

BASE = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    max_position_embeddings=64,
    rms_norm_eps=1e-5,
    bos_token_id=BOS,
    eos_token_id=EOS,
    hidden_act="silu",
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

# name, config overrides, storage dtype, extra options
FIXTURES = [
    ("mha-f32",
     dict(num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0),
     "float32", {}),
    # original_max_position_embeddings is 256 rather than 16: with head_dim 8 the shortest
    # wavelength is 2*pi (> 16/4), so with 16 the high-frequency band would be empty. With
    # theta 500000 and 256 the four wavelengths (6.28, 167, 4443, 118143) fall in the high
    # (< 64), smoothed-middle (64..256) and low (> 256, two of them) bands. Checked below.
    ("gqa-tied-llama3-f32",
     dict(num_key_value_heads=2, tie_word_embeddings=True, rope_theta=500000.0,
          max_position_embeddings=2048,
          rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                            high_freq_factor=4.0, original_max_position_embeddings=256)),
     "float32", {}),
    ("mqa-headdim-linear-bias-f32",
     dict(num_key_value_heads=1, head_dim=16, tie_word_embeddings=False, rope_theta=10000.0,
          rope_scaling=dict(rope_type="linear", factor=2.0),
          attention_bias=True, mlp_bias=True),
     "float32", {"explicit_head_dim": True}),
    ("gqa-f16",
     dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0),
     "float16", {}),
    ("gqa-bf16",
     dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0),
     "bfloat16", {}),
    ("sharded-f32",
     dict(num_key_value_heads=4, tie_word_embeddings=False, rope_theta=10000.0),
     "float32", {"native_config": True, "max_shard_size": "50KB"}),
    ("dynamic-f32",
     dict(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
          max_position_embeddings=16,
          rope_scaling=dict(rope_type="dynamic", factor=2.0)),
     "float32", {"prompt_lengths": (5, 11, 20)}),
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_config(overrides):
    kw = dict(BASE)
    kw.update(copy.deepcopy(overrides))
    cfg = LlamaConfig(**kw)
    cfg._attn_implementation = "eager"
    return cfg


def init_weights(model):
    """Larger-than-default random init so logits are far from flat."""
    with torch.no_grad():
        for name, p in model.named_parameters():  # tied params are yielded once
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
            elif p.ndim == 2:
                p.normal_(0.0, 0.3)
            else:
                raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")


def load(path, dtype=torch.float32):
    m = LlamaForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager")
    m.eval()
    return m


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def to_classic_config(path, explicit_head_dim):
    """Rewrite a transformers-5 config.json into the classic transformers-4 layout."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    rp = cfg.pop("rope_parameters")
    cfg["rope_theta"] = float(rp["rope_theta"])
    rope_type = rp.get("rope_type", "default")
    if rope_type == "default":
        cfg["rope_scaling"] = None
    else:
        rs = {k: v for k, v in rp.items() if k not in ("rope_theta", "rope_type", "type")}
        rs["rope_type"] = rope_type
        rs["type"] = rope_type
        cfg["rope_scaling"] = rs
    cfg["torch_dtype"] = cfg.pop("dtype")
    if not explicit_head_dim:
        assert cfg["head_dim"] == cfg["hidden_size"] // cfg["num_attention_heads"]
        del cfg["head_dim"]
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["model_type"] = "llama"
    for k in ("attention_bias", "mlp_bias", "tie_word_embeddings"):
        assert k in cfg, k
    with open(cfg_path, "w") as f:
        f.write(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def check_llama3_bands(cfg):
    rp = cfg.rope_parameters
    dim = cfg.head_dim
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    wl = 2 * math.pi / inv
    old = rp["original_max_position_embeddings"]
    lo_wl, hi_wl = old / rp["low_freq_factor"], old / rp["high_freq_factor"]
    bands = ["high" if w < hi_wl else "low" if w > lo_wl else "middle" for w in wl.tolist()]
    log(f"  llama3 wavelengths {[round(w, 2) for w in wl.tolist()]} "
        f"(high < {hi_wl}, low > {lo_wl}) -> bands {bands}")
    assert set(bands) == {"high", "middle", "low"}, bands


def write_checkpoint(name, overrides, storage, opts, seed):
    path = os.path.join(OUT, name)
    if os.path.isdir(path):
        shutil.rmtree(path)
    torch.manual_seed(seed)
    cfg = make_config(overrides)
    if cfg.rope_parameters.get("rope_type") == "llama3":
        check_llama3_bands(cfg)
    model = LlamaForCausalLM(cfg)
    init_weights(model)
    model.eval()
    dt = DTYPES[storage]
    if dt != torch.float32:
        # round the weights to storage precision, keep computing in float32
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dt).to(torch.float32))
    check_ids = [BOS] + [(7 * i + 3) % 125 + 3 for i in range(12)]
    ref = logits_of(model, check_ids)

    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS)
    save_kw = {}
    if "max_shard_size" in opts:
        save_kw["max_shard_size"] = opts["max_shard_size"]
    model.to(dt).save_pretrained(path, **save_kw)
    if not opts.get("native_config"):
        to_classic_config(path, opts.get("explicit_head_dim", False))

    # reload check: same rope parameters, bit-identical logits
    re = load(path)
    a = {k: v for k, v in cfg.rope_parameters.items() if k != "type"}
    b = {k: v for k, v in re.config.rope_parameters.items() if k != "type"}
    assert a == b, (a, b)
    assert re.config.head_dim == cfg.head_dim and re.config.tie_word_embeddings == cfg.tie_word_embeddings
    got = logits_of(re, check_ids)
    assert torch.equal(got, ref), f"{name}: reload mismatch {(got - ref).abs().max()}"
    if "max_shard_size" in opts:
        shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
        assert len(shards) >= 3 and os.path.exists(os.path.join(path, "model.safetensors.index.json")), shards
        log(f"  {len(shards)} shards")
    log(f"  reload check ok ({', '.join(sorted(os.listdir(path)))})")
    return path


def r7(x):
    return float(f"{x:.7g}")


def rows(t):
    return [[r7(v) for v in row] for row in t.tolist()]


def greedy_manual(path, ids, n):
    """Greedy decoding with a KV cache, eos ignored, on a fresh model (mirrors generate)."""
    m = load(path)
    with torch.no_grad():
        out = m(torch.tensor([ids]), use_cache=True)
        past, new = out.cache, []
        pos = len(ids)
        for _ in range(n):
            nxt = int(out.logits[0, -1].argmax())
            new.append(nxt)
            out = m(torch.tensor([[nxt]]), cache=past, use_cache=True,
                    position_ids=torch.tensor([[pos]]))
            past, pos = out.cache, pos + 1
    return new


def greedy_no_cache(path, ids, n):
    """Greedy decoding recomputing the whole sequence each step on a fresh model."""
    seq = list(ids)
    for _ in range(n):
        seq.append(int(logits_of(load(path), seq)[-1].argmax()))
    return seq[len(ids):]


def goldens_for(name, path, storage, opts, seed):
    g = torch.Generator().manual_seed(1000 + seed)
    lengths = opts.get("prompt_lengths", (5, 11, 23))
    prompts = [[BOS] + torch.randint(3, BASE["vocab_size"], (n - 1,), generator=g).tolist() for n in lengths]

    # every run uses a freshly loaded model: dynamic rope keeps state across forwards
    single = [logits_of(load(path), p) for p in prompts]

    # left-padded batch of the two shortest prompts, position ids as generate() builds them
    bi = [0, 1]
    L = max(len(prompts[i]) for i in bi)
    ids = torch.tensor([[PAD] * (L - len(prompts[i])) + prompts[i] for i in bi])
    mask = torch.tensor([[0] * (L - len(prompts[i])) + [1] * len(prompts[i]) for i in bi])
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    m = load(path)
    with torch.no_grad():
        bl = m(input_ids=ids, attention_mask=mask, position_ids=pos).logits.float()
    batch = [bl[k, L - len(prompts[i]):] for k, i in enumerate(bi)]
    bdiff = max(float((batch[k] - single[i]).abs().max()) for k, i in enumerate(bi))
    # cross-check against generate()'s own first step on the padded batch
    m = load(path)
    with torch.no_grad():
        go = m.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=1,
                        output_logits=True, return_dict_in_generate=True, pad_token_id=PAD)
    gen_first = go.logits[0].float()
    gdiff = float((gen_first - bl[:, -1]).abs().max())
    assert gdiff <= 1e-5, gdiff

    greedy = []
    for p in prompts:
        m = load(path)
        m.generation_config.eos_token_id = None  # a None in generate's own config is overridden
        gc = GenerationConfig(do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=0,
                              eos_token_id=None, bos_token_id=BOS, pad_token_id=PAD)
        with torch.no_grad():
            out = m.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                             generation_config=gc)
        new = out[0, len(p):].tolist()
        assert len(new) == NEW_TOKENS, new
        manual = greedy_manual(path, p, NEW_TOKENS)
        assert new == manual, (new, manual)
        greedy.append(new)
    eos_seen = sum(t == EOS for s in greedy for t in s)

    entry = {
        "storage_dtype": storage,
        "prompts": prompts,
        "logits": [rows(t) for t in single],
        "batch": {"prompts": bi, "logits": [rows(t) for t in batch]},
        "greedy": greedy,
    }
    if storage != "float32":
        nat = logits_of(load(path, DTYPES[storage]), prompts[0])
        entry["native_logits"] = [rows(nat)]
        log(f"  native {storage} vs float32 max |diff| {float((nat - single[0]).abs().max()):.4g}")
    if opts.get("prompt_lengths"):
        nc = [greedy_no_cache(path, p, NEW_TOKENS) for p in prompts]
        entry["greedy_no_cache"] = nc
        log(f"  greedy without kv cache {'differs' if nc != greedy else 'matches'}: "
            f"{[i for i in range(len(nc)) if nc[i] != greedy[i]]}")
    log(f"  batch vs single max |diff| {bdiff:.3g}; generate first step vs forward {gdiff:.3g}; "
        f"eos in greedy: {eos_seen}; logit std {float(single[2].std()):.3g}")
    return entry


def dump(obj, indent=0):
    """JSON with every innermost list of numbers on a single line."""
    pad, pad1 = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad1}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if all(not isinstance(v, (list, dict)) for v in obj):
            return "[" + ",".join(json.dumps(v) for v in obj) + "]"
        return "[\n" + ",\n".join(pad1 + dump(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    os.makedirs(OUT, exist_ok=True)
    goldens = {
        "generator": {
            "command": COMMAND,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "notes": "logits are float32 rounded to 7 significant digits; goldens use eager attention "
                     "on checkpoints reloaded from disk and upcast to float32; batch uses left padding "
                     "(pad id 0), attention_mask and position_ids = cumsum(mask)-1 (0 at pads); greedy "
                     "is generate() with a KV cache and eos disabled; dynamic-f32 greedy_no_cache "
                     "recomputes the full sequence every step instead.",
        }
    }
    for seed, (name, overrides, storage, opts) in enumerate(FIXTURES):
        log(f"{name}:")
        path = write_checkpoint(name, overrides, storage, opts, seed)
        goldens[name] = goldens_for(name, path, storage, opts, seed)
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        f.write(dump(goldens) + "\n")
    log("wrote", os.path.join(OUT, "goldens.json"))


if __name__ == "__main__":
    main()
