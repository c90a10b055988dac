#include <gtest/gtest.h>

#include "tok_helpers.h"
#include "tokenizer/tokenizer.h"

TEST(TokenizerSmoke, Stories) {
  auto tok = lw::Tokenizer::from_directory(lw::tok_test::source_path("models/stories260K"));
  auto ids = tok.encode("Hello world", true);
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 346, 306, 414, 263, 304, 341}));
  EXPECT_EQ(tok.decode(ids, true), "Hello world");
}
