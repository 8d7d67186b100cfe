// Byte sizes as people write them: "4GiB", "1.5G", "512M" in, "1.5 GiB" out.
#pragma once

#include <cstdint>
#include <string>

namespace lightserve {

// "4GiB", "1.5G", "512M", "1000000" → bytes (K/M/G decimal, Ki/Mi/Gi binary, optional B); −1
// when malformed.
int64_t parse_bytes(const std::string& text);

// 1536 → "1.5 KiB".
std::string human_bytes(double bytes);

}  // namespace lightserve
