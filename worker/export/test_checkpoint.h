// Test support: a committed checkpoint step written the way the trainer writes one (shards of
// "param/", "adam.m/" and "adam.v/" ranges, a manifest with the shard map), for models the
// trainer does not train yet and for hand-made damage.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "common/ckpt/layout.h"
#include "common/ckpt/manifest.h"
#include "nlohmann/json.hpp"
#include "worker/ckpt/shard_file.h"
#include "worker/model/apertus.h"
#include "worker/model/architecture.h"
#include "worker/model/params.h"

namespace belay::hf::testing {

// Step `step` of `campaign` under `root`, committed: every tensor of `tensors` (views into
// `params`) split into `world` contiguous ranges, rank r holding the r-th; AdamW's moments
// stored alongside (zeros). `model` is the metadata's "model" object.
inline absl::Status WriteTestCheckpoint(const std::filesystem::path& root,
                                        const std::string& campaign, int64_t step,
                                        const nlohmann::json& model,
                                        const std::vector<model::TensorView>& tensors,
                                        const std::vector<float>& params, int world) {
  absl::StatusOr<std::filesystem::path> tmp = ckpt::BeginStep(root, campaign, step);
  if (!tmp.ok()) return tmp.status();
  int64_t largest = 0;
  for (const model::TensorView& t : tensors) largest = std::max(largest, t.size);
  const std::vector<float> zeros(static_cast<size_t>(largest), 0.0f);
  ckpt::Manifest manifest;
  manifest.campaign = campaign;
  manifest.step = step;
  manifest.world_size = world;
  ckpt::ShardMap map;
  for (int r = 0; r < world; ++r) {
    ckpt::ShardWriter w;
    for (const model::TensorView& t : tensors) {
      const uint64_t total = static_cast<uint64_t>(t.size);
      const uint64_t begin = total * static_cast<uint64_t>(r) / static_cast<uint64_t>(world);
      const uint64_t end = total * static_cast<uint64_t>(r + 1) / static_cast<uint64_t>(world);
      if (end == begin) continue;  // a shard map lists no empty range
      for (const char* prefix : {"param/", "adam.m/", "adam.v/"}) {
        const std::string name = prefix + t.name;
        const float* from =
            name.starts_with("param/") ? params.data() + t.offset + begin : zeros.data();
        if (absl::Status s = w.Add(name, begin, total, std::span<const float>(from, end - begin));
            !s.ok()) {
          return s;
        }
        map.Add(name, total, {r, begin, end - begin});
      }
    }
    w.SetMetadata(
        nlohmann::json{{"step", step}, {"world_size", world}, {"rank", r}, {"model", model}}
            .dump());
    absl::StatusOr<ckpt::ShardFileInfo> info = w.Write(*tmp / ckpt::ShardFileName(r));
    if (!info.ok()) return info.status();
    manifest.shards.push_back({r, ckpt::ShardFileName(r), info->bytes, info->xxh3});
  }
  manifest.shard_map = std::move(map);
  if (absl::Status s = ckpt::WriteManifest(*tmp, manifest); !s.ok()) return s;
  return ckpt::CommitStep(root, campaign, step);
}

}  // namespace belay::hf::testing
