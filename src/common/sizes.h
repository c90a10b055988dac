// Byte sizes as people write them: "4GiB", "300MiB", "1.5G", "65536".
#pragma once
#include <cstdint>
#include <string>

namespace lw {

// Throws lw::Error on anything that is not a positive size.
uint64_t parse_size(const std::string& text);
// "1.50 GiB", "300.0 MiB", "512 B"
std::string format_size(uint64_t bytes);

}  // namespace lw
