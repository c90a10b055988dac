#!/usr/bin/env python3
"""Goldens for tests/test_quantize.cpp: the gguf Python package's own quantizers.

gguf.quants.quantize (gguf 0.19.0) implements Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (the K and IQ
types are dequantize-only there). This writes, under tests/fixtures/quantize/:

  input.f32      float32 little-endian, ROWS x COLS (seeded Gaussian rows with a few edge rows:
                 all zero, constant, one spike, tiny values, mixed signs of equal magnitude)
  <type>.bin     gguf.quants.quantize(input, type) as raw blocks, for each type above
  goldens.json   rows, cols, and each file's size and type

Run with a venv holding gguf==0.19.0 and numpy:  python scripts/make_quant_goldens.py
"""
import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

ROWS, COLS = 12, 128
TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]


def main() -> None:
    out = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "quantize"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261203)
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    x[1] *= np.float32(0.02)          # small weights, as in real matrices
    x[2] = 0.0                        # all zero
    x[3] = np.float32(0.75)           # constant
    x[4] = 0.0
    x[4][::37] = np.float32(-3.5)     # a few spikes
    x[5] *= np.float32(1e-6)          # tiny (float16 subnormal scales)
    x[6] = np.where(np.arange(COLS) % 2 == 0, 1.0, -1.0).astype(np.float32)  # ties for argmax
    x[7] *= np.float32(1000.0)        # large
    x[8] = np.abs(x[8])               # all positive (minimum > 0 for the offset types)
    x[9] = -np.abs(x[9])              # all negative
    (out / "input.f32").write_bytes(x.astype("<f4").tobytes())
    index = {"rows": ROWS, "cols": COLS, "input": "input.f32", "gguf": "0.19.0", "types": {}}
    for name in TYPES:
        q = quants.quantize(x, getattr(T, name))
        data = np.ascontiguousarray(q).tobytes()
        (out / f"{name.lower()}.bin").write_bytes(data)
        index["types"][name] = {"file": f"{name.lower()}.bin", "bytes": len(data)}
    (out / "goldens.json").write_text(json.dumps(index, indent=2) + "\n")


if __name__ == "__main__":
    main()
