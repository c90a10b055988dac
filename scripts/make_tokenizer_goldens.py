#!/usr/bin/env python3
"""Writes the tokenizer fixtures and goldens under tests/fixtures/tokenizers/.

Needs the Python packages `tokenizers` (the reference: the Rust library), `transformers` and
`gguf` (only to convert llama.cpp's GGUF vocabularies and to apply tokenizer_config.json the way
transformers 5 does). The C++ tests need none of them: everything they read is committed.

    python3 scripts/make_tokenizer_goldens.py [--shared ../shared] [--retrain]

For every tokenizer FIXTURE/goldens.json holds, for a shared corpus (corpus.json):
  plain          encode(text, add_special_tokens=False), special tokens in the text not parsed
  special        encode(text, add_special_tokens=True),  not parsed
  parse          encode(text, add_special_tokens=False), special tokens parsed
  parse_special  encode(text, add_special_tokens=True),  parsed
  decoded        decode(plain, skip_special_tokens=False)
  decoded_parse  decode(parse_special, skip_special_tokens=False)
  decoded_skip   decode(parse_special, skip_special_tokens=True)
and, for the GGUF vocabularies, llama.cpp's test vectors (expected = llama.cpp's .out, python =
what tokenizers gives for the converted tokenizer.json).
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

# Training must give the same merges every time (ties are broken by thread timing otherwise).
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["RAYON_NUM_THREADS"] = "1"

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizers")

# GGUF vocabularies converted with transformers (AutoTokenizer.from_pretrained(gguf_file=...)).
# Kept: those whose tokenizer.json is small once written compactly. Left out: deepseek-llm
# (3.9 MB), starcoder (same pipeline as gpt-2), and refact, mpt, baichuan, gpt-neox (transformers
# 5 cannot convert their architecture).
GGUF = ["llama-spm", "phi-3", "gpt-2", "falcon", "deepseek-coder"]
# Merges written as "a b" strings for these (the others keep the ["a", "b"] pair form).
STRING_MERGES = {"llama-spm", "gpt-2", "falcon", "deepseek-coder"}

CORPUS = [
    "",
    " ",
    "  ",
    "\n",
    "Hello world",
    " Hello world",
    "Hello, World! How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "   leading spaces and trailing   ",
    "multiple     spaces\tand\ttabs\nnew\nlines\n\n\nand\r\nCRLF",
    "\t\t indented\n    code block\n",
    "I'm sure you're right, he'll say we've done it. DON'T SHOUT, It'S fine, she'd know",
    "Café naïve résumé — Ærøskøbing, Ångström, façade, jalapeño",
    "e\u0301 vs \u00e9, A\u030a vs \u00c5",
    "İstanbul ΣΊΣΥΦΟΣ straße ǅemal",
    "ＡＢＣ１２３ ﬁﬂ ① ² ½ ™",
    "我想在apple工作1314151天～",
    "日本語のテキスト、カタカナとひらがな。",
    "한국어 문장입니다.",
    "مرحبا بالعالم! هذا اختبار.",
    "नमस्ते दुनिया, यह एक परीक्षण है।",
    "Привет, мир! Ελληνικά γράμματα.",
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷 🦙.cpp",
    "emoji at the end 🤖",
    "def square(x):\n    return x ** 2  # comment\n",
    "if (a != b && c <= d) { e += 1; } else { f--; }",
    "std::vector<int> v{1, 2, 3}; // 0x1F 0b1010",
    "<html><body class=\"main\">&amp;</body></html>",
    "1234567890 3.14159 2,000,000 year 2024 007",
    "9 99 999 9999 99999 999999",
    "<s>",
    "</s>",
    "<s> hi </s>",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "</s >",
    "<unk> <pad>",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "[INST] hi [/INST] [MASK] mask[MASK] [MASK]s",
    "a\u00a0b\u3000c\u2028d\u0085e\u200bf\u180eg\u2009h",
    "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇",
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "Hello HELLO hello hElLo hello there, Hello There",
    "user: <|tool|> call <|tool|>now",
    "trailing newline\n",
    " \n \n\n \t\t ",
    "tab\tafter",
    "\u0000null and \u0007bell",
]

BASE_TEXT = (
    [
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
        "The quick brown fox jumps over the lazy dog. The dog was not amused, but the fox was happy.",
        "Hello world! Hello there. How are you doing today? I'm doing well, thank you for asking.",
        "def main():\n    for i in range(10):\n        print(i * 2)\n    return 0\n",
        "if (x > 0) { y = x + 1; } else { y = -x; } // simple code",
        "Numbers: 1 22 333 4444 55555 3.14 2024 100,000 and 42.",
        "Le café est très bon. Les élèves étudient à l'école. Über den Wolken.",
        "Привет мир, как дела? Всё хорошо.",
        "我想在北京工作。你好世界。",
        "Tokenizers split text into tokens; tokens become ids; ids become text again.",
        "Machine learning models read tokens, not characters, and predict the next token.",
    ]
    * 30
)
# The byte-level models see everything; the others only BASE_TEXT, so that the corpus has
# characters they do not know (unk, byte fallback). (limit_alphabet would pick among equally
# frequent characters at random.)
TRAIN_TEXT = BASE_TEXT + CORPUS

LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")


def dump(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))


def dump_lines(obj, path):
    """A JSON object with one line per key, and one line per element of its lists."""
    def line(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    parts = []
    for key, value in obj.items():
        if isinstance(value, list) and value:
            body = ",\n  ".join(line(v) for v in value)
            parts.append(f"{line(key)}:[\n  {body}]")
        else:
            parts.append(f"{line(key)}:{line(value)}")
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n" + ",\n".join(parts) + "\n}\n")


def dump_pretty(obj, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def compact_tokenizer_json(src, dst, string_merges):
    with open(src, encoding="utf-8") as f:
        data = json.load(f)
    if string_merges:
        merges = data["model"]["merges"]
        if all(" " not in a and " " not in b for a, b in merges):
            data["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    dump(data, dst)


# ---- the reference: Rust tokenizers, with tokenizer_config.json applied as transformers does ----


def reference(directory):
    """A tokenizers.Tokenizer for a fixture directory, after transformers applied its config."""
    config_path = os.path.join(directory, "tokenizer_config.json")
    raw = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    if not os.path.exists(config_path):
        return raw, []
    from transformers import AutoTokenizer

    with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
    # Load with the generic class: model classes such as LlamaTokenizer rebuild the pipeline in
    # transformers 5 instead of using tokenizer.json (see notes).
    config["tokenizer_class"] = "TokenizersBackend"
    notes = []
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(os.path.join(directory, "tokenizer.json"), tmp)
        dump(config, os.path.join(tmp, "tokenizer_config.json"))
        tok = AutoTokenizer.from_pretrained(tmp)
    backend = tok._tokenizer
    for text in CORPUS:
        for parse in (False, True):
            raw.encode_special_tokens = backend.encode_special_tokens = not parse
            if raw.encode(text, add_special_tokens=False).ids != backend.encode(text, add_special_tokens=False).ids:
                notes.append(f"transformers changed the tokenization of {text!r} (parse={parse})")
    return backend, notes


def encode(tok, text, add_special, parse):
    tok.encode_special_tokens = not parse
    return tok.encode(text, add_special_tokens=add_special).ids


def goldens_for(tok, texts):
    cases = []
    for text in texts:
        plain = encode(tok, text, False, False)
        both = encode(tok, text, True, True)
        cases.append({
            "text": text,
            "plain": plain,
            "special": encode(tok, text, True, False),
            "parse": encode(tok, text, False, True),
            "parse_special": both,
            "decoded": tok.decode(plain, skip_special_tokens=False),
            "decoded_parse": tok.decode(both, skip_special_tokens=False),
            "decoded_skip": tok.decode(both, skip_special_tokens=True),
        })
    return cases


FLAG_SETS = [{}, {"add_bos_token": True}, {"add_eos_token": True}, {"add_bos_token": False},
             {"add_bos_token": True, "add_eos_token": True}, {"add_bos_token": None, "add_eos_token": True}]


def flag_goldens(directory, bos, eos):
    """Tokenizer.from_json with a config holding add_bos_token/add_eos_token (the GGUF path):
    transformers 5 applies explicit flags with TokenizersBackend.update_post_processor."""
    from transformers import TokenizersBackend

    raw = Tokenizer.from_file(os.path.join(ROOT, directory, "tokenizer.json"))
    cases = []
    for flags in FLAG_SETS:
        config = {"bos_token": bos, "eos_token": eos, **flags}
        tok = TokenizersBackend(tokenizer_object=Tokenizer.from_str(raw.to_str()), **config)
        backend = tok._tokenizer
        for text in ["Hello world", "", " <s> x"]:
            cases.append({"config": config, "text": text, "ids": encode(backend, text, True, False)})
    return cases


def write_goldens(name, directory, extra=None, notes=()):
    tok, config_notes = reference(os.path.join(ROOT, directory))
    cases = goldens_for(tok, CORPUS)
    lossless = all(c["decoded"] == c["text"] for c in cases)
    golden = {"dir": directory, "lossless": lossless, "vocab_size": tok.get_vocab_size(True),
              "notes": list(notes) + config_notes, "cases": cases}
    if extra:
        golden.update(extra)
    os.makedirs(os.path.join(OUT, name), exist_ok=True)
    dump_lines(golden, os.path.join(OUT, name, "goldens.json"))
    roundtrip = sum(c["decoded"] == c["text"] for c in cases)
    print(f"{name}: {len(cases)} cases, {roundtrip} round-trip, lossless={lossless}"
          + (f", {len(golden['notes'])} notes" if golden["notes"] else ""))
    return tok


# ---- (a) stories260K ----


def stories():
    write_goldens("stories260K", "models/stories260K",
                  extra={"flag_cases": flag_goldens("models/stories260K", "<s>", "</s>")}, notes=[
        "transformers 5 loads this directory as LlamaTokenizer, which rebuilds the pipeline "
        "(Metaspace prepend_scheme=always instead of tokenizer.json's Prepend+Replace normalizer) "
        "and tokenizes leading spaces differently; the goldens follow tokenizer.json (the Rust "
        "library), with add_bos_token/add_eos_token applied as transformers does."])


# ---- (b) GGUF vocabularies ----


def read_vectors(shared, name):
    base = os.path.join(shared, "vocab", f"ggml-vocab-{name}.gguf")
    with open(base + ".inp", encoding="utf-8", newline="") as f:
        inputs = f.read().split("\n__ggml_vocab_test__\n")
    assert inputs[-1] == "", name
    inputs = inputs[:-1]
    with open(base + ".out", encoding="utf-8") as f:
        outputs = f.read().split("\n")
    return [(text, [int(x) for x in outputs[i].split()]) for i, text in enumerate(inputs)]


def gguf(shared):
    from transformers import AutoTokenizer

    for name in GGUF:
        directory = os.path.join(OUT, name)
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            tok = AutoTokenizer.from_pretrained(os.path.join(shared, "vocab"), gguf_file=f"ggml-vocab-{name}.gguf")
            tok.save_pretrained(tmp)
            compact_tokenizer_json(os.path.join(tmp, "tokenizer.json"), os.path.join(directory, "tokenizer.json"),
                                   name in STRING_MERGES)
            with open(os.path.join(tmp, "tokenizer_config.json"), encoding="utf-8") as f:
                config = json.load(f)
            for key in ("is_local", "local_files_only", "model_max_length", "added_tokens_decoder"):
                config.pop(key, None)
            dump_pretty(config, os.path.join(directory, "tokenizer_config.json"))
            if os.path.exists(os.path.join(tmp, "chat_template.jinja")):
                shutil.copy(os.path.join(tmp, "chat_template.jinja"), directory)
        raw = Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
        vectors, notes = [], []
        for text, expected in read_vectors(shared, name):
            python = encode(raw, text, False, False)
            vectors.append({"text": text, "expected": expected, "python": python})
            if python != expected:
                notes.append(f"llama.cpp vector {text!r}: llama.cpp {expected}, converted tokenizer.json {python}")
        write_goldens(name, f"tests/fixtures/tokenizers/{name}", extra={"vectors": vectors}, notes=notes)


# ---- (c) synthetic tokenizers ----


def train(model, pre, normalizer=None, vocab_size=700, text=BASE_TEXT, **trainer_args):
    tok = Tokenizer(model)
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False, **trainer_args)
    tok.train_from_iterator(text, trainer=trainer)
    return json.loads(tok.to_str())


def with_byte_tokens(data):
    vocab = data["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for b in range(256):
        name = f"<0x{b:02X}>"
        if name not in vocab:
            vocab[name] = next_id
            next_id += 1
    data["model"]["byte_fallback"] = True
    return data


def synthetic(name, base, normalizer=None, pre=None, decoder=None, post=None, added=(), special=(), model=None,
              config=None, merges_as_strings=False, flags=None):
    tok = Tokenizer.from_str(json.dumps(base))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoder
    tok.post_processor = post
    if special:
        tok.add_special_tokens(list(special))
    if added:
        tok.add_tokens(list(added))
    data = json.loads(tok.to_str())
    if model:
        data["model"].update(model)
    if merges_as_strings:
        data["model"]["merges"] = [f"{a} {b}" for a, b in data["model"]["merges"]]
    directory = os.path.join(OUT, name)
    # The trainer breaks some ties at random (syn-prefix-suffix): keep committed files unless
    # --retrain, so that regenerating the goldens does not change the tokenizers.
    if RETRAIN or not os.path.exists(os.path.join(directory, "tokenizer.json")):
        if os.path.exists(directory):
            shutil.rmtree(directory)
        os.makedirs(directory)
        dump(data, os.path.join(directory, "tokenizer.json"))
        if config is not None:
            dump_pretty(config, os.path.join(directory, "tokenizer_config.json"))
    directory = f"tests/fixtures/tokenizers/{name}"
    write_goldens(name, directory, extra={"flag_cases": flag_goldens(directory, *flags)} if flags else None)


def synthetics():
    byte_level = train(models.BPE(), pre_tokenizers.ByteLevel(add_prefix_space=False),
                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), vocab_size=900, text=TRAIN_TEXT)
    spm = with_byte_tokens(train(models.BPE(unk_token="<unk>", fuse_unk=True),
                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
                                 special_tokens=["<unk>", "<s>", "</s>"], vocab_size=700))
    prefixed = train(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##", end_of_word_suffix="</w>"),
                     pre_tokenizers.Whitespace(), normalizer=normalizers.Lowercase(), special_tokens=["[UNK]"],
                     continuing_subword_prefix="##", end_of_word_suffix="</w>", vocab_size=600)
    plain = train(models.BPE(unk_token="<unk>", fuse_unk=True), pre_tokenizers.WhitespaceSplit(),
                  special_tokens=["<unk>", "<s>", "</s>"], vocab_size=600)

    endoftext = AddedToken("<|endoftext|>", special=True, normalized=False)
    synthetic(
        "syn-gpt2", byte_level,
        pre=pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        decoder=decoders.ByteLevel(), post=processors.ByteLevel(trim_offsets=True),
        special=[endoftext],
        added=[AddedToken("<|tool|>", lstrip=True, rstrip=True, normalized=False, special=False)],
        merges_as_strings=True)
    synthetic(
        "syn-llama3", byte_level,
        pre=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        decoder=decoders.ByteLevel(),
        post=processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                          special_tokens=[("<|begin_of_text|>", 900)])]),
        special=[AddedToken("<|begin_of_text|>", special=True, normalized=False),
                 AddedToken("<|end_of_text|>", special=True, normalized=False),
                 AddedToken("<|eot_id|>", special=True, normalized=False)],
        model={"ignore_merges": True})
    synthetic(
        "syn-llama3-config", byte_level,
        pre=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        decoder=decoders.ByteLevel(),
        post=processors.TemplateProcessing(single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A $B:1",
                                           special_tokens=[("<|begin_of_text|>", 900)]),
        special=[AddedToken("<|begin_of_text|>", special=True, normalized=False),
                 AddedToken("<|end_of_text|>", special=True, normalized=False)],
        config={"add_eos_token": True, "bos_token": "<|begin_of_text|>",
                "eos_token": {"__type": "AddedToken", "content": "<|end_of_text|>", "lstrip": False, "normalized": False,
                              "rstrip": False, "single_word": False, "special": True},
                "chat_template": [{"name": "default", "template": "{{ bos_token }}{{ messages }}"},
                                  {"name": "tool_use", "template": "tools"}]})
    synthetic(
        "syn-qwen2", byte_level, normalizer=normalizers.NFC(),
        pre=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        decoder=decoders.ByteLevel(),
        special=[AddedToken("<|im_start|>", special=True, normalized=False),
                 AddedToken("<|im_end|>", special=True, normalized=False), endoftext],
        flags=(None, "<|im_end|>"),
        config={"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                "chat_template": "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"})
    synthetic(
        "syn-bytelevel-noregex", byte_level,
        pre=pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=False),
        decoder=decoders.ByteLevel(),
        added=[AddedToken("[MASK]", single_word=True, normalized=False)])
    synthetic(
        "syn-splits", byte_level,
        pre=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[\r\n]"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\s?\p{L}+"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"\p{N}{1,3}"), behavior="isolated"),
            pre_tokenizers.Split(Regex(r"[一-龥ࠀ-一가-퟿]+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]),
        decoder=decoders.ByteLevel())

    spm_special = [AddedToken("<unk>", special=True, normalized=False), AddedToken("<s>", special=True, normalized=False),
                   AddedToken("</s>", special=True, normalized=False)]
    llama_decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                       decoders.Strip(content=" ", left=1, right=0)])
    synthetic(
        "syn-spm-legacy", spm,
        normalizer=normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        decoder=llama_decoder,
        post=processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]),
        special=spm_special,
        added=[AddedToken("<|user|>", rstrip=True, normalized=False, special=False),
               AddedToken("hello", normalized=True, special=False)],
        config={"add_bos_token": True, "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>",
                "unk_token": "<unk>"})
    synthetic(
        "syn-spm-nofuse", spm,
        normalizer=normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
        decoder=llama_decoder, special=spm_special, model={"byte_fallback": False, "fuse_unk": False})
    synthetic(
        "syn-metaspace-first", spm, normalizer=normalizers.NFKC(),
        pre=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        decoder=decoders.Metaspace(replacement="▁", prepend_scheme="first"),
        post=processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]),
        special=spm_special,
        added=[AddedToken("[MASK]", single_word=True, lstrip=True, normalized=False, special=False)],
        config={"add_bos_token": False, "bos_token": "<s>", "eos_token": "</s>"}, flags=("<s>", "</s>"))
    # Which pieces count as starting at the text's start, after normalizers that insert or
    # remove leading characters (the Rust library tracks original offsets).
    synthetic(
        "syn-metaspace-first-normalized", spm,
        normalizer=normalizers.Sequence([normalizers.Prepend(" "), normalizers.Strip(left=True, right=False),
                                         normalizers.Replace("x", ""), normalizers.Replace("H", "h")]),
        pre=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True),
        decoder=decoders.Metaspace(replacement="▁", prepend_scheme="first"),
        special=spm_special)
    synthetic(
        "syn-metaspace-always", spm, normalizer=normalizers.Lowercase(),
        pre=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=False),
        decoder=decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="always"), decoders.ByteFallback()]),
        special=spm_special,
        added=[AddedToken("hello", normalized=True, special=False),
               AddedToken("<special-normalized>", normalized=True, special=True)])
    synthetic(
        "syn-metaspace-never", spm,
        normalizer=normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Strip()]),
        pre=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
        decoder=decoders.Sequence([decoders.Metaspace(replacement="▁", prepend_scheme="never"), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(content=" ", left=2, right=0)]),
        special=spm_special)
    synthetic(
        "syn-prefix-suffix", prefixed,
        normalizer=normalizers.Sequence([normalizers.NFKD(), normalizers.Lowercase(), normalizers.StripAccents()]),
        pre=pre_tokenizers.Whitespace(), decoder=decoders.BPEDecoder(suffix="</w>"),
        model={"fuse_unk": False})
    synthetic(
        "syn-split-removed", plain,
        normalizer=normalizers.Sequence([normalizers.Strip(left=True, right=False), normalizers.Replace(Regex(r" {2,}"), " ")]),
        pre=pre_tokenizers.Split(" ", behavior="removed"), decoder=decoders.Fuse(),
        special=[AddedToken("<s>", special=True, normalized=False), AddedToken("</s>", special=True, normalized=False)],
        post=processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)]))
    synthetic(
        "syn-split-prev", plain,
        pre=pre_tokenizers.Split(Regex(r"\p{P}"), behavior="merged_with_previous"),
        decoder=decoders.Replace(Regex(r"\s+"), " "))
    synthetic(
        "syn-split-next", plain,
        pre=pre_tokenizers.Split(Regex(r"\s+"), behavior="merged_with_next"),
        # A Strip with stop > 0 panics in the Rust library on an empty token: only here, where
        # every token is a non-empty vocabulary entry.
        decoder=decoders.Strip(content="!", left=0, right=1),
        model={"fuse_unk": False})
    synthetic(
        "syn-split-contiguous", plain, normalizer=normalizers.Lowercase(),
        pre=pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="contiguous"))
    synthetic(
        "syn-split-invert", plain,
        pre=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"\p{L}+|\p{N}+"), behavior="removed", invert=True),
            pre_tokenizers.Split(Regex(r"(?i:ab)|'s"), behavior="isolated", invert=True),
            pre_tokenizers.Split("o", behavior="merged_with_next", invert=True)]))
    synthetic(
        "syn-digits-punct", plain,
        normalizer=normalizers.Sequence([normalizers.Strip(), normalizers.Replace(Regex(r"\s+"), " "),
                                         normalizers.Lowercase()]),
        pre=pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(),
                                     pre_tokenizers.Digits(individual_digits=True)]),
        decoder=decoders.Sequence([decoders.Replace("e", "E"), decoders.Strip(content="a", left=1, right=0)]))
    synthetic(
        "syn-digits-contiguous", plain,
        pre=pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Punctuation(behavior="contiguous"),
                                     pre_tokenizers.Digits(individual_digits=False)]),
        decoder=decoders.Fuse(),
        added=[AddedToken("<|tool|>", lstrip=True, normalized=False), AddedToken("mask", single_word=True, rstrip=True)])


# ---- character classes, as the Rust library's own tables give them ----
#
# The Rust crates behind Punctuation (unicode_categories), StripAccents (unicode-normalization-
# alignments), Digits (char::is_numeric) and the Whitespace pre-tokenizer / single_word (the
# regex crate's \w) carry Unicode tables of different ages, none of them utf8proc's. Probing the
# library itself for every code point gives src/tokenizer/unicode_tables.inc.


def probe_unicode_tables():
    from tokenizers import normalizers as n, pre_tokenizers as p

    punct, digits, word = p.Punctuation(), p.Digits(individual_digits=True), p.Whitespace()
    strip = n.StripAccents()
    classes = {"kPunctuation": [], "kNumeric": [], "kMark": [], "kRustWord": []}
    for cp in range(0x110000):
        if 0xD800 <= cp < 0xE000:
            continue
        c = chr(cp)
        text = "a" + c + "a"
        if len(punct.pre_tokenize_str(text)) == 3:
            classes["kPunctuation"].append(cp)
        if len(digits.pre_tokenize_str(text)) == 3:
            classes["kNumeric"].append(cp)
        if strip.normalize_str("a" + c) == "a":
            classes["kMark"].append(cp)
        if [t for t, _ in word.pre_tokenize_str("\u3000" + c + "\u3000")] == [c] and \
                word.pre_tokenize_str("a" + c + "a")[0][0] == text:
            classes["kRustWord"].append(cp)
    lines = ["// Generated by scripts/make_tokenizer_goldens.py from the Rust tokenizers library itself",
             "// (probing every code point): inclusive ranges, sorted.", ""]
    for name, cps in classes.items():
        ranges = []
        for cp in cps:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        lines.append(f"static constexpr CodeRange {name}[] = {{")
        row = []
        for a, b in ranges:
            row.append(f"{{0x{a:X}, 0x{b:X}}}")
            if len(row) == 6:
                lines.append("    " + ", ".join(row) + ",")
                row = []
        if row:
            lines.append("    " + ", ".join(row) + ",")
        lines.append("};")
        lines.append("")
        print(f"{name}: {len(cps)} code points in {len(ranges)} ranges")
    with open(os.path.join(ROOT, "src", "tokenizer", "unicode_tables.inc"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


RETRAIN = False


def main():
    global RETRAIN
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared"))
    parser.add_argument("--retrain", action="store_true", help="rebuild the synthetic tokenizer.json files too")
    parser.add_argument("--unicode-tables", action="store_true",
                        help="also rewrite src/tokenizer/unicode_tables.inc (about a minute)")
    args = parser.parse_args()
    RETRAIN = args.retrain
    if args.unicode_tables:
        probe_unicode_tables()
    os.makedirs(OUT, exist_ok=True)
    dump_pretty(CORPUS, os.path.join(OUT, "corpus.json"))
    stories()
    synthetics()
    gguf(args.shared)


if __name__ == "__main__":
    sys.exit(main())
