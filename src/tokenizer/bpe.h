// The BPE model of the Hugging Face tokenizers schema (private to src/tokenizer).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace lw::tok {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

// Open-addressing map from a pair of ids to (rank, merged id).
class MergeMap {
 public:
  struct Value {
    uint32_t rank;
    int32_t id;
  };
  void reserve(size_t n);
  void insert(int32_t a, int32_t b, Value v);  // a later insert of the same pair wins
  const Value* find(int32_t a, int32_t b) const {
    if (keys_.empty()) return nullptr;
    uint64_t key = pack(a, b);
    size_t i = hash(key) & mask_;
    while (true) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }
  size_t size() const { return size_; }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  static uint64_t pack(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  static size_t hash(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return static_cast<size_t>(k);
  }
  void grow();
  std::vector<uint64_t> keys_;
  std::vector<Value> values_;
  size_t mask_ = 0, size_ = 0;
};

class BpeModel {
 public:
  // `model` is the "model" object of tokenizer.json; errors name `source`.
  BpeModel(const nlohmann::json& model, const std::string& source);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids of one pre-tokenized word. Throws std::runtime_error for a missing unk token.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const {
    auto it = vocab_.find(token);
    if (it == vocab_.end()) return std::nullopt;
    return it->second;
  }
  const std::string* id_to_token(int32_t id) const {
    auto it = vocab_r_.find(id);
    return it == vocab_r_.end() ? nullptr : &it->second;
  }
  int32_t max_id() const { return max_id_; }
  // The number of vocab entries, as the Rust library's get_vocab_size (not max_id() + 1: ids may
  // have gaps or repeat); added tokens are numbered from it.
  int32_t size() const { return static_cast<int32_t>(vocab_.size()); }

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
  int32_t char_id(std::string_view ch, bool first, bool last, std::string& scratch) const;

  StringMap vocab_;
  std::unordered_map<int32_t, std::string> vocab_r_;  // a map: one huge id must not cost memory
  int32_t max_id_ = -1;
  MergeMap merges_;
  std::vector<int32_t> single_char_;  // id of the one-character token for code points < 0x10000, -1 if none
  int32_t byte_ids_[256];             // id of "<0xXX>", -1 if none
  std::optional<std::string> unk_token_;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;

  // Word cache (as the Rust library's): word -> ids, bounded.
  struct Cache;
  std::unique_ptr<Cache> cache_;
};

}  // namespace lw::tok
