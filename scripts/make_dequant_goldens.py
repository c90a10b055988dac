#!/usr/bin/env python3
"""Writes tests/fixtures/gguf/dequant_goldens.json: for every ggml type src/format/dequantize.cpp
handles, random raw blocks and the float32 values the gguf Python package's reference
dequantizer (gguf.quants.dequantize, numpy) makes of them. tests/gguf/test_dequantize.cpp checks
lw::dequantize_row and lw::dequantize_in_place against them bit for bit.

    pip install gguf==0.19.0 numpy      # the goldens were made with gguf 0.19.0, numpy 2.4.6
    python3 scripts/make_dequant_goldens.py

The output depends only on the fixed seed below and the package versions (both are recorded in
the JSON). Per type:
  - the small-block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL) get 8 blocks, the K-quants and
    IQ4_XS 4 superblocks;
    the quant payloads are random bytes, every float16 scale field (d, dmin, m) is overwritten
    with a random finite value: ordinary magnitudes of both signs, zero, subnormals, and a few
    large ones (no NaN or Inf, so every expected value is finite);
  - F32, F16 and BF16 get random values plus special ones (signed zeros, infinities, quiet and
    signalling NaNs, subnormals, the largest finite value).
The types added later (LATER_TYPES) draw from their own generator, seeded from SEED too, so that
adding them left every earlier type's bytes unchanged.
JSON layout: {"gguf_version", "numpy_version", "seed", "types": [{"name", "type", "elements",
"raw" (hex of the raw bytes), "expected" (hex of the little-endian float32 bit patterns,
8 hex digits per value, most significant first)}]}.
"""
import importlib.metadata
import json
import os

import numpy as np
import gguf
import gguf.quants
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "gguf", "dequant_goldens.json")
SEED = 20240611

# Byte offsets of the float16 scale fields inside one block of each quantized type.
SCALE_OFFSETS = {
    T.Q4_0: [0],
    T.Q4_1: [0, 2],
    T.Q5_0: [0],
    T.Q5_1: [0, 2],
    T.Q8_0: [0],
    T.Q2_K: [80, 82],   # scales[16] qs[64] d dmin
    T.Q3_K: [108],      # hmask[32] qs[64] scales[12] d
    T.Q4_K: [0, 2],     # d dmin scales[12] qs[128]
    T.Q5_K: [0, 2],     # d dmin scales[12] qh[32] qs[128]
    T.Q6_K: [208],      # ql[128] qh[64] scales[16] d
    T.IQ4_NL: [0],      # d qs[16]
    T.IQ4_XS: [0],      # d scales_h(u16) scales_l[4] qs[128]
}

# Appended after the first goldens were written; see the docstring.
LATER_TYPES = [T.IQ4_NL, T.IQ4_XS]


def random_finite_f16(rng):
    """The bits of a random finite float16, drawn from a mix of kinds."""
    kind = rng.integers(0, 10)
    sign = int(rng.integers(0, 2)) << 15
    if kind == 0:  # subnormal
        return sign | int(rng.integers(1, 0x400))
    if kind == 1:  # zero
        return sign
    if kind == 2:  # any finite normal, up to the largest (65504)
        return sign | (int(rng.integers(1, 31)) << 10) | int(rng.integers(0, 0x400))
    # the usual magnitudes of quantization scales: about 2^-14 .. 2^0
    return sign | (int(rng.integers(1, 16)) << 10) | int(rng.integers(0, 0x400))


def quant_raw(rng, qtype, n_blocks):
    _, type_size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for b in range(n_blocks):
        for off in SCALE_OFFSETS[qtype]:
            bits = random_finite_f16(rng)
            raw[b, off] = bits & 0xFF
            raw[b, off + 1] = bits >> 8
    return raw.reshape(-1)


def float_raw(rng, qtype):
    if qtype == T.F32:
        specials = np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001,
                             0xFFC12345, 0x00000001, 0x807FFFFF, 0x7F7FFFFF, 0x3F800000, 0xBF800000],
                            dtype=np.uint32)
        values = rng.standard_normal(52).astype(np.float32).view(np.uint32)
        return np.concatenate([specials, values]).view(np.uint8)
    if qtype == T.F16:
        specials = np.array([0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0x7C01, 0xFE01, 0x7D55, 0x0001,
                             0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00], dtype=np.uint16)
    else:  # BF16
        specials = np.array([0x0000, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7F81, 0xFFC1, 0x7FA5, 0x0001,
                             0x8001, 0x007F, 0x0080, 0x7F7F, 0xFF7F, 0x3F80, 0xBF80], dtype=np.uint16)
    values = rng.integers(0, 0x10000, size=48, dtype=np.uint16)
    return np.concatenate([specials, values]).view(np.uint8)


def main():
    first_rng = np.random.default_rng(SEED)
    later_rng = np.random.default_rng([SEED, 1])
    types = [T.F32, T.F16, T.BF16, T.Q8_0, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1,
             T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K] + LATER_TYPES
    entries = []
    for qtype in types:
        rng = later_rng if qtype in LATER_TYPES else first_rng
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        if qtype in (T.F32, T.F16, T.BF16):
            raw = float_raw(rng, qtype)
        else:
            raw = quant_raw(rng, qtype, 8 if block_size == 32 else 4)
        raw = np.ascontiguousarray(raw, dtype=np.uint8)
        values = gguf.quants.dequantize(raw.copy(), qtype)
        assert values.dtype == np.float32
        values = values.reshape(-1)
        assert values.size * type_size == raw.size * block_size
        if qtype not in (T.F32, T.F16, T.BF16):
            assert np.all(np.isfinite(values)), qtype.name
        entries.append({
            "name": qtype.name,
            "type": int(qtype),
            "elements": int(values.size),
            "raw": raw.tobytes().hex(),
            "expected": "".join(f"{int(v):08x}" for v in values.view(np.uint32)),
        })
    doc = {
        "gguf_version": importlib.metadata.version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "types": entries,
    }
    with open(OUT, "w") as f:
        f.write("{\n")
        for key in ("gguf_version", "numpy_version", "seed"):
            f.write(f"  {json.dumps(key)}: {json.dumps(doc[key])},\n")
        f.write('  "types": [\n')
        for i, entry in enumerate(entries):
            f.write("    " + json.dumps(entry) + (",\n" if i + 1 < len(entries) else "\n"))
        f.write("  ]\n}\n")
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes, {len(entries)} types)")


if __name__ == "__main__":
    main()
