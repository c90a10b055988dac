// What the command line prints for damaged or mismatched weights: a split unit that changed
// since split, weights that give NaN, a config.json with fewer layers than the weights. Each is
// `layerwise: error: FILE: ...` with exit 1, and nothing on stdout computed from bad values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "format/safetensors.h"
#include "helpers.h"

namespace lw {
namespace {

void set_float(const std::string& path, const std::string& tensor_name, uint64_t element, float value) {
  const SafetensorsFile file = open_safetensors(path);
  const SafetensorsTensor* tensor = file.header.find(tensor_name);
  ASSERT_TRUE(tensor) << tensor_name;
  std::string bytes = test::read_file(path);
  std::memcpy(bytes.data() + file.data_offset + tensor->begin + 4 * element, &value, 4);
  test::write_file(path, bytes);
}

TEST(CliIntegrity, ASplitUnitChangedSinceSplitIsAnErrorNamingIt) {
  test::TempDir dir;
  const std::string split = dir / "split";
  auto result = test::layerwise({"split", "--model", test::stories_path(), "--out", split, "--quiet"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  set_float(split + "/layer-003.safetensors", "model.layers.3.self_attn.o_proj.weight", 7, 1e38f);
  for (const char* io : {"cached", "direct"}) {
    result = test::layerwise({"generate", "--model", split, "--prompt-ids", "1", "--max-new-tokens", "4", "--output-ids", "--quiet",
                              "--io", io});
    EXPECT_EQ(result.exit_code, 1) << io;
    EXPECT_EQ(result.out, "") << io;
    EXPECT_EQ(result.err.rfind("layerwise: error: " + split + "/layer-003.safetensors: checksum mismatch (manifest ", 0), 0u)
        << io << ": " << result.err;
  }
}

TEST(CliIntegrity, NanMetOnALaterStepKeepsTheSoundTokensAndSaysWhichStep) {
  // mha-f32 (untied head): the third greedy token's embedding row holds a NaN.
  const nlohmann::json golden = test::load_json(test::fixture("goldens.json"))["mha-f32"];
  const std::vector<int> prompt = test::golden_prompts(golden)[0];
  const std::vector<int> greedy = golden["greedy"][0].get<std::vector<int>>();
  test::TempDir dir;
  const std::string model = dir / "model";
  test::copy_dir(test::fixture("mha-f32"), model);
  const auto hidden = test::load_json(model + "/config.json")["hidden_size"].get<uint64_t>();
  set_float(model + "/model.safetensors", "model.embed_tokens.weight", static_cast<uint64_t>(greedy[2]) * hidden + 3, NAN);
  std::string ids;
  for (int id : prompt) {
    if (!ids.empty()) ids += ' ';  // not "" + std::to_string(...): GCC 12 warns falsely (-Wrestrict)
    ids += std::to_string(id);
  }
  const auto result = test::layerwise({"generate", "--model", model, "--prompt-ids", ids, "--max-new-tokens", "8", "--ignore-eos",
                                       "--output-ids", "--quiet"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_EQ(test::parse_ids(result.out), std::vector<int>(greedy.begin(), greedy.begin() + 3));
  EXPECT_EQ(result.err.rfind("layerwise: error: " + model + "/model.safetensors: the embedding rows of this sweep's tokens are NaN", 0), 0u)
      << result.err;
  EXPECT_NE(result.err.find("(while computing new token 4; the 3 before it are sound)"), std::string::npos) << result.err;
}

TEST(CliIntegrity, AConfigWithFewerLayersThanTheWeightsIsAnError) {
  test::TempDir dir;
  const std::string model = dir / "model";
  test::copy_dir(test::stories_path(), model);
  nlohmann::json config = test::load_json(model + "/config.json");
  config["num_hidden_layers"] = 3;
  test::write_file(model + "/config.json", config.dump(2));
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"generate", "--model", model, "--prompt-ids", "1", "--max-new-tokens", "4"},
        std::vector<std::string>{"split", "--model", model, "--out", dir / "split", "--quiet"}}) {
    const auto result = test::layerwise(args);
    EXPECT_EQ(result.exit_code, 1) << args[0];
    EXPECT_EQ(result.out, "") << args[0];
    EXPECT_EQ(result.err.rfind("layerwise: error: " + model + "/model.safetensors: 18 tensors the configuration does not use: "
                               "model.layers.3.* model.layers.4.* (" + model + "/config.json says num_hidden_layers 3;", 0), 0u)
        << args[0] << ": " << result.err;
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "split/manifest.json"));
}

}  // namespace
}  // namespace lw
