#!/usr/bin/env python3
"""Writes a Hugging Face Llama checkpoint directory as a GGUF file, the way llama.cpp's
convert_hf_to_gguf.py does for LlamaForCausalLM, one tensor at a time.

    python3 bench/hf_to_gguf.py HF_DIR OUT.gguf [--outtype f32|f16|bf16|q8_0]
        [--vocab placeholder|roundtrip] [--no-add-bos]

HF_DIR holds config.json and model.safetensors (or a sharded model.safetensors.index.json), tensors
in F32, F16 or BF16, as build/make_checkpoint writes it. The file gets llama.cpp's layout for the
"llama" architecture: the llama.* hyperparameters, tensor names token_embd / blk.N.{attn_norm,
attn_q, attn_k, attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down} / output_norm / output,
the rows of q_proj and k_proj permuted as LlamaModel.permute does (llama.cpp's RoPE rotates
adjacent pairs), 1-D tensors in F32 and 2-D ones in --outtype. Tensors are written in sweep order
(embedding, layers, head).

The checkpoints this is for carry no tokenizer, so the file gets a minimal SentencePiece-style
("llama") vocabulary of vocab_size pieces with ids 0, 1, 2 = <unk>, <s> (BOS), </s> (EOS):
  placeholder  every other id is the piece "<tN>" (score 0, NORMAL), enough for llama.cpp to load
               the model; such text does not tokenize back to the ids.
  roundtrip    every other id is "▁" + one CJK/Hangul character of its own, and the file says
               add_space_prefix = false, so llama.cpp's SentencePiece tokenizer turns the text
               roundtrip_text(ids) back into exactly those ids (each "▁"+character is a token, and
               no two adjacent pieces merge into another). bench/score_bench.py uses it to feed
               llama-perplexity the same token ids as layerwise.

Memory: the header is written from the safetensors headers, then each tensor is read from its file
(np.fromfile at its offset, not a mapping, so the pages do not stay in this process), permuted,
converted, written and dropped: the peak is about three copies of the largest tensor (the source,
the float32 working copy, the converted data), printed at the end.

Also the shared code for scripts/make_gguf_fixtures.py (permute, LAYER_TENSORS, tensor_data,
add_llama_metadata, add_spm_vocab). Needs numpy and the gguf package only.
"""
import argparse
import json
import os
import resource
import struct
import sys
import time

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import LlamaFileType as FT

LAYER_TENSORS = [  # HF name -> GGUF name, in the order of the HF checkpoint
    ("input_layernorm", "attn_norm"),
    ("mlp.down_proj", "ffn_down"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("post_attention_layernorm", "ffn_norm"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.o_proj", "attn_output"),
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.v_proj", "attn_v"),
]

OUTTYPES = {  # --outtype -> (type of 2-D tensors, general.file_type)
    "f32": (QT.F32, FT.ALL_F32),
    "f16": (QT.F16, FT.MOSTLY_F16),
    "bf16": (QT.BF16, FT.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, FT.MOSTLY_Q8_0),
}

SAFETENSORS_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}

# Code points for the roundtrip vocabulary: CJK Unified Ideographs, Hangul syllables, CJK
# Extension B; one character (3 or 4 UTF-8 bytes) per token, none of them whitespace.
ROUNDTRIP_RANGES = [(0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x20000, 0x2A6DF)]
SPACE = "\u2581"


class ConvertError(Exception):
    pass


# ----------------------------------------------------------------------------- shared with
# scripts/make_gguf_fixtures.py (which must keep writing byte-identical fixtures)

def permute(weights, n_head, n_head_kv):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape))


def tensor_data(array, qtype):
    """(data, raw_dtype) for GGUFWriter.add_tensor: numpy float32/float16, or quantized bytes."""
    if qtype == QT.F32:
        return array.astype(np.float32), None
    if qtype == QT.F16:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def rope_theta_of(cfg):
    if cfg.get("rope_theta") is not None:
        return float(cfg["rope_theta"])
    params = cfg.get("rope_parameters") or {}
    return float(params.get("rope_theta", 10000.0))


def add_llama_metadata(w, cfg, file_type, name):
    """The llama.* keys convert_hf_to_gguf.py writes for LlamaForCausalLM (in the order the
    fixtures were written with). Keys only some configurations need come last."""
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hidden = cfg["hidden_size"]
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(rope_theta_of(cfg))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_file_type(file_type)
    w.add_vocab_size(cfg["vocab_size"])
    head_dim = cfg.get("head_dim") or hidden // n_head
    w.add_rope_dimension_count(head_dim)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    if head_dim != hidden // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(scaling["factor"]))


def add_spm_vocab(w, pieces, scores, types, bos, eos, unk=0, add_bos=True, add_space_prefix=None):
    """A SentencePiece-style ("llama") vocabulary."""
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(pieces)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_unk_token_id(unk)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)


# ----------------------------------------------------------------------------- vocabularies

def roundtrip_characters(count):
    chars = []
    for first, last in ROUNDTRIP_RANGES:
        for cp in range(first, last + 1):
            if len(chars) == count:
                return chars
            chars.append(chr(cp))
    if len(chars) < count:
        raise ConvertError("the roundtrip vocabulary has characters for %d ids, the model has %d" % (len(chars) + 3, count + 3))
    return chars


def vocabulary(n, style):
    """(pieces, scores, types): <unk>, <s>, </s>, then one piece per id."""
    if n < 4:
        raise ConvertError("vocab_size %d is too small (ids 0-2 are <unk>, <s>, </s>)" % n)
    pieces = ["<unk>", "<s>", "</s>"]
    if style == "placeholder":
        pieces += ["<t%d>" % i for i in range(3, n)]
    else:
        pieces += [SPACE + c for c in roundtrip_characters(n - 3)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * (n - 3)
    return pieces, [0.0] * n, [int(t) for t in types]


_roundtrip_cache = {}


def roundtrip_text(ids, vocab_size, leading_space=True):
    """The text that llama.cpp tokenizes back to `ids` (all in [3, vocab_size)) with the
    roundtrip vocabulary. Without leading_space the first piece's "▁" is left out: for text that
    follows a space, as llama-perplexity puts one between the context and each ending."""
    if any(i < 3 or i >= vocab_size for i in ids):
        raise ConvertError("ids must be in [3, %d) for roundtrip text" % vocab_size)
    chars = _roundtrip_cache.get(vocab_size) or _roundtrip_cache.setdefault(vocab_size, roundtrip_characters(vocab_size - 3))
    text = "".join(SPACE + chars[i - 3] for i in ids)
    return text if leading_space else text[1:]


# ----------------------------------------------------------------------------- the checkpoint

def read_safetensors_header(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ConvertError("%s: not a safetensors file (shorter than 8 bytes)" % path)
        length = struct.unpack("<Q", raw)[0]
        if length > 100 << 20:
            raise ConvertError("%s: header length %d is implausible" % (path, length))
        header = json.loads(f.read(length))
    base = 8 + length
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise ConvertError("%s: tensor %s has dtype %s (F32, F16 or BF16 are converted)" % (path, name, info["dtype"]))
        begin, end = info["data_offsets"]
        tensors[name] = {"file": path, "offset": base + begin, "nbytes": end - begin,
                         "dtype": info["dtype"], "shape": tuple(info["shape"])}
    return tensors


def checkpoint_tensors(hf_dir):
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    single = os.path.join(hf_dir, "model.safetensors")
    if os.path.exists(single):
        return read_safetensors_header(single)
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
        tensors = {}
        for name in files:
            tensors.update(read_safetensors_header(os.path.join(hf_dir, name)))
        return tensors
    raise ConvertError("%s: no model.safetensors or model.safetensors.index.json" % hf_dir)


def load_tensor(info):
    """The tensor as float32 (BF16 and F16 widened exactly) or, for F16, as float16; read with one
    read call into memory of its own."""
    dtype = SAFETENSORS_DTYPES[info["dtype"]]
    count = info["nbytes"] // np.dtype(dtype).itemsize
    with open(info["file"], "rb") as f:
        f.seek(info["offset"])
        data = np.fromfile(f, dtype=dtype, count=count)
    if data.size != count:
        raise ConvertError("%s: tensor data ends early" % info["file"])
    if info["dtype"] == "BF16":
        data = (data.astype(np.uint32) << 16).view(np.float32)
    return data.reshape(info["shape"])


def plan_tensors(cfg, tensors):
    """[(gguf name, hf name, transform or None)] in sweep order."""
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    plan = [("token_embd.weight", "model.embed_tokens.weight", None)]
    for i in range(cfg["num_hidden_layers"]):
        for hf, gg in sorted(LAYER_TENSORS, key=lambda t: ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                             "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"].index(t[1])):
            for kind in ("weight", "bias"):
                name = "model.layers.%d.%s.%s" % (i, hf, kind)
                if name not in tensors:
                    if kind == "weight":
                        raise ConvertError("tensor %s is missing" % name)
                    continue
                transform = None
                if gg == "attn_q":
                    transform = ("permute", n_head, n_head)
                elif gg == "attn_k":
                    transform = ("permute", n_head, n_kv)
                plan.append(("blk.%d.%s.%s" % (i, gg, kind), name, transform))
    plan.append(("output_norm.weight", "model.norm.weight", None))
    if not cfg.get("tie_word_embeddings", False):
        if "lm_head.weight" not in tensors:
            raise ConvertError("tensor lm_head.weight is missing (and tie_word_embeddings is false)")
        plan.append(("output.weight", "lm_head.weight", None))
    used = {hf for _, hf, _ in plan} | {"lm_head.weight"}
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise ConvertError("tensors this converter does not know: %s" % ", ".join(unknown[:5]))
    return plan


def check_config(cfg):
    if cfg.get("architectures") != ["LlamaForCausalLM"]:
        raise ConvertError("architectures is %r; only LlamaForCausalLM is converted" % cfg.get("architectures"))
    scaling = cfg.get("rope_scaling")
    if scaling:
        kind = scaling.get("rope_type", scaling.get("type"))
        if kind != "linear":
            raise ConvertError("rope_scaling of type %r is not converted (only linear)" % kind)


def output_type(name, shape, qtype):
    """convert_hf_to_gguf.py: 1-D tensors and norms stay F32; Q8_0 needs rows of a multiple of 32
    (falls back to F16 otherwise)."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return QT.F32
    if qtype == QT.Q8_0 and shape[-1] % gguf.GGML_QUANT_SIZES[QT.Q8_0][0] != 0:
        return QT.F16
    return qtype


def encode(array, qtype):
    if qtype == QT.F32:
        return array.astype(np.float32, copy=False)
    if qtype == QT.F16:
        return array.astype(np.float16, copy=False)
    return gguf.quants.quantize(array.astype(np.float32, copy=False), qtype)


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def convert(hf_dir, out_path, outtype="f16", vocab_style="placeholder", add_bos=True, log=None):
    """Writes out_path; returns a summary dict."""
    log = log or (lambda *a: None)
    start = time.monotonic()
    with open(os.path.join(hf_dir, "config.json")) as f:
        cfg = json.load(f)
    check_config(cfg)
    tensors = checkpoint_tensors(hf_dir)
    plan = plan_tensors(cfg, tensors)
    qtype, file_type = OUTTYPES[outtype]
    vocab = cfg["vocab_size"]
    for key, expected in (("bos_token_id", 1), ("eos_token_id", 2)):
        if cfg.get(key) not in (expected, None, [expected]):
            log("note: config.json has %s %r; the vocabulary written has <s> = 1, </s> = 2" % (key, cfg.get(key)))

    tmp_path = out_path + ".tmp"
    w = gguf.GGUFWriter(tmp_path, arch="llama")
    add_llama_metadata(w, cfg, file_type, "layerwise " + os.path.basename(os.path.normpath(hf_dir)))
    pieces, scores, types = vocabulary(vocab, vocab_style)
    add_spm_vocab(w, pieces, scores, types, bos=1, eos=2, unk=0, add_bos=add_bos,
                  add_space_prefix=False if vocab_style == "roundtrip" else None)

    types_out = []
    for gguf_name, hf_name, _ in plan:
        info = tensors[hf_name]
        t = output_type(gguf_name, info["shape"], qtype)
        types_out.append(t)
        if t in (QT.F32, QT.F16):
            dtype = np.float32 if t == QT.F32 else np.float16
            w.add_tensor_info(gguf_name, info["shape"], np.dtype(dtype), int(np.prod(info["shape"])) * np.dtype(dtype).itemsize)
        else:
            byte_shape = gguf.quants.quant_shape_to_byte_shape(info["shape"], t)
            w.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    written = 0
    for (gguf_name, hf_name, transform), t in zip(plan, types_out):
        data = load_tensor(tensors[hf_name])
        if transform:
            data = permute(data, transform[1], transform[2])
        data = encode(data, t)
        w.write_tensor_data(data)
        written += data.nbytes
        del data
    w.close()
    os.replace(tmp_path, out_path)
    summary = {"path": out_path, "bytes": os.path.getsize(out_path), "tensors": len(plan), "tensor_bytes": written,
               "outtype": outtype, "vocab": vocab_style, "add_bos": add_bos, "seconds": time.monotonic() - start,
               "peak_rss": peak_rss_bytes(),
               "largest_tensor_bytes": max(tensors[hf]["nbytes"] for _, hf, _ in plan)}
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hf_dir", help="Hugging Face checkpoint directory (config.json + safetensors)")
    parser.add_argument("out", help="the .gguf file to write")
    parser.add_argument("--outtype", default="f16", choices=sorted(OUTTYPES), help="type of the 2-D tensors (default f16)")
    parser.add_argument("--vocab", default="placeholder", choices=["placeholder", "roundtrip"],
                        help="placeholder pieces <tN> (default), or pieces that tokenize back exactly")
    parser.add_argument("--no-add-bos", action="store_true",
                        help="tokenizer.ggml.add_bos_token = false (llama.cpp then adds no BOS to text)")
    args = parser.parse_args()
    try:
        s = convert(args.hf_dir, args.out, args.outtype, args.vocab, not args.no_add_bos,
                    log=lambda *a: print("hf_to_gguf:", *a, file=sys.stderr))
    except (ConvertError, OSError, KeyError, ValueError) as e:
        print("hf_to_gguf: error: %s" % e, file=sys.stderr)
        return 1
    print("hf_to_gguf: wrote %s: %d tensors, %.1f MiB, %s, %s vocabulary, in %.1f s; peak RSS %.1f MiB "
          "(largest source tensor %.1f MiB)" % (
              s["path"], s["tensors"], s["bytes"] / 2 ** 20, s["outtype"], s["vocab"], s["seconds"],
              s["peak_rss"] / 2 ** 20, s["largest_tensor_bytes"] / 2 ** 20), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
