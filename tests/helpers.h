// Shared test helpers: paths into the repository, temporary directories, running the CLI.
#pragma once
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lw::test {

inline std::string source_path(const std::string& relative) { return std::string(LW_SOURCE_DIR) + "/" + relative; }
inline std::string fixture(const std::string& name) { return source_path("tests/fixtures/" + name); }
inline std::string stories_path() { return source_path("models/stories260K"); }

inline nlohmann::json load_json(const std::string& path) {
  std::ifstream file(path);
  return nlohmann::json::parse(file);
}

inline std::string read_file(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

// A fresh directory under the system temp folder, removed with everything in it afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "layerwise-test-XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline void copy_dir(const std::string& from, const std::string& to) {
  std::filesystem::copy(from, to, std::filesystem::copy_options::recursive);
  for (auto& entry : std::filesystem::recursive_directory_iterator(to))
    std::filesystem::permissions(entry.path(), std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
}

struct RunResult {
  int exit_code = -1;
  std::string out, err;
  long peak_rss_kib = 0;  // the child's own high-water mark, from wait4
};

// Runs a program with arguments (no shell), capturing stdout and stderr; stdin is `input`.
inline RunResult run(const std::vector<std::string>& argv, const std::string& input = "") {
  TempDir dir;
  const std::string in_path = dir / "in", out_path = dir / "out", err_path = dir / "err";
  std::ofstream(in_path, std::ios::binary) << input;
  pid_t pid = fork();
  if (pid == 0) {
    if (!freopen(in_path.c_str(), "r", stdin) || !freopen(out_path.c_str(), "w", stdout) || !freopen(err_path.c_str(), "w", stderr))
      _exit(127);
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  RunResult result;
  int status = 0;
  struct rusage usage {};
  wait4(pid, &status, 0, &usage);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  result.peak_rss_kib = usage.ru_maxrss;
  result.out = read_file(out_path);
  result.err = read_file(err_path);
  return result;
}

inline RunResult layerwise(std::vector<std::string> args, const std::string& input = "") {
  args.insert(args.begin(), LW_BINARY);
  return run(args, input);
}

// Goldens (tests/fixtures/goldens.json and alike): the prompts of one model's entry.
inline std::vector<std::vector<int>> golden_prompts(const nlohmann::json& golden) {
  return golden["prompts"].get<std::vector<std::vector<int>>>();
}

// Largest |ours - reference| where reference is a list of rows (positions) of logits and ours
// the same values flattened; a length mismatch fails the test.
inline double max_logit_difference(const std::vector<float>& ours, const nlohmann::json& reference) {
  double worst = 0;
  size_t i = 0;
  for (const auto& row : reference)
    for (const auto& value : row) {
      if (i >= ours.size()) return INFINITY;
      worst = std::max(worst, std::abs(static_cast<double>(ours[i++]) - value.get<double>()));
    }
  return i == ours.size() ? worst : INFINITY;
}

inline std::vector<int> parse_ids(const std::string& text) {
  std::vector<int> ids;
  std::istringstream in(text);
  int id;
  while (in >> id) ids.push_back(id);
  return ids;
}

}  // namespace lw::test
