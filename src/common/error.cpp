#include "common/error.h"

namespace lw {

void fail(const std::string& path, const std::string& problem) { throw Error(path + ": " + problem); }
void fail(const std::string& problem) { throw Error(problem); }

}  // namespace lw
