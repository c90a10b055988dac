// The read pipeline and streaming under every budget: reads deliver the file's bytes through
// and around the page cache, with and without io_uring; a file that shrinks or changes during
// a run stops it with a message naming the file; every budget from "all resident" to "one layer
// at a time", reading either way, gives the same logits and ids and plans within the budget.
#include <gtest/gtest.h>

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>

#include "checkpoint/split.h"
#include "common/error.h"
#include "common/system.h"
#include "format/manifest.h"
#include "io/read_pipeline.h"
#include "runtime/engine.h"
#include "runtime/generate.h"
#include "helpers.h"

namespace lw {
namespace {

std::string random_bytes(size_t size, uint32_t seed) {
  std::mt19937 random(seed);
  std::string bytes(size, '\0');
  for (char& c : bytes) c = static_cast<char>(random());
  return bytes;
}

// Moves a file's modification time, as a rewrite would.
void touch(const std::string& path, int seconds_later) {
  struct stat info {};
  ASSERT_EQ(stat(path.c_str(), &info), 0);
  const auto when = std::filesystem::last_write_time(path) + std::chrono::seconds(seconds_later);
  std::filesystem::last_write_time(path, when);
}

void expect_error(const std::function<void()>& action, const std::vector<std::string>& needles) {
  try {
    action();
    ADD_FAILURE() << "no error";
  } catch (const Error& error) {
    for (const auto& needle : needles) EXPECT_NE(std::string(error.what()).find(needle), std::string::npos) << error.what();
  }
}

struct PipelineCase {
  bool direct, io_uring;
};

class Pipeline : public ::testing::TestWithParam<PipelineCase> {};

TEST_P(Pipeline, DeliversTheFilesBytesForEveryRange) {
  test::TempDir dir;
  // Sizes not a multiple of a page; the second file ends mid-page.
  const std::string first = random_bytes((5u << 20) + 1234, 1), second = random_bytes(300000 + 7, 2);
  test::write_file(dir / "a", first);
  test::write_file(dir / "b", second);
  ReadPipeline pipeline({dir / "a", dir / "b"}, GetParam().direct, GetParam().io_uring);
  if (!GetParam().io_uring) {
    EXPECT_STREQ(pipeline.method(), "pread");
  }
  RecordProperty("method", pipeline.method());  // io_uring, or pread where the kernel refuses io_uring
  if (GetParam().direct && !pipeline.direct()) {
    EXPECT_FALSE(pipeline.direct_refusal().empty());  // this filesystem refuses O_DIRECT: said, and reads still right
  }
  const bool direct = pipeline.direct();
  struct Want {
    int file;
    uint64_t offset, bytes;
  };
  // Page-aligned for direct reads; odd offsets and lengths otherwise. Several chunks, one byte,
  // a range ending at the end of a file that ends mid-page.
  const std::vector<Want> wants =
      direct ? std::vector<Want>{{0, 0, 3u << 20}, {0, 4096 * 7, 4096}, {1, 0, second.size()}, {0, 4u << 20, first.size() - (4u << 20)}}
             : std::vector<Want>{{0, 13, 3u << 20}, {0, 99999, 1}, {1, 5, second.size() - 5}, {0, first.size() - 1000, 1000}};
  std::vector<MappedBuffer> buffers;
  std::vector<ReadRange> ranges;
  for (const Want& want : wants) {
    const uint64_t rounded = (want.bytes + kDirectAlignment - 1) / kDirectAlignment * kDirectAlignment;
    buffers.emplace_back(rounded);
    ranges.push_back({want.file, want.offset, direct ? rounded : want.bytes, want.bytes, buffers.back().data(), direct});
  }
  uint64_t wanted = 0;
  for (const Want& want : wants) wanted += want.bytes;
  EXPECT_GE(pipeline.read(ranges), wanted);
  for (size_t i = 0; i < wants.size(); i++) {
    const std::string& source = wants[i].file == 0 ? first : second;
    EXPECT_EQ(std::string(buffers[i].data(), wants[i].bytes), source.substr(wants[i].offset, wants[i].bytes)) << "range " << i;
  }
}

TEST_P(Pipeline, AFileThatShrankOrChangedIsAnErrorNamingIt) {
  test::TempDir dir;
  const std::string path = dir / "weights";
  test::write_file(path, random_bytes(1u << 20, 3));
  ReadPipeline pipeline({path}, GetParam().direct, GetParam().io_uring);
  MappedBuffer buffer(1u << 20);
  const ReadRange whole{0, 0, 1u << 20, 1u << 20, buffer.data(), pipeline.direct()};
  pipeline.read({whole});

  std::filesystem::resize_file(path, 600000);
  expect_error([&] { pipeline.read({whole}); }, {path, "changed size during the run (1048576 -> 600000 bytes)"});

  // Opened after the change: the sizes agree, but the weights reach past the end.
  ReadPipeline reopened({path}, GetParam().direct, GetParam().io_uring);
  const ReadRange past_end{0, 0, 1u << 20, 1u << 20, buffer.data(), reopened.direct()};
  expect_error([&] { reopened.read({past_end}); }, {path, "ends at byte 600000 but the weights reach byte 1048576"});

  touch(path, 5);
  const ReadRange head{0, 0, 4096, 4096, buffer.data(), reopened.direct()};
  expect_error([&] { reopened.read({head}); }, {path, "was modified during the run"});
}

TEST_P(Pipeline, AReadTheKernelRefusesIsAnErrorNamingTheFile) {
  // A directory opens, but reading it fails (EISDIR): the path every I/O error takes.
  test::TempDir dir;
  const std::string path = dir / "not-a-file";
  std::filesystem::create_directory(path);
  ReadPipeline pipeline({path}, GetParam().direct, GetParam().io_uring);
  MappedBuffer buffer(4096);
  expect_error([&] { pipeline.read({{0, 0, 4096, 4096, buffer.data(), pipeline.direct()}}); },
               {path, "read failed at byte 0: Is a directory"});
}

INSTANTIATE_TEST_SUITE_P(Modes, Pipeline,
                         ::testing::Values(PipelineCase{false, true}, PipelineCase{true, true}, PipelineCase{false, false},
                                           PipelineCase{true, false}),
                         [](const auto& param_info) {
                           return std::string(param_info.param.direct ? "Direct" : "Cached") + (param_info.param.io_uring ? "IoUring" : "Pread");
                         });

// Engines that budget only what they allocate, so that budgets are exact.
EngineOptions budgeted(uint64_t budget, IoMode io) {
  EngineOptions options{budget, 2, true, false};
  options.io_mode = io;
  return options;
}

TEST(Streaming, EveryBudgetFromAllResidentToOneLayerGivesTheSameResults) {
  const std::string model = test::fixture("gqa-tied-llama3-f32");
  const std::vector<std::vector<int>> prompts = {{1, 5, 9, 100, 31}, {1, 77}};
  const RunShape shape{2, 5 + 8, 7, false};
  Engine probe(model, budgeted(1ull << 30, IoMode::Cached));
  const std::vector<uint64_t> units = probe.unit_memory_bytes();
  const MemoryPlan least = probe.plan(shape);
  GenerateOptions options;
  options.stop_at_eos = false;
  options.max_new_tokens = 8;
  const auto expected_ids = generate(probe, prompts, options);
  const auto expected_logits = prompt_logits(probe, prompts);

  // From the least budget up, a layer's worth more each time, until everything is resident.
  const uint64_t step = *std::max_element(units.begin(), units.end());
  int previous_resident = -1, budgets = 0;
  for (uint64_t budget = least.minimum_budget;; budget += step) {
    ASSERT_LT(budgets++, 40) << "the budgets never reached all resident";
    bool all_resident = false;
    for (IoMode io : {IoMode::Cached, IoMode::Direct}) {
      Engine engine(model, budgeted(budget, io));
      const MemoryPlan plan = engine.plan(shape);
      EXPECT_LE(plan.total_bytes(), budget);
      EXPECT_EQ(plan.direct_io, io == IoMode::Direct);
      EXPECT_GE(plan.resident_units(), previous_resident);
      previous_resident = plan.resident_units();
      all_resident = !plan.streams();
      EXPECT_EQ(generate(engine, prompts, options), expected_ids) << "budget " << budget << ", " << io_mode_name(io);
      EXPECT_EQ(prompt_logits(engine, prompts), expected_logits) << "budget " << budget << ", " << io_mode_name(io);
    }
    if (all_resident) break;
  }
  EXPECT_GE(budgets, 4) << "too few budgets between one layer at a time and all resident";
}

// A copy of stories260K streamed one layer at a time, whose file is damaged after a sweep.
void expect_run_stops_when(const std::function<void(const std::string&)>& damage, const std::string& says, IoMode io) {
  test::TempDir dir;
  const std::string model = dir / "model";
  test::copy_dir(test::stories_path(), model);
  Engine probe(model, budgeted(1ull << 30, io));
  const RunShape shape{1, 8, 1, false};
  Engine engine(model, budgeted(probe.plan(shape).minimum_budget, io));
  engine.begin(shape);
  ASSERT_FALSE(engine.active_plan().resident[1]) << "the run should stream";
  std::vector<float> logits(static_cast<size_t>(engine.config().vocab_size));
  engine.forward({{1, 0, 0}}, {0}, logits.data());
  damage(model + "/model.safetensors");
  expect_error(
      [&] {
        for (int position = 1; position < 8; position++) engine.forward({{1, 0, position}}, {0}, logits.data());
      },
      {model + "/model.safetensors", says});
}

TEST(Streaming, AFileThatShrinksDuringARunStopsIt) {
  for (IoMode io : {IoMode::Cached, IoMode::Direct})
    expect_run_stops_when([](const std::string& path) { std::filesystem::resize_file(path, 300000); }, "changed size during the run", io);
}

TEST(Streaming, AFileRewrittenDuringARunStopsIt) {
  for (IoMode io : {IoMode::Cached, IoMode::Direct})
    expect_run_stops_when([](const std::string& path) { touch(path, 7); }, "was modified during the run", io);
}

// Overwrites `count` float32 values at byte `offset` of a file with `value`, keeping its size.
void overwrite_floats(const std::string& path, uint64_t offset, int count, float value) {
  std::string bytes = test::read_file(path);
  ASSERT_LE(offset + 4 * static_cast<uint64_t>(count), bytes.size());
  for (int i = 0; i < count; i++) std::memcpy(bytes.data() + offset + 4 * static_cast<uint64_t>(i), &value, 4);
  test::write_file(path, bytes);
}

uint64_t manifest_xxh3(const std::string& split, const std::string& file) {
  const nlohmann::json manifest = test::load_json(split + "/manifest.json");
  for (const auto& unit : manifest["units"])
    if (unit["file"] == file) return std::stoull(unit["xxh3"].get<std::string>(), nullptr, 16);
  ADD_FAILURE() << file << " is not in the manifest";
  return 0;
}

TEST(Streaming, ASplitUnitThatChangedSinceSplitStopsTheRunNamingIt) {
  test::TempDir dir;
  const std::string split = dir / "split";
  split_checkpoint({test::stories_path(), split, std::nullopt, true});
  const RunShape shape{1, 6, 1, false};
  const uint64_t least = Engine(split, budgeted(1ull << 30, IoMode::Cached)).plan(shape).minimum_budget;
  GenerateOptions options;
  options.stop_at_eos = false;
  options.max_new_tokens = 5;
  uint64_t split_bytes = 0;
  const nlohmann::json manifest = test::load_json(split + "/manifest.json");
  for (const auto& unit : manifest["units"]) split_bytes += unit["bytes"].get<uint64_t>();
  // Intact: every file hashed exactly once however many sweeps re-read it (first read only).
  for (IoMode io : {IoMode::Cached, IoMode::Direct})
    for (uint64_t budget : {least, uint64_t{1} << 30}) {
      Engine engine(split, budgeted(budget, io));
      generate(engine, {{1}}, options);
      EXPECT_EQ(engine.stats().stream.bytes_verified, split_bytes) << io_mode_name(io) << " " << budget;
      EXPECT_EQ(engine.stats().stream.loads_per_unit[3] >= 5, budget == least) << "layer 2 re-read every sweep only when streamed";
    }

  // 500 weights of layer 2 overwritten with 1e38 (what corruption or a stray write leaves),
  // and one bit of the embedding table, which is only ever read row by row.
  const std::string layer = split + "/layer-002.safetensors";
  const uint64_t layer_sum = manifest_xxh3(split, "layer-002.safetensors");
  overwrite_floats(layer, 4096 + 2000, 500, 1e38f);
  for (IoMode io : {IoMode::Cached, IoMode::Direct})
    for (uint64_t budget : {least, uint64_t{1} << 30}) {
      SCOPED_TRACE(std::string(io_mode_name(io)) + " " + std::to_string(budget));
      Engine engine(split, budgeted(budget, io));
      expect_error([&] { generate(engine, {{1}}, options); },
                   {layer + ": checksum mismatch (manifest " + format_xxh3(layer_sum) + ", read ", "the file changed since split"});
    }
  // The opt-out hashes nothing; these values overflow, so the non-finite check still stops it.
  setenv("LAYERWISE_NO_CHECKSUMS", "1", 1);
  {
    Engine engine(split, budgeted(1ull << 30, IoMode::Cached));
    expect_error([&] { generate(engine, {{1}}, options); }, {layer + ": layer 2 (model.layers.2.*) gives NaN or infinite hidden states"});
    EXPECT_EQ(engine.stats().stream.bytes_verified, 0u);
  }
  unsetenv("LAYERWISE_NO_CHECKSUMS");

  const std::string other_split = dir / "other", embed = other_split + "/embed.safetensors";
  split_checkpoint({test::stories_path(), other_split, std::nullopt, true});
  const uint64_t embed_sum = manifest_xxh3(other_split, "embed.safetensors");
  std::string bytes = test::read_file(embed);
  bytes[bytes.size() - 10] ^= 1;
  test::write_file(embed, bytes);
  Engine engine(other_split, budgeted(1ull << 30, IoMode::Cached));
  int tokens = 0;
  expect_error([&] { generate(engine, {{1}}, options, [&](int, int) { tokens++; }); },
               {embed + ": checksum mismatch (manifest " + format_xxh3(embed_sum) + ", read "});
  EXPECT_EQ(tokens, 0) << "a token was sampled before the check";
}

TEST(Streaming, AutoReadsAroundTheCacheOnlyWhenTheWeightsCannotStayCached) {
  Engine engine(test::stories_path(), budgeted(64ull << 20, IoMode::Auto));
  const MemoryPlan plan = engine.plan({1, 8, 1, false});
  // About 1 MiB of weights: they stay cached on any machine that runs the tests.
  EXPECT_FALSE(plan.direct_io) << plan.io_reason;
  EXPECT_NE(plan.io_reason.find("fit in the page cache"), std::string::npos) << plan.io_reason;
  PlanRequest request;
  request.budget_bytes = 64ull << 20;
  request.sequences = 1;
  request.context_tokens = 8;
  request.prompt_tokens = 1;
  request.cache_room_bytes = 100000;  // a machine with less free memory than the weights
  const MemoryPlan tight = plan_memory(engine.config(), engine.unit_memory_bytes(), request);
  EXPECT_TRUE(tight.direct_io);
  EXPECT_NE(tight.io_reason.find("cannot stay in the page cache"), std::string::npos) << tight.io_reason;
}

TEST(Streaming, PredictedSweepIsTheLongerOfReadingAndComputing) {
  MemoryPlan plan;
  plan.resident = {false, true, false, false};
  plan.stream_slots = 2;
  plan.streamed_bytes_per_sweep = 2'000'000'000;
  plan.weight_bytes = 3'000'000'000;
  const SweepPrediction io_bound = predict_decode_sweep(plan, {1e9, 10e9});
  EXPECT_DOUBLE_EQ(io_bound.read_seconds, 2.0);
  EXPECT_DOUBLE_EQ(io_bound.compute_seconds, 0.3);
  EXPECT_DOUBLE_EQ(io_bound.sweep_seconds, 2.0);
  EXPECT_TRUE(io_bound.io_bound());
  plan.stream_slots = 1;  // no read-ahead: one after the other
  EXPECT_DOUBLE_EQ(predict_decode_sweep(plan, {1e9, 10e9}).sweep_seconds, 2.3);
}

TEST(Streaming, MeasuredSpeedsArePositive) {
  Engine engine(test::stories_path(), budgeted(64ull << 20, IoMode::Cached));
  const MeasuredSpeeds speeds = engine.measure_speeds(engine.plan({1, 8, 1, false}));
  EXPECT_GT(speeds.read_bytes_per_second, 1e6);
  EXPECT_GT(speeds.compute_bytes_per_second, 1e6);
}

}  // namespace
}  // namespace lw
