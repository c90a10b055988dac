// Paths and file helpers for the tokenizer tests.
#pragma once
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

namespace lw::tok_test {

inline std::string source_path(const std::string& relative) { return std::string(LW_SOURCE_DIR) + "/" + relative; }
inline std::string fixtures() { return source_path("tests/fixtures/tokenizers"); }

inline std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

inline nlohmann::json load_json(const std::string& path) { return nlohmann::json::parse(read_file(path)); }

}  // namespace lw::tok_test
