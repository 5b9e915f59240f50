// LoaderState <-> JSON.
#include "worker/data/loader_state.h"

#include <string>

#include "common/checksum.h"
#include "common/strings.h"
#include "nlohmann/json.hpp"

namespace belay::data {

namespace {

absl::Status KeyError(const std::string& key, std::string_view what) {
  return absl::InvalidArgumentError(Cat("loader state: \"", key, "\": ", what));
}

absl::StatusOr<uint64_t> Unsigned(const nlohmann::json& v, const std::string& key) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) return KeyError(key, Cat(v.get<int64_t>(), " is negative"));
  return KeyError(key, Cat("expected an unsigned integer, got ", v.type_name()));
}

}  // namespace

nlohmann::json LoaderStateToJson(const LoaderState& state) {
  return nlohmann::json{{"next_sequence", state.next_sequence},
                        {"seed", state.seed},
                        {"shuffle", state.shuffle},
                        {"fingerprint", FormatXxh3(state.fingerprint)}};
}

absl::StatusOr<LoaderState> LoaderStateFromJson(const nlohmann::json& json) {
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        Cat("loader state: expected an object, got ", json.type_name()));
  }
  for (const auto& [key, value] : json.items()) {
    if (key != "next_sequence" && key != "seed" && key != "shuffle" && key != "fingerprint") {
      return KeyError(key, "unknown key");
    }
  }
  for (const char* key : {"next_sequence", "seed", "shuffle", "fingerprint"}) {
    if (!json.contains(key)) return KeyError(key, "missing");
  }
  LoaderState state;
  absl::StatusOr<uint64_t> next = Unsigned(json.at("next_sequence"), "next_sequence");
  if (!next.ok()) return next.status();
  state.next_sequence = *next;
  absl::StatusOr<uint64_t> seed = Unsigned(json.at("seed"), "seed");
  if (!seed.ok()) return seed.status();
  state.seed = *seed;
  const nlohmann::json& shuffle = json.at("shuffle");
  if (!shuffle.is_boolean()) {
    return KeyError("shuffle", Cat("expected a boolean, got ", shuffle.type_name()));
  }
  state.shuffle = shuffle.get<bool>();
  const nlohmann::json& fp = json.at("fingerprint");
  if (!fp.is_string()) {
    return KeyError("fingerprint", Cat("expected 16 hex digits, got ", fp.type_name()));
  }
  absl::StatusOr<uint64_t> sum = ParseXxh3(fp.get<std::string>());
  if (!sum.ok()) return KeyError("fingerprint", std::string(sum.status().message()));
  state.fingerprint = *sum;
  return state;
}

}  // namespace belay::data
