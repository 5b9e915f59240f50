// DataLoader: glob expansion, the epoch's shard and sequence permutations, and their cache.
#include "worker/data/loader.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <numeric>

#include "common/checksum.h"
#include "common/strings.h"
#include "worker/data/shuffle.h"

namespace belay::data {

namespace fs = std::filesystem;

namespace {

// Permutations kept per kind. A trainer reads from one shard at a time, plus the next one
// (or the next epoch's first) while ranks straddle a boundary; a few entries cover that.
constexpr size_t kCachedOrders = 2;
constexpr size_t kCachedPermutations = 4;

// Random stream 0 of an epoch orders its shards; stream 1 + i orders shard i's sequences.
constexpr uint64_t kShardOrderStream = 0;

absl::StatusOr<std::vector<std::string>> ExpandGlobs(const std::vector<std::string>& patterns) {
  if (patterns.empty()) return absl::InvalidArgumentError("no shard glob given");
  std::vector<std::string> paths;
  for (const std::string& pattern : patterns) {
    if (!fs::path(pattern).is_absolute()) {
      return absl::InvalidArgumentError(Cat("shard glob \"", pattern, "\" is not absolute"));
    }
    glob_t g{};
    int rc = ::glob(pattern.c_str(), GLOB_ERR, nullptr, &g);
    if (rc == 0) {
      for (size_t i = 0; i < g.gl_pathc; ++i) paths.emplace_back(g.gl_pathv[i]);
    }
    globfree(&g);
    if (rc == GLOB_NOMATCH) {
      return absl::NotFoundError(Cat("shard glob \"", pattern, "\" matches no file"));
    }
    if (rc != 0) {
      return absl::UnavailableError(
          Cat("shard glob \"", pattern, "\": cannot read a directory on its path"));
    }
  }
  std::sort(paths.begin(), paths.end());
  paths.erase(std::unique(paths.begin(), paths.end()), paths.end());
  return paths;
}

void AppendU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// Moves the entry for `key` to the front and returns it, or null.
template <typename V>
std::shared_ptr<const V> Find(
    std::vector<std::pair<std::pair<uint64_t, uint32_t>, std::shared_ptr<const V>>>& entries,
    std::pair<uint64_t, uint32_t> key) {
  auto it =
      std::find_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == key; });
  if (it == entries.end()) return nullptr;
  std::rotate(entries.begin(), it, it + 1);
  return entries.front().second;
}

template <typename V>
void Insert(
    std::vector<std::pair<std::pair<uint64_t, uint32_t>, std::shared_ptr<const V>>>& entries,
    std::pair<uint64_t, uint32_t> key, std::shared_ptr<const V> value, size_t capacity) {
  if (Find(entries, key) != nullptr) return;  // another thread got there first
  entries.insert(entries.begin(), {key, std::move(value)});
  if (entries.size() > capacity) entries.pop_back();
}

}  // namespace

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Open(const DataLoaderOptions& options) {
  if (options.seq_len < 1) {
    return absl::InvalidArgumentError(Cat("sequence length ", options.seq_len, " is below 1"));
  }
  absl::StatusOr<std::vector<std::string>> paths = ExpandGlobs(options.globs);
  if (!paths.ok()) return paths.status();
  if (options.format == ShardFormat::kMegatron) {
    // A pattern such as "data/*" matches each dataset's index too; its .bin names the dataset.
    std::erase_if(*paths, [](const std::string& p) { return fs::path(p).extension() == ".idx"; });
    if (paths->empty()) {
      return absl::NotFoundError(
          "the shard globs match only .idx files: name the Megatron datasets' .bin files");
    }
  }
  std::vector<TokenShard> shards;
  shards.reserve(paths->size());
  for (const std::string& path : *paths) {
    absl::StatusOr<TokenShard> shard = TokenShard::Open(path, options.vocab_size, options.format);
    if (!shard.ok()) return shard.status();
    if ((shard->num_tokens() - 1) / options.seq_len < 1) {
      return absl::InvalidArgumentError(
          Cat(path, ": ", shard->num_tokens(),
              " tokens hold no sequence of T + 1 = ", options.seq_len + 1, " tokens"));
    }
    shards.push_back(*std::move(shard));
  }
  return std::unique_ptr<DataLoader>(new DataLoader(options, std::move(shards)));
}

DataLoader::DataLoader(DataLoaderOptions options, std::vector<TokenShard> shards)
    : options_(std::move(options)), shards_(std::move(shards)) {
  std::string identity;
  for (const TokenShard& shard : shards_) {
    int64_t n = (shard.num_tokens() - 1) / options_.seq_len;
    sequences_in_shard_.push_back(n);
    sequences_per_epoch_ += static_cast<uint64_t>(n);
    identity += shard.path().filename().string();
    identity.push_back('\0');
    AppendU64(&identity, static_cast<uint64_t>(shard.num_tokens()));
  }
  AppendU64(&identity, static_cast<uint64_t>(options_.seq_len));
  fingerprint_ = Xxh3(std::string_view(identity));
  natural_order_ = std::make_shared<const ShardOrder>(MakeShardOrder(0));
}

int64_t DataLoader::sequences_in_shard(size_t shard) const { return sequences_in_shard_.at(shard); }

DataLoader::ShardOrder DataLoader::MakeShardOrder(uint64_t epoch) const {
  ShardOrder order;
  if (options_.shuffle) {
    order.shards = RandomPermutation(static_cast<uint32_t>(shards_.size()),
                                     DeriveSeed(options_.seed, epoch, kShardOrderStream));
  } else {
    order.shards.resize(shards_.size());
    std::iota(order.shards.begin(), order.shards.end(), uint32_t{0});
  }
  uint64_t end = 0;
  for (uint32_t s : order.shards) {
    end += static_cast<uint64_t>(sequences_in_shard_[s]);
    order.ends.push_back(end);
  }
  return order;
}

std::shared_ptr<const DataLoader::ShardOrder> DataLoader::OrderOf(uint64_t epoch) const {
  if (!options_.shuffle) return natural_order_;
  const CacheKey key{epoch, 0};
  {
    MutexLock lock(&mu_);
    if (auto hit = Find(orders_, key)) return hit;
  }
  // Computed outside the lock; two threads missing at once both compute the same value.
  auto order = std::make_shared<const ShardOrder>(MakeShardOrder(epoch));
  MutexLock lock(&mu_);
  Insert(orders_, key, order, kCachedOrders);
  return order;
}

std::shared_ptr<const DataLoader::Permutation> DataLoader::PermutationOf(uint64_t epoch,
                                                                         uint32_t shard) const {
  const CacheKey key{epoch, shard};
  {
    MutexLock lock(&mu_);
    if (auto hit = Find(permutations_, key)) return hit;
  }
  auto perm = std::make_shared<const Permutation>(
      RandomPermutation(static_cast<uint32_t>(sequences_in_shard_[shard]),
                        DeriveSeed(options_.seed, epoch, uint64_t{1} + shard)));
  MutexLock lock(&mu_);
  Insert(permutations_, key, perm, kCachedPermutations);
  return perm;
}

DataLoader::Location DataLoader::Locate(uint64_t g) const {
  Location loc;
  loc.epoch = g / sequences_per_epoch_;
  uint64_t pos = g % sequences_per_epoch_;
  std::shared_ptr<const ShardOrder> order = OrderOf(loc.epoch);
  auto it = std::upper_bound(order->ends.begin(), order->ends.end(), pos);
  auto i = static_cast<size_t>(it - order->ends.begin());
  uint32_t shard = order->shards[i];
  uint64_t local = pos - (i == 0 ? 0 : order->ends[i - 1]);
  loc.shard = shard;
  loc.sequence =
      options_.shuffle ? (*PermutationOf(loc.epoch, shard))[local] : static_cast<int64_t>(local);
  return loc;
}

void DataLoader::Sequence(uint64_t g, int32_t* out) const {
  Location loc = Locate(g);
  const int64_t t = options_.seq_len;
  shards_[loc.shard].Read(loc.sequence * t, t + 1, out);
}

LoaderState DataLoader::State(uint64_t next_sequence) const {
  return LoaderState{.next_sequence = next_sequence,
                     .seed = options_.seed,
                     .shuffle = options_.shuffle,
                     .fingerprint = fingerprint_};
}

absl::Status DataLoader::CheckResume(const LoaderState& saved) const {
  if (saved.fingerprint != fingerprint_) {
    return absl::FailedPreconditionError(
        Cat("the training data changed since the checkpoint: its fingerprint is ",
            FormatXxh3(fingerprint_), ", the checkpoint's ", FormatXxh3(saved.fingerprint),
            " (shard names, token counts and sequence length must match)"));
  }
  if (saved.shuffle != options_.shuffle || (options_.shuffle && saved.seed != options_.seed)) {
    return absl::FailedPreconditionError(Cat(
        "the data order changed since the checkpoint: shuffle ", options_.shuffle ? "on" : "off",
        " with seed ", options_.seed, ", the checkpoint's shuffle ", saved.shuffle ? "on" : "off",
        " with seed ", saved.seed));
  }
  return absl::OkStatus();
}

uint64_t MicroBatchStart(uint64_t step_start, int64_t micro_batch, int world_size,
                         int64_t micro_step, int rank) {
  return step_start + (static_cast<uint64_t>(micro_step) * static_cast<uint64_t>(world_size) +
                       static_cast<uint64_t>(rank)) *
                          static_cast<uint64_t>(micro_batch);
}

}  // namespace belay::data
