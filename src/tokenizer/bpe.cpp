#include "tokenizer/bpe.h"

#include <algorithm>
#include <mutex>

#include "common/error.h"
#include "tokenizer/unicode.h"

namespace lw::tok {

void MergeMap::reserve(size_t n) {
  size_t cap = 16;
  while (cap < n * 2) cap <<= 1;
  keys_.assign(cap, kEmpty);
  values_.assign(cap, Value{0, 0});
  mask_ = cap - 1;
  size_ = 0;
}

void MergeMap::grow() {
  std::vector<uint64_t> keys = std::move(keys_);
  std::vector<Value> values = std::move(values_);
  reserve(std::max<size_t>(16, keys.size()));
  for (size_t i = 0; i < keys.size(); ++i)
    if (keys[i] != kEmpty) insert(int32_t(keys[i] >> 32), int32_t(uint32_t(keys[i])), values[i]);
}

void MergeMap::insert(int32_t a, int32_t b, Value v) {
  if (keys_.empty() || (size_ + 1) * 2 > keys_.size()) grow();
  uint64_t key = pack(a, b);
  size_t i = hash(key) & mask_;
  while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
  if (keys_[i] == kEmpty) ++size_;
  keys_[i] = key;
  values_[i] = v;
}

struct BpeModel::Cache {
  static constexpr size_t kMaxEntries = 1 << 16;
  static constexpr size_t kMaxWordBytes = 256;
  struct Entry {
    uint32_t offset, length;
  };
  std::mutex mutex;
  std::unordered_map<std::string, Entry, StringHash, std::equal_to<>> map;
  std::vector<int32_t> ids;
};

namespace {

const std::string* optional_string(const nlohmann::json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  if (!it->is_string()) fail(source, std::string("model.") + key + " must be a string or null");
  return it->get_ptr<const std::string*>();
}

bool optional_bool(const nlohmann::json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean()) fail(source, std::string("model.") + key + " must be a boolean");
  return it->get<bool>();
}

struct Symbol {
  int32_t id;
  int32_t prev, next;
  uint32_t len;  // 0: merged into its left neighbour
};

struct QueueEntry {
  uint32_t rank;
  uint32_t pos;
  int32_t id;
  // std heap functions build a max-heap: "less" means lower priority (higher rank, then later pos).
  bool operator<(const QueueEntry& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
};

}  // namespace

BpeModel::BpeModel(const nlohmann::json& model, const std::string& source) : cache_(std::make_unique<Cache>()) {
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() != 0.0)
      fail(source, "BPE dropout " + it->dump() + " is not supported (only null: dropout makes tokenization random)");
  }
  auto vocab = model.find("vocab");
  if (vocab == model.end() || !vocab->is_object()) fail(source, "BPE model has no \"vocab\" object");
  vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (auto& [token, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (int64_t{1} << 28))
      fail(source, "vocab entry \"" + token + "\" has an invalid id " + id.dump());
    auto value = id.get<int64_t>();
    vocab_[token] = static_cast<int32_t>(value);
    max_id = std::max(max_id, value);
  }
  max_id_ = static_cast<int32_t>(max_id);
  vocab_r_.reserve(vocab_.size());
  for (auto& [token, id] : vocab_) vocab_r_[id] = token;

  if (auto* s = optional_string(model, "unk_token", source)) unk_token_ = *s;
  if (auto* s = optional_string(model, "continuing_subword_prefix", source)) prefix_ = *s;
  if (auto* s = optional_string(model, "end_of_word_suffix", source)) suffix_ = *s;
  fuse_unk_ = optional_bool(model, "fuse_unk", source);
  byte_fallback_ = optional_bool(model, "byte_fallback", source);
  ignore_merges_ = optional_bool(model, "ignore_merges", source);

  single_char_.assign(0x10000, -1);
  for (auto& [token, id] : vocab_) {
    if (token.empty()) continue;
    size_t len = utf8_len(static_cast<unsigned char>(token[0]));
    if (len != token.size() || valid_utf8_prefix(token) != token.size()) continue;
    size_t l;
    char32_t cp = decode_utf8(token, 0, l);
    if (cp < 0x10000) single_char_[cp] = id;
  }
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    std::string name = "<0x";
    name += hex[b >> 4];
    name += hex[b & 15];
    name += '>';
    byte_ids_[b] = token_to_id(name).value_or(-1);
  }

  auto merges = model.find("merges");
  if (merges != model.end() && !merges->is_null()) {
    if (!merges->is_array()) fail(source, "BPE \"merges\" must be an array");
    merges_.reserve(merges->size());
    uint32_t rank = 0;
    std::string a, b;
    for (auto& merge : *merges) {
      if (merge.is_string()) {
        const auto& line = merge.get_ref<const std::string&>();
        size_t space = line.find(' ');
        if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
          fail(source, "merge " + std::to_string(rank + 1) + " \"" + line + "\" is not two tokens separated by a space");
        a.assign(line, 0, space);
        b.assign(line, space + 1);
      } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
        a = merge[0].get<std::string>();
        b = merge[1].get<std::string>();
      } else {
        fail(source, "merge " + std::to_string(rank + 1) + " is neither \"a b\" nor [\"a\", \"b\"]");
      }
      auto ia = token_to_id(a), ib = token_to_id(b);
      if (!ia) fail(source, "merge token \"" + a + "\" is not in the vocabulary");
      if (!ib) fail(source, "merge token \"" + b + "\" is not in the vocabulary");
      std::string merged = a;
      if (b.size() >= prefix_.size()) merged.append(b, prefix_.size());
      auto im = token_to_id(merged);
      if (!im) fail(source, "merged token \"" + merged + "\" is not in the vocabulary");
      merges_.insert(*ia, *ib, {rank, *im});
      ++rank;
    }
  }
}

BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

int32_t BpeModel::char_id(std::string_view ch, bool first, bool last, std::string& scratch) const {
  bool plain = (first || prefix_.empty()) && (!last || suffix_.empty());
  if (plain) {
    size_t l;
    char32_t cp = decode_utf8(ch, 0, l);
    if (cp < 0x10000) return single_char_[cp];
    return token_to_id(ch).value_or(-1);
  }
  scratch.clear();
  if (!first) scratch += prefix_;
  scratch += ch;
  if (last) scratch += suffix_;
  return token_to_id(scratch).value_or(-1);
}

void BpeModel::merge_word(std::string_view w, std::vector<int32_t>& out) const {
  thread_local std::vector<Symbol> symbols;
  thread_local std::vector<QueueEntry> queue;
  thread_local std::string scratch;
  symbols.clear();
  auto add = [&](int32_t id, uint32_t len) {
    auto n = static_cast<int32_t>(symbols.size());
    if (n > 0) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };
  int32_t unk_id = -1;
  uint32_t unk_len = 0;
  bool unk_pending = false;
  size_t i = 0;
  while (i < w.size()) {
    size_t len = utf8_len(static_cast<unsigned char>(w[i]));
    bool first = i == 0, last = i + len >= w.size();
    std::string_view ch = w.substr(i, len);
    i += len;
    int32_t id = char_id(ch, first, last, scratch);
    if (id >= 0) {
      if (unk_pending) {
        add(unk_id, unk_len);
        unk_pending = false;
      }
      add(id, static_cast<uint32_t>(len));
      continue;
    }
    if (byte_fallback_) {
      std::string_view full = ch;
      if ((!first && !prefix_.empty()) || (last && !suffix_.empty())) {
        scratch.clear();
        if (!first) scratch += prefix_;
        scratch += ch;
        if (last) scratch += suffix_;
        full = scratch;
      }
      bool all = true;
      for (char c : full) all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // As the Rust library: a pending unk is not flushed before the byte tokens.
        for (char c : full) add(byte_ids_[static_cast<unsigned char>(c)], 1);
        continue;
      }
    }
    if (unk_token_) {
      auto unk = token_to_id(*unk_token_);
      if (!unk) throw std::runtime_error("the unk token \"" + *unk_token_ + "\" is not in the vocabulary");
      if (unk_pending && fuse_unk_) {
        unk_len += static_cast<uint32_t>(len);
      } else {
        if (unk_pending) add(unk_id, unk_len);
        unk_id = *unk;
        unk_len = static_cast<uint32_t>(len);
        unk_pending = true;
      }
    }
  }
  if (unk_pending) add(unk_id, unk_len);

  if (symbols.size() > 1 && merges_.size() > 0) {
    queue.clear();
    for (size_t k = 0; k + 1 < symbols.size(); ++k)
      if (auto* m = merges_.find(symbols[k].id, symbols[k + 1].id))
        queue.push_back({m->rank, static_cast<uint32_t>(k), m->id});
    std::make_heap(queue.begin(), queue.end());
    while (!queue.empty()) {
      std::pop_heap(queue.begin(), queue.end());
      QueueEntry top = queue.back();
      queue.pop_back();
      Symbol& cur = symbols[top.pos];
      if (cur.len == 0 || cur.next == -1) continue;
      auto next_pos = static_cast<size_t>(cur.next);
      Symbol right = symbols[next_pos];
      auto* m = merges_.find(cur.id, right.id);
      if (!m || m->id != top.id) continue;
      cur.id = top.id;
      cur.len += right.len;
      cur.next = right.next;
      symbols[next_pos].len = 0;
      if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = static_cast<int32_t>(top.pos);
      if (cur.prev >= 0) {
        if (auto* pm = merges_.find(symbols[static_cast<size_t>(cur.prev)].id, cur.id)) {
          queue.push_back({pm->rank, static_cast<uint32_t>(cur.prev), pm->id});
          std::push_heap(queue.begin(), queue.end());
        }
      }
      if (cur.next >= 0) {
        if (auto* nm = merges_.find(cur.id, symbols[static_cast<size_t>(cur.next)].id)) {
          queue.push_back({nm->rank, top.pos, nm->id});
          std::push_heap(queue.begin(), queue.end());
        }
      }
    }
  }
  for (auto& s : symbols)
    if (s.len != 0) out.push_back(s.id);
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  bool cacheable = word.size() < Cache::kMaxWordBytes;
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    auto it = cache_->map.find(word);
    if (it != cache_->map.end()) {
      auto begin = cache_->ids.begin() + it->second.offset;
      out.insert(out.end(), begin, begin + it->second.length);
      return;
    }
  }
  size_t before = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard lock(cache_->mutex);
    if (cache_->map.size() >= Cache::kMaxEntries) {
      cache_->map.clear();
      cache_->ids.clear();
    }
    auto offset = static_cast<uint32_t>(cache_->ids.size());
    cache_->ids.insert(cache_->ids.end(), out.begin() + static_cast<std::ptrdiff_t>(before), out.end());
    cache_->map.emplace(std::string(word), Cache::Entry{offset, static_cast<uint32_t>(out.size() - before)});
  }
}

}  // namespace lw::tok
