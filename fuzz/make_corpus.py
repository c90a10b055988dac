#!/usr/bin/env python3
"""Regenerate the seed corpora under fuzz/corpus/ (deterministic; run from anywhere).

    python3 fuzz/make_corpus.py

corpus/safetensors/  whole safetensors files (8-byte LE header length, JSON header, data), each
                     under 8 KB: valid ones in the shapes real checkpoints have, and broken ones
                     that each hit a different rejection in lw::open_safetensors.
corpus/manifest/     manifest.json files of a split directory: valid ones and broken variants.
corpus/tokenizer/    tokenizer.json files: stories260K's and the small synthetic fixtures of
                     tests/fixtures/tokenizers (compacted), variants with unusual added tokens,
                     and broken ones that each hit a different rejection in lw::Tokenizer.

The fuzzers only read these; libFuzzer's new inputs go to a temporary copy (scripts/run_fuzzers.sh).
"""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
ST_DIR = os.path.join(HERE, "corpus", "safetensors")
MANIFEST_DIR = os.path.join(HERE, "corpus", "manifest")
TOKENIZER_DIR = os.path.join(HERE, "corpus", "tokenizer")
SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
         "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def product(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def safetensors(tensors, metadata=None, align_data=False, gap=0):
    """tensors: list of (name, dtype, shape). Offsets are packed (plus `gap` bytes between)."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape in tensors:
        size = product(shape) * SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size + gap
    text = json.dumps(header, separators=(",", ":")).encode()
    if align_data:  # like lw::SafetensorsWriter: spaces until the data starts on 4 KiB
        text += b" " * ((-(8 + len(text))) % 4096)
    data = bytes((i * 37 + 11) & 0xFF for i in range(offset))
    return raw(text, data)


def raw(header_text, data=b"", length=None):
    if isinstance(header_text, str):
        header_text = header_text.encode()
    if length is None:
        length = len(header_text)
    return struct.pack("<Q", length) + header_text + data


def llama_like():
    """The tensor names and ranks of a real checkpoint (a test fixture's header), tiny shapes."""
    path = os.path.join(REPO, "tests", "fixtures", "gqa-bf16", "model.safetensors")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    metadata = header.pop("__metadata__", None)
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0])[:12]
    tensors = [(k, header[k]["dtype"], [2] * len(header[k]["shape"])) for k in names]
    return safetensors(tensors, metadata), header


def write(directory, name, content):
    if isinstance(content, str):
        content = content.encode()
    assert len(content) < 8192, (name, len(content))
    with open(os.path.join(directory, name), "wb") as f:
        f.write(content)


def make_safetensors():
    os.makedirs(ST_DIR, exist_ok=True)
    w = lambda name, content: write(ST_DIR, name, content)
    llama, full_header = llama_like()
    # Valid.
    w("valid_llama_like_bf16", llama)
    w("valid_f32_metadata", safetensors(
        [("a", "F32", [2, 2]), ("b", "F32", [3])], {"format": "pt", "layerwise_unit": "layer.0"}))
    w("valid_all_dtypes", safetensors([(f"t.{d}", d, [2]) for d in SIZES]))
    w("valid_scalar_and_empty", safetensors(
        [("scalar", "F16", []), ("empty", "BF16", [0, 4]), ("zero_dim", "F32", [3, 0]), ("v", "I64", [1])]))
    w("valid_writer_aligned", safetensors([("w", "BF16", [4, 4]), ("b", "F32", [4])], {"format": "pt"},
                                          align_data=True))
    w("valid_gaps_between", safetensors([("x", "U8", [5]), ("y", "I32", [2])], gap=3))
    w("valid_empty_header", raw("{}"))
    w("valid_only_metadata", raw('{"__metadata__":{"k":"v"}}'))
    w("valid_unsorted_offsets", raw(
        '{"late":{"dtype":"U8","shape":[4],"data_offsets":[4,8]},'
        '"early":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}', bytes(8)))
    # Broken: each one stops at a different check.
    w("bad_too_short", b"\x02\x00\x00")
    w("bad_empty_length_only", struct.pack("<Q", 0))
    w("bad_length_implausible", raw("{}", length=(100 << 20) + 1))
    w("bad_length_max", raw("{}", length=0xFFFFFFFFFFFFFFFF))
    w("bad_length_past_end", raw("{}", length=64))
    w("bad_not_json", raw("{\"a\":"))
    w("bad_json_array", raw("[1,2,3]"))
    w("bad_metadata_not_string", raw('{"__metadata__":{"n":1}}'))
    w("bad_metadata_not_object", raw('{"__metadata__":[]}'))
    w("bad_tensor_not_object", raw('{"t":5}'))
    w("bad_no_dtype", raw('{"t":{"shape":[1],"data_offsets":[0,4]}}', bytes(4)))
    w("bad_unknown_dtype", raw('{"t":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', bytes(16)))
    w("bad_negative_shape", raw('{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', bytes(4)))
    w("bad_float_shape", raw('{"t":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', bytes(4)))
    w("bad_huge_shape", raw('{"t":{"dtype":"F32","shape":[1099511627776,1099511627776],"data_offsets":[0,4]}}',
                            bytes(4)))
    w("bad_offsets_backwards", raw('{"t":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}', bytes(4)))
    w("bad_offsets_three", raw('{"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1,2]}}', bytes(2)))
    w("bad_offsets_past_end", raw('{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', bytes(8)))
    w("bad_size_mismatch", raw('{"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}', bytes(8)))
    w("bad_overlap", raw('{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
                         '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', bytes(8)))
    w("bad_overlap_nested", raw('{"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},'
                                '"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},'
                                '"c":{"dtype":"U8","shape":[1],"data_offsets":[5,6]}}', bytes(8)))
    # A real fixture's header whose data was cut off (as a partial download looks).
    text = json.dumps(full_header, separators=(",", ":"))
    if len(text) < 7900:
        w("bad_truncated_download", raw(text, bytes(16)))


def manifest(units=None, **overrides):
    m = {
        "format": "layerwise-split",
        "version": 1,
        "dtype": "bf16",
        "source": "tests/fixtures/gqa-bf16",
        "config": {"architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_hidden_layers": 2,
                   "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128,
                   "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "rope_scaling": None,
                   "torch_dtype": "bfloat16"},
        "generation_config": {"bos_token_id": 1, "eos_token_id": 2},
        "units": units if units is not None else [
            {"name": "embed", "file": "embed.safetensors", "bytes": 12288, "xxh3": "0123456789abcdef"},
            {"name": "layer.0", "file": "layer-000.safetensors", "bytes": 36864, "xxh3": "fedcba9876543210"},
            {"name": "layer.1", "file": "layer-001.safetensors", "bytes": 36864, "xxh3": "00000000000000ff"},
            {"name": "head", "file": "head.safetensors", "bytes": 12352, "xxh3": "ffffffffffffffff"},
        ],
    }
    for key, value in overrides.items():
        if value is DROP:
            m.pop(key, None)
        else:
            m[key] = value
    return json.dumps(m, indent=2) + "\n"


DROP = object()


def unit(**fields):
    u = {"name": "layer.0", "file": "layer-000.safetensors", "bytes": 4096, "xxh3": "0123456789abcdef"}
    for key, value in fields.items():
        if value is DROP:
            u.pop(key, None)
        else:
            u[key] = value
    return [u]


def make_manifest():
    os.makedirs(MANIFEST_DIR, exist_ok=True)
    w = lambda name, content: write(MANIFEST_DIR, name, content)
    # Valid.
    w("valid.json", manifest())
    w("valid_no_generation_config.json", manifest(generation_config=None, dtype="source", source=DROP))
    w("valid_minimal.json", '{"format":"layerwise-split","version":1,"dtype":"f32","config":{},'
                            '"units":[{"name":"embed","file":"e","bytes":0,"xxh3":"0000000000000000"}]}')
    # Broken variants.
    w("bad_format.json", manifest(format="safetensors"))
    w("bad_format_not_string.json", manifest(format=1))
    w("bad_version_2.json", manifest(version=2))
    w("bad_version_string.json", manifest(version="1"))
    w("bad_version_float.json", manifest(version=1.0))
    w("bad_version_huge.json", manifest(version=4294967297))
    w("bad_no_dtype.json", manifest(dtype=DROP))
    w("bad_config_array.json", manifest(config=[]))
    w("bad_generation_config_string.json", manifest(generation_config="x"))
    w("bad_units_empty.json", manifest(units=[]))
    w("bad_units_object.json", manifest(units={"a": 1}))
    w("bad_unit_not_object.json", manifest(units=["embed"]))
    w("bad_unit_no_name.json", manifest(units=unit(name=DROP)))
    w("bad_unit_file_slash.json", manifest(units=unit(file="../etc/passwd")))
    w("bad_unit_file_dot.json", manifest(units=unit(file=".hidden")))
    w("bad_unit_file_empty.json", manifest(units=unit(file="")))
    w("bad_unit_bytes_negative.json", manifest(units=unit(bytes=-1)))
    w("bad_unit_bytes_string.json", manifest(units=unit(bytes="4096")))
    w("bad_unit_xxh3_upper.json", manifest(units=unit(xxh3="0123456789ABCDEF")))
    w("bad_unit_xxh3_short.json", manifest(units=unit(xxh3="0123")))
    w("bad_unit_xxh3_number.json", manifest(units=unit(xxh3=81985529216486895)))
    w("bad_not_json.json", '{"format":"layerwise-split",')
    w("bad_array.json", "[]")


def compact(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def added_token(content, id, special=True, **flags):
    token = {"id": id, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": not special, "special": special}
    token.update(flags)
    return token


def make_tokenizer():
    os.makedirs(TOKENIZER_DIR, exist_ok=True)

    def w(name, value):
        content = (value if isinstance(value, str) else compact(value)).encode()
        assert len(content) < 32768, (name, len(content))  # the whole corpus stays well under 1 MiB
        with open(os.path.join(TOKENIZER_DIR, name), "wb") as f:
            f.write(content)

    fixtures = os.path.join(REPO, "tests", "fixtures", "tokenizers")
    for name in sorted(os.listdir(fixtures)):
        path = os.path.join(fixtures, name, "tokenizer.json")
        if name.startswith("syn-") and os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                w("valid_" + name + ".json", json.load(f))
    with open(os.path.join(REPO, "models", "stories260K", "tokenizer.json"), encoding="utf-8") as f:
        stories = json.load(f)
    w("valid_stories260K.json", stories)

    def stories_with(**changes):
        t = json.loads(json.dumps(stories))
        for key, value in changes.items():
            t[key] = value
        return t

    added = stories["added_tokens"]
    # Valid: added tokens whose file ids are not the ones they get, and every matching flag.
    w("valid_added_past_vocab.json", stories_with(added_tokens=added + [added_token("<zz>", 100000)]))
    w("valid_added_repeated_id.json", stories_with(
        added_tokens=added + [added_token("<zz>", 600), added_token("<yy>", 600), added_token("<zz>", 7)]))
    w("valid_added_flags.json", stories_with(added_tokens=added + [
        added_token("<l>", 512, lstrip=True), added_token("<r>", 513, rstrip=True),
        added_token("word", 514, special=False, single_word=True), added_token("\u2581the", 515, special=False),
        added_token("a", 516, special=False)]))
    w("valid_template_processing.json", stories_with(post_processor={
        "type": "TemplateProcessing", "single": "<s> $A </s>", "pair": "<s> $A </s> $B:1 </s>:1",
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                           "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}))
    # Broken.
    w("bad_added_negative_id.json", stories_with(added_tokens=added + [added_token("<zz>", -1)]))
    w("bad_added_float_id.json", stories_with(added_tokens=added + [added_token("<zz>", 600.0)]))
    no_id = added_token("<zz>", 0)
    del no_id["id"]
    w("bad_added_no_id.json", stories_with(added_tokens=added + [no_id]))
    w("bad_template_negative_id.json", stories_with(post_processor={
        "type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                                 {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [-1], "tokens": ["<s>"]}}}))
    bad_vocab = stories_with()
    bad_vocab["model"]["vocab"]["far"] = 1 << 40
    w("bad_vocab_id_huge.json", bad_vocab)
    w("bad_model_unigram.json", stories_with(model={"type": "Unigram", "vocab": [["a", 0.0]]}))
    w("bad_not_object.json", "[]")
    w("bad_truncated.json", compact(stories)[:300])


if __name__ == "__main__":
    make_safetensors()
    make_manifest()
    make_tokenizer()
