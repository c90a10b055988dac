// gguf_tokenizer_json FILE.gguf OUT_DIR: writes OUT_DIR/tokenizer.json and
// OUT_DIR/tokenizer_config.json converted from the GGUF file's vocabulary (a developer tool:
// tests/gguf/check_vocab_with_tokenizers.py feeds them to Hugging Face tokenizers).
#include <cstdio>
#include <fstream>
#include <string>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf/gguf_tokenizer.h"

namespace {

void write(const std::string& path, const nlohmann::json& value) {
  std::ofstream out(path, std::ios::binary);
  out << value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
  if (!out) lw::fail(path, "cannot write");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s FILE.gguf OUT_DIR\n", argv[0]);
    return 2;
  }
  try {
    const lw::GgufFile file = lw::GgufFile::open(argv[1]);
    const std::string dir = argv[2];
    write(dir + "/tokenizer.json", lw::gguf_tokenizer_json(file));
    write(dir + "/tokenizer_config.json", lw::gguf_tokenizer_config(file));
  } catch (const lw::Error& e) {
    std::fprintf(stderr, "gguf_tokenizer_json: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
