// A GGUF file's vocabulary as a Hugging Face tokenizer: the tokenizer.json schema (what
// lw::Tokenizer::from_json consumes) and the tokenizer_config.json entries it goes with.
//
// Follows transformers' GGUF -> fast tokenizer conversion (integrations/gguf/
// gguf_tokenizer_mapping.py, transformers 5.24) with the pre-tokenizer chosen from
// tokenizer.ggml.pre as llama.cpp chooses its regexes (llama-vocab.cpp). Where the two disagree,
// llama.cpp's tokenizer test vectors (made with Hugging Face tokenizers from the models' own
// tokenizer.json) decide; the differences from transformers are:
//   - `llama` (SentencePiece) vocabularies get the normalizer Prepend("▁") + Replace(" ", "▁")
//     and no pre-tokenizer, as the models' own tokenizer.json (transformers uses Metaspace for
//     all but phi3, which gives "▁" for " " where Llama gives "▁▁");
//   - byte-level (`gpt2`) pre-tokenizers follow tokenizer.ggml.pre for every family listed in
//     the .cpp (starcoder/refact digits, falcon punctuation and 3-digit groups, deepseek splits
//     ...), not only the few transformers knows;
//   - tokens the file marks CONTROL or USER_DEFINED keep their spelling and are added tokens
//     with their own ids (transformers respells them into the byte alphabet, which turns MPT's
//     runs of spaces into duplicates of other tokens and gives DeepSeek's BOS a new id past the
//     vocabulary);
//   - the unknown token of a SentencePiece vocabulary is kept in the model.
// Supported tokenizer.ggml.model values: "llama", "gpt2", "gemma4"; others ("bert", "t5", ...)
// and unknown pre-tokenizer names are refused with an lw::Error naming the file.
#pragma once
#include <nlohmann/json.hpp>

#include "gguf/gguf.h"

namespace lw {

// tokenizer.json: {"version", "truncation", "padding", "added_tokens", "normalizer",
// "pre_tokenizer", "post_processor", "decoder", "model"}.
nlohmann::json gguf_tokenizer_json(const GgufFile& file);

// tokenizer_config.json entries: bos_token, eos_token, unk_token, pad_token (token strings or
// null), add_bos_token, add_eos_token (booleans), chat_template (when the file has one).
nlohmann::json gguf_tokenizer_config(const GgufFile& file);

}  // namespace lw
