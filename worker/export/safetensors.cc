// Writing safetensors files.
#include "worker/export/safetensors.h"

#include <bit>
#include <cstring>
#include <set>
#include <span>

#include "common/durable_file.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace belay::hf {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors files are little-endian and encoded with memcpy");

size_t ElementBytes(ExportDType dtype) { return dtype == ExportDType::kBf16 ? 2 : 4; }

absl::Status CheckTensors(const std::vector<NamedTensor>& tensors) {
  std::set<std::string_view> names;
  for (const NamedTensor& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__")
      return absl::InvalidArgumentError(Cat("tensor name '", t.name, "' is not allowed"));
    if (!names.insert(t.name).second)
      return absl::InvalidArgumentError(Cat("tensor ", t.name, " given twice"));
    int64_t elements = 1;
    for (int64_t d : t.shape) elements *= d;
    if (elements != static_cast<int64_t>(t.values.size())) {
      return absl::InvalidArgumentError(Cat("tensor ", t.name, ": shape holds ", elements,
                                            " elements, ", t.values.size(), " given"));
    }
  }
  return absl::OkStatus();
}

// The tensor's bytes in `dtype`.
std::vector<std::byte> Encode(const NamedTensor& t, ExportDType dtype) {
  std::vector<std::byte> out(t.values.size() * ElementBytes(dtype));
  if (dtype == ExportDType::kF32) {
    std::memcpy(out.data(), t.values.data(), out.size());
    return out;
  }
  for (size_t i = 0; i < t.values.size(); ++i) {
    const uint16_t b = Bf16RoundNearestEven(t.values[i]);
    std::memcpy(out.data() + 2 * i, &b, 2);
  }
  return out;
}

}  // namespace

std::string_view SafetensorsDTypeName(ExportDType dtype) {
  return dtype == ExportDType::kBf16 ? "BF16" : "F32";
}

uint16_t Bf16RoundNearestEven(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((bits >> 16) | 0x0040u);  // NaN: keep it one, quiet
  }
  // Adding 0x7fff, plus one when the kept part is odd, carries into bit 16 exactly when the
  // dropped half is above one half, or is one half and the kept part odd; a carry out of the
  // exponent's top makes the largest finite values round to infinity, as they should.
  const uint32_t rounded = bits + 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

absl::Status WriteSafetensors(const std::filesystem::path& path,
                              const std::vector<NamedTensor>& tensors, ExportDType dtype,
                              const std::map<std::string, std::string>& metadata) {
  if (absl::Status s = CheckTensors(tensors); !s.ok()) return s;
  // nlohmann's ordered_json keeps the tensors in file order in the header, which makes the
  // file easy to read by eye; readers do not depend on it.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t at = 0;
  for (const NamedTensor& t : tensors) {
    const uint64_t bytes = t.values.size() * ElementBytes(dtype);
    header[t.name] = {{"dtype", SafetensorsDTypeName(dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t length = text.size();

  absl::StatusOr<AtomicFile> file = AtomicFile::Create(path);
  if (!file.ok()) return file.status();
  absl::Status s = file->Append(std::as_bytes(std::span(&length, 1)));
  if (s.ok()) s = file->Append(text);
  for (size_t i = 0; i < tensors.size() && s.ok(); ++i) {
    s = file->Append(std::span<const std::byte>(Encode(tensors[i], dtype)));
  }
  if (s.ok()) s = file->Commit();
  return s;
}

}  // namespace belay::hf
