// Typed, error-collecting reads from one TOML table: the building block of the campaign
// parser. Each read records what it consumed so that leftover keys can be reported as
// unknown; every problem becomes a SpecError with the value's position.
#pragma once

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/campaign_spec.h"
#include "toml++/toml.h"

namespace belay {

class SpecErrorSink {
 public:
  explicit SpecErrorSink(std::string file) : file_(std::move(file)) {}

  void Add(const toml::source_position& pos, std::string key, std::string message);
  void AddAt(uint32_t line, uint32_t column, std::string key, std::string message);
  const std::string& file() const { return file_; }
  std::vector<SpecError> Take();

 private:
  std::string file_;
  std::vector<SpecError> errors_;
};

class TomlReader {
 public:
  // `table` may be null (the section is absent); reads then yield their defaults and
  // required keys are reported missing at `where`.
  TomlReader(const toml::table* table, std::string path, toml::source_position where,
             SpecErrorSink* errors, bool quiet_missing = false);

  bool present() const { return table_ != nullptr; }
  bool has(std::string_view key) const;
  const std::string& path() const { return path_; }
  std::string KeyPath(std::string_view key) const;
  // Position of a key's value, or of the table when the key is absent.
  toml::source_position PosOf(std::string_view key) const;

  // Integers in [min, max]. A float, string or other type is a type error.
  std::optional<int64_t> Int(std::string_view key, int64_t min, int64_t max, bool required);
  // Floats (integers are accepted as floats) in [min, max]; `min_exclusive` and
  // `max_exclusive` make a bound strict (a learning rate must be > 0, an EMA decay < 1).
  std::optional<double> Float(std::string_view key, double min, double max, bool required,
                              bool min_exclusive = false, bool max_exclusive = false);
  std::optional<bool> Bool(std::string_view key);
  // Strings of 1..max_len bytes.
  std::optional<std::string> String(std::string_view key, bool required, size_t max_len = 4096);
  // One string or an array of strings (at least one).
  std::optional<std::vector<std::string>> StringList(std::string_view key, bool required);
  std::optional<std::chrono::seconds> Duration(std::string_view key, std::chrono::seconds min,
                                               std::chrono::seconds max);
  // A string that must be one of `allowed`; returns its index. `unsupported` lists values a
  // later version will accept, reported as "not supported yet".
  std::optional<size_t> Choice(std::string_view key,
                               std::initializer_list<std::string_view> allowed, bool required,
                               std::initializer_list<std::string_view> unsupported = {});
  // `auto` or an integer in [min, max]: returns {is_auto, value}.
  std::optional<std::pair<bool, int64_t>> IntOrAuto(std::string_view key, int64_t min, int64_t max);
  std::optional<std::pair<bool, std::chrono::seconds>> DurationOrAuto(std::string_view key,
                                                                      std::chrono::seconds min,
                                                                      std::chrono::seconds max);
  // A sub-table ([a.b] or inline { ... }); a reader over null if absent or of the wrong type.
  TomlReader Table(std::string_view key, bool required);

  // Reports every key of the table that no read asked for, with a suggestion when one of
  // the known keys is close.
  void ReportUnknownKeys();

  SpecErrorSink* errors() const { return errors_; }

 private:
  const toml::node* Get(std::string_view key);
  void TypeError(std::string_view key, const toml::node& node, std::string_view expected);
  void Missing(std::string_view key);

  const toml::table* table_;
  std::string path_;
  toml::source_position where_;
  SpecErrorSink* errors_;
  std::vector<std::string> known_;
  // The table itself was reported missing (or of the wrong type): its required keys are not
  // reported again one by one.
  bool quiet_missing_;
};

// "string", "integer", ... as TOML names them.
std::string_view TomlTypeName(const toml::node& node);
// The value as it would appear in the file, shortened to about 60 bytes.
std::string DescribeValue(const toml::node& node);

}  // namespace belay
