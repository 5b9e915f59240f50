// xxh3-64 checksums of buffers and files: what checkpoints and shards are verified with.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace belay {

uint64_t Xxh3(std::span<const std::byte> data);
uint64_t Xxh3(std::string_view data);

// Streams the file through xxh3-64. Errors name the file and what failed.
absl::StatusOr<uint64_t> Xxh3File(const std::filesystem::path& path);

// 16 lower-case hex digits, the form manifests store.
std::string FormatXxh3(uint64_t sum);
// Inverse of FormatXxh3; InvalidArgument for anything but 16 hex digits.
absl::StatusOr<uint64_t> ParseXxh3(std::string_view hex);

}  // namespace belay
