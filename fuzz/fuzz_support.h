// What the libFuzzer harnesses share: a scratch directory of their own, writing an input to a
// file there, and checks that stop the run on a broken promise (libFuzzer saves the input).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

#include "common/strings.h"

namespace belay::fuzz {

// A directory of this process's own under $TMPDIR (created on first use, never removed: the
// fuzz script runs in a scratch directory it deletes).
const std::filesystem::path& ScratchDir();

// Replaces `path` with exactly `bytes`; aborts if it cannot (the harness, not the code under
// test, is then broken).
void WriteFile(const std::filesystem::path& path, std::span<const std::byte> bytes);

inline std::span<const std::byte> Bytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}
inline std::string_view Text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Prints "<what>" and aborts: for an outcome the code under test promises never to produce.
[[noreturn]] void Violated(std::string_view what);

}  // namespace belay::fuzz

// Aborts with the condition's text and `what` (anything belay::Cat takes) unless `cond`.
#define FUZZ_CHECK(cond, ...) \
  ((cond) ? void(0) : ::belay::fuzz::Violated(::belay::Cat(#cond, ": ", __VA_ARGS__)))
