// manifest.json encoding, strict decoding and shard verification.
#include "common/ckpt/manifest.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <limits>
#include <optional>
#include <system_error>
#include <tuple>

#include "common/checksum.h"
#include "common/ckpt/layout.h"
#include "common/durable_file.h"
#include "common/strings.h"

namespace belay::ckpt {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Field-by-field validation that stops at the first problem, naming it.
class Decoder {
 public:
  explicit Decoder(std::string_view source) : source_(source) {}

  absl::Status Error(std::string_view field, std::string_view problem) const {
    return absl::DataLossError(Cat(source_, ": ", field, ": ", problem));
  }

  // The member `key` of object `obj`; `path` names it in errors.
  absl::StatusOr<const json*> Member(const json& obj, const char* key,
                                     const std::string& path) const {
    auto it = obj.find(key);
    if (it == obj.end()) return Error(path, "missing");
    return &*it;
  }

  absl::StatusOr<int64_t> Int(const json& obj, const char* key, const std::string& path,
                              int64_t min, int64_t max) const {
    absl::StatusOr<const json*> v = Member(obj, key, path);
    if (!v.ok()) return v.status();
    if (!(*v)->is_number_integer()) return Error(path, Cat("must be an integer, got ", Kind(**v)));
    int64_t i;
    if ((*v)->is_number_unsigned()) {
      // Non-negative numbers parse as unsigned and may exceed int64_t.
      uint64_t u = (*v)->get<uint64_t>();
      if (u > static_cast<uint64_t>(max)) return Error(path, Cat(u, " is larger than ", max));
      i = static_cast<int64_t>(u);
    } else {
      i = (*v)->get<int64_t>();
    }
    if (i < min || i > max) return Error(path, Cat(i, " is outside [", min, ", ", max, "]"));
    return i;
  }

  absl::StatusOr<uint64_t> Unsigned(const json& obj, const char* key,
                                    const std::string& path) const {
    absl::StatusOr<const json*> v = Member(obj, key, path);
    if (!v.ok()) return v.status();
    if (!(*v)->is_number_unsigned()) {
      return Error(path, Cat("must be a non-negative integer, got ", Kind(**v)));
    }
    return (*v)->get<uint64_t>();
  }

  absl::StatusOr<std::string> String(const json& obj, const char* key,
                                     const std::string& path) const {
    absl::StatusOr<const json*> v = Member(obj, key, path);
    if (!v.ok()) return v.status();
    if (!(*v)->is_string()) return Error(path, Cat("must be a string, got ", Kind(**v)));
    return (*v)->get<std::string>();
  }

 private:
  static std::string Kind(const json& v) {
    return v.is_number() ? "a number" : Cat("a ", v.type_name());
  }

  std::string_view source_;
};

bool IsPlainFileName(std::string_view name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find_first_of(std::string_view("/\0", 2)) == std::string_view::npos;
}

// "<name> <offset> <count>" (decimal numbers; the name has no spaces).
std::optional<std::tuple<std::string, uint64_t, uint64_t>> ParseRange(const std::string& s) {
  const size_t b = s.rfind(' ');
  if (b == std::string::npos || b == 0) return std::nullopt;
  const size_t a = s.rfind(' ', b - 1);
  if (a == std::string::npos || a == 0) return std::nullopt;
  auto number = [](std::string_view v) -> std::optional<uint64_t> {
    uint64_t x = 0;
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
    if (v.empty() || ec != std::errc() || end != v.data() + v.size()) return std::nullopt;
    return x;
  };
  std::optional<uint64_t> offset = number(std::string_view(s).substr(a + 1, b - a - 1));
  std::optional<uint64_t> count = number(std::string_view(s).substr(b + 1));
  if (!offset || !count) return std::nullopt;
  return std::tuple{s.substr(0, a), *offset, *count};
}

absl::StatusOr<ShardMap> ShardMapFromJson(const Decoder& d, const json& j, int world_size) {
  if (!j.is_object()) return d.Error("shard_map", "must be an object");
  ShardMap map;
  absl::StatusOr<const json*> totals = d.Member(j, "tensors", "shard_map.tensors");
  if (!totals.ok()) return totals.status();
  if (!(*totals)->is_object()) return d.Error("shard_map.tensors", "must be an object");
  for (const auto& [name, total] : (*totals)->items()) {
    if (!total.is_number_unsigned() || total.get<uint64_t>() == 0) {
      return d.Error(Cat("shard_map.tensors.", name), "must be a positive integer");
    }
    map.totals[name] = total.get<uint64_t>();
  }
  absl::StatusOr<const json*> ranks = d.Member(j, "ranks", "shard_map.ranks");
  if (!ranks.ok()) return ranks.status();
  if (!(*ranks)->is_array() || (*ranks)->size() != static_cast<size_t>(world_size)) {
    return d.Error("shard_map.ranks",
                   Cat("must be an array of ", world_size, " lists, one per rank"));
  }
  for (size_t r = 0; r < (*ranks)->size(); ++r) {
    const json& list = (**ranks)[r];
    if (!list.is_array()) return d.Error(Cat("shard_map.ranks[", r, "]"), "must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      const json& e = list[i];
      const std::string at = Cat("shard_map.ranks[", r, "][", i, "]");
      std::optional<std::tuple<std::string, uint64_t, uint64_t>> parsed;
      if (e.is_string()) parsed = ParseRange(e.get<std::string>());
      if (!parsed) return d.Error(at, "must be a string \"<tensor> <offset> <count>\"");
      auto [name, offset, count] = std::move(*parsed);
      auto total = map.totals.find(name);
      if (total == map.totals.end())
        return d.Error(at, Cat("tensor ", name, " is not in shard_map.tensors"));
      if (count == 0 || offset > total->second || count > total->second - offset) {
        return d.Error(at, Cat("range [", offset, ", +", count, ") is not inside ", name, "'s ",
                               total->second, " elements"));
      }
      map.Add(name, total->second, {static_cast<int>(r), offset, count});
    }
  }
  for (const auto& [name, total] : map.totals) {
    uint64_t next = 0;
    for (const ShardRange& range : map.ranges[name]) {
      if (range.offset > next) {
        return d.Error("shard_map",
                       Cat(name, ": elements [", next, ", ", range.offset, ") are in no shard"));
      }
      if (range.offset < next) {
        return d.Error("shard_map",
                       Cat(name, ": elements from ", range.offset, " are in two shards (rank ",
                           range.rank, " and an earlier one)"));
      }
      next = range.offset + range.count;
    }
    if (next != total) {
      return d.Error("shard_map",
                     Cat(name, ": elements [", next, ", ", total, ") are in no shard"));
    }
  }
  return map;
}

json ShardMapToJson(const ShardMap& map, int world_size) {
  json totals = json::object();
  for (const auto& [name, total] : map.totals) totals[name] = total;
  json ranks = json::array();
  for (int r = 0; r < world_size; ++r) {
    json list = json::array();
    for (const auto& [name, range] : map.OfRank(r)) {
      list.push_back(Cat(name, " ", range.offset, " ", range.count));
    }
    ranks.push_back(std::move(list));
  }
  return {{"tensors", std::move(totals)}, {"ranks", std::move(ranks)}};
}

}  // namespace

void ShardMap::Add(const std::string& name, uint64_t total, ShardRange range) {
  totals[name] = total;
  std::vector<ShardRange>& v = ranges[name];
  auto at = std::lower_bound(
      v.begin(), v.end(), range,
      [](const ShardRange& a, const ShardRange& b) { return a.offset < b.offset; });
  v.insert(at, range);
}

std::vector<std::pair<std::string, ShardRange>> ShardMap::OfRank(int rank) const {
  std::vector<std::pair<std::string, ShardRange>> out;
  for (const auto& [name, list] : ranges) {
    for (const ShardRange& r : list) {
      if (r.rank == rank) out.emplace_back(name, r);
    }
  }
  return out;
}

std::vector<ShardRange> ShardMap::Find(const std::string& name, uint64_t offset,
                                       uint64_t count) const {
  std::vector<ShardRange> out;
  auto it = ranges.find(name);
  if (it == ranges.end()) return out;
  const uint64_t end = offset + count;
  for (const ShardRange& r : it->second) {
    const uint64_t lo = std::max(offset, r.offset), hi = std::min(end, r.offset + r.count);
    if (lo < hi) out.push_back({r.rank, lo, hi - lo});
  }
  return out;
}

std::string ManifestToJson(const Manifest& m) {
  json shards = json::array();
  for (const ManifestShard& s : m.shards) {
    shards.push_back(
        {{"rank", s.rank}, {"file", s.file}, {"bytes", s.bytes}, {"xxh3", FormatXxh3(s.xxh3)}});
  }
  json doc = {{"format", m.format},
              {"campaign", m.campaign},
              {"step", m.step},
              {"world_size", m.world_size},
              {"shards", std::move(shards)},
              {"metrics", m.metrics},
              {"created_unix", m.created_unix}};
  if (m.shard_map) doc["shard_map"] = ShardMapToJson(*m.shard_map, m.world_size);
  // Replace rather than throw on invalid UTF-8: validation on read then reports the field.
  return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

absl::StatusOr<Manifest> ManifestFromJson(std::string_view text, std::string_view source) {
  Decoder d(source);
  json doc;
  try {
    doc = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    return absl::DataLossError(Cat(source, ": not valid JSON: ", e.what()));
  }
  if (!doc.is_object()) return d.Error("(top level)", "must be a JSON object");

  Manifest m;
  absl::StatusOr<int64_t> format =
      d.Int(doc, "format", "format", 0, std::numeric_limits<int>::max());
  if (!format.ok()) return format.status();
  if (*format != kManifestFormat) {
    return d.Error("format", Cat("unsupported manifest format ", *format, " (this build reads ",
                                 kManifestFormat, ")"));
  }
  m.format = static_cast<int>(*format);
  absl::StatusOr<std::string> campaign = d.String(doc, "campaign", "campaign");
  if (!campaign.ok()) return campaign.status();
  if (campaign->empty()) return d.Error("campaign", "empty");
  m.campaign = std::move(*campaign);
  absl::StatusOr<int64_t> step = d.Int(doc, "step", "step", 0, std::numeric_limits<int64_t>::max());
  if (!step.ok()) return step.status();
  m.step = *step;
  absl::StatusOr<int64_t> world =
      d.Int(doc, "world_size", "world_size", 1, std::numeric_limits<int>::max());
  if (!world.ok()) return world.status();
  m.world_size = static_cast<int>(*world);
  absl::StatusOr<int64_t> created =
      d.Int(doc, "created_unix", "created_unix", std::numeric_limits<int64_t>::min(),
            std::numeric_limits<int64_t>::max());
  if (!created.ok()) return created.status();
  m.created_unix = *created;

  absl::StatusOr<const json*> metrics = d.Member(doc, "metrics", "metrics");
  if (!metrics.ok()) return metrics.status();
  if (!(*metrics)->is_object()) return d.Error("metrics", "must be an object");
  m.metrics = **metrics;

  absl::StatusOr<const json*> shards = d.Member(doc, "shards", "shards");
  if (!shards.ok()) return shards.status();
  if (!(*shards)->is_array()) return d.Error("shards", "must be an array");
  if ((*shards)->size() != static_cast<size_t>(m.world_size)) {
    return d.Error("shards", Cat((*shards)->size(), " entries for world_size ", m.world_size));
  }
  for (size_t i = 0; i < (*shards)->size(); ++i) {
    const json& s = (**shards)[i];
    const std::string at = Cat("shards[", i, "]");
    if (!s.is_object()) return d.Error(at, "must be an object");
    ManifestShard shard;
    absl::StatusOr<int64_t> rank = d.Int(s, "rank", at + ".rank", 0, m.world_size - 1);
    if (!rank.ok()) return rank.status();
    if (*rank != static_cast<int64_t>(i)) {
      return d.Error(at + ".rank", Cat("is ", *rank, "; shards must be listed in rank order"));
    }
    shard.rank = static_cast<int>(*rank);
    absl::StatusOr<std::string> file = d.String(s, "file", at + ".file");
    if (!file.ok()) return file.status();
    if (!IsPlainFileName(*file)) {
      return d.Error(at + ".file", Cat("\"", *file, "\" is not a file name in the step directory"));
    }
    shard.file = std::move(*file);
    absl::StatusOr<uint64_t> bytes = d.Unsigned(s, "bytes", at + ".bytes");
    if (!bytes.ok()) return bytes.status();
    shard.bytes = *bytes;
    absl::StatusOr<std::string> sum = d.String(s, "xxh3", at + ".xxh3");
    if (!sum.ok()) return sum.status();
    absl::StatusOr<uint64_t> parsed = ParseXxh3(*sum);
    if (!parsed.ok()) return d.Error(at + ".xxh3", std::string(parsed.status().message()));
    shard.xxh3 = *parsed;
    m.shards.push_back(std::move(shard));
  }
  if (auto it = doc.find("shard_map"); it != doc.end()) {
    absl::StatusOr<ShardMap> map = ShardMapFromJson(d, *it, m.world_size);
    if (!map.ok()) return map.status();
    m.shard_map = std::move(*map);
  }
  return m;
}

absl::Status WriteManifest(const fs::path& step_dir, const Manifest& manifest) {
  const fs::path path = step_dir / kManifestFileName;
  const std::string text = ManifestToJson(manifest);
  if (absl::StatusOr<Manifest> check = ManifestFromJson(text, path.string()); !check.ok()) {
    return absl::InvalidArgumentError(
        Cat("refusing to write an invalid manifest: ", check.status().message()));
  }
  absl::StatusOr<AtomicFile> file = AtomicFile::Create(path);
  if (!file.ok()) return file.status();
  if (absl::Status s = file->Append(text); !s.ok()) return s;
  return file->Commit();
}

absl::StatusOr<Manifest> ReadManifest(const fs::path& step_dir) {
  const fs::path path = step_dir / kManifestFileName;
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) return ErrnoError(ec.value(), path, "cannot read manifest");
  // A manifest is a few KB per thousand ranks; anything this large is not one.
  constexpr uintmax_t kMaxManifestBytes = uintmax_t{64} << 20;
  if (size > kMaxManifestBytes) {
    return absl::DataLossError(
        Cat(path.string(), ": ", size, " bytes is too large for a manifest"));
  }
  ScopedFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError(errno, path, "cannot open manifest");
  std::string text;
  char buf[1 << 16];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(errno, path, "cannot read manifest");
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > kMaxManifestBytes) {
      return absl::DataLossError(Cat(path.string(), ": too large for a manifest"));
    }
  }
  return ManifestFromJson(text, path.string());
}

absl::Status VerifyShards(const fs::path& step_dir, const Manifest& manifest) {
  for (const ManifestShard& shard : manifest.shards) {
    const fs::path path = step_dir / shard.file;
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(Cat(path.string(), ": shard of rank ", shard.rank, " is missing"));
    }
    if (ec) return ErrnoError(ec.value(), path, Cat("shard of rank ", shard.rank));
    if (size != shard.bytes) {
      return absl::DataLossError(Cat(path.string(), ": shard of rank ", shard.rank, " is ", size,
                                     " bytes, manifest says ", shard.bytes));
    }
    absl::StatusOr<uint64_t> sum = Xxh3File(path);
    if (!sum.ok()) return sum.status();
    if (*sum != shard.xxh3) {
      return absl::DataLossError(Cat(path.string(), ": shard of rank ", shard.rank,
                                     " checksum mismatch: manifest says ", FormatXxh3(shard.xxh3),
                                     ", file has ", FormatXxh3(*sum)));
    }
  }
  return absl::OkStatus();
}

}  // namespace belay::ckpt
