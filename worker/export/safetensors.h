// The safetensors file format (Hugging Face's): an 8-byte little-endian header length, a
// JSON header naming each tensor's dtype, shape and byte range, then the tensors' bytes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace belay::hf {

// The element types an export writes.
enum class ExportDType { kBf16, kF32 };

// "BF16" or "F32", as the header spells them.
std::string_view SafetensorsDTypeName(ExportDType dtype);

// The bfloat16 nearest to `value`, ties to even (the upper 16 bits of the rounded binary32);
// infinities stay infinite, a NaN stays a (quiet) NaN of the same sign.
uint16_t Bf16RoundNearestEven(float value);

// One tensor of a file: its name, shape (empty: a scalar) and values, row-major.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// Writes `tensors` to `path` atomically (temporary file, fsync, rename) in `dtype`, in the
// order given, with no gaps between them; `metadata` becomes the header's "__metadata__"
// (string to string). The header is padded with spaces so that the data starts 8-byte
// aligned. InvalidArgument for an empty or repeated name or a shape that does not match the
// values; I/O errors name the file.
absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<NamedTensor>& tensors, ExportDType dtype,
                              const std::map<std::string, std::string>& metadata);

}  // namespace belay::hf
