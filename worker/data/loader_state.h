// Where the data loader stands, as saved in checkpoints: the next global sequence index and
// what is needed to check that a resumed run reads the same data in the same order.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "nlohmann/json_fwd.hpp"

namespace belay::data {

struct LoaderState {
  uint64_t next_sequence =
      0;              // global index of the next sequence to train on (owned by the trainer)
  uint64_t seed = 0;  // shuffle seed
  bool shuffle = true;
  uint64_t fingerprint = 0;  // DataLoader::fingerprint() of the data it was read from

  bool operator==(const LoaderState&) const = default;
};

// {"next_sequence": 1234, "seed": 7, "shuffle": true, "fingerprint": "0123456789abcdef"}:
// the fingerprint as 16 hex digits, the form checksums take in manifests.
nlohmann::json LoaderStateToJson(const LoaderState& state);

// Inverse of LoaderStateToJson. InvalidArgument naming the key for a missing or unknown key,
// a value of the wrong type, or a negative number.
absl::StatusOr<LoaderState> LoaderStateFromJson(const nlohmann::json& json);

}  // namespace belay::data
