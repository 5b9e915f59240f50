// Typed reads from a TOML table that collect errors instead of stopping at the first.
#include "common/toml_reader.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/duration.h"
#include "common/strings.h"

namespace belay {
namespace {

size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += Cat("\\", c);
    } else if (u < 0x20 || u == 0x7f) {
      out += absl::StrFormat("\\x%02x", u);
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
  return out;
}

std::string FormatFloat(double v) { return absl::StrFormat("%g", v); }

}  // namespace

void SpecErrorSink::Add(const toml::source_position& pos, std::string key, std::string message) {
  AddAt(pos.line == 0 ? 1 : pos.line, pos.column == 0 ? 1 : pos.column, std::move(key),
        std::move(message));
}

void SpecErrorSink::AddAt(uint32_t line, uint32_t column, std::string key, std::string message) {
  errors_.push_back(SpecError{file_, line, column, std::move(key), std::move(message)});
}

std::vector<SpecError> SpecErrorSink::Take() {
  std::stable_sort(errors_.begin(), errors_.end(), [](const SpecError& a, const SpecError& b) {
    return std::pair(a.line, a.column) < std::pair(b.line, b.column);
  });
  return std::move(errors_);
}

std::string_view TomlTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string DescribeValue(const toml::node& node) {
  if (const auto* s = node.as_string()) {
    std::string v = s->get();
    if (v.size() > 60) v = v.substr(0, 57) + "...";
    return Quote(v);
  }
  if (const auto* i = node.as_integer()) return Cat(i->get());
  if (const auto* f = node.as_floating_point()) return FormatFloat(f->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  if (node.is_table()) return "a table";
  if (node.is_array()) return "an array";
  return Cat("a ", TomlTypeName(node));
}

TomlReader::TomlReader(const toml::table* table, std::string path, toml::source_position where,
                       SpecErrorSink* errors, bool quiet_missing)
    : table_(table),
      path_(std::move(path)),
      where_(where),
      errors_(errors),
      quiet_missing_(quiet_missing) {
  if (table_ != nullptr && table_->source().begin) where_ = table_->source().begin;
}

bool TomlReader::has(std::string_view key) const {
  return table_ != nullptr && table_->get(key) != nullptr;
}

std::string TomlReader::KeyPath(std::string_view key) const {
  return path_.empty() ? std::string(key) : Cat(path_, ".", key);
}

toml::source_position TomlReader::PosOf(std::string_view key) const {
  if (table_ != nullptr) {
    if (const toml::node* n = table_->get(key); n != nullptr && n->source().begin) {
      return n->source().begin;
    }
  }
  return where_;
}

const toml::node* TomlReader::Get(std::string_view key) {
  known_.emplace_back(key);
  return table_ == nullptr ? nullptr : table_->get(key);
}

void TomlReader::TypeError(std::string_view key, const toml::node& node,
                           std::string_view expected) {
  bool scalar =
      node.is_string() || node.is_integer() || node.is_floating_point() || node.is_boolean();
  errors_->Add(
      node.source().begin, KeyPath(key),
      scalar ? Cat("expected ", expected, ", got ", TomlTypeName(node), " ", DescribeValue(node))
             : Cat("expected ", expected, ", got ", DescribeValue(node)));
}

void TomlReader::Missing(std::string_view key) {
  if (quiet_missing_) return;
  errors_->Add(where_, KeyPath(key),
               table_ == nullptr ? Cat("missing required key (the section [", path_, "] is absent)")
                                 : "missing required key");
}

std::optional<int64_t> TomlReader::Int(std::string_view key, int64_t min, int64_t max,
                                       bool required) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) Missing(key);
    return std::nullopt;
  }
  const auto* v = n->as_integer();
  if (v == nullptr) {
    TypeError(key, *n, "an integer");
    return std::nullopt;
  }
  if (v->get() < min || v->get() > max) {
    errors_->Add(n->source().begin, KeyPath(key),
                 Cat(v->get(), " is out of range; allowed: ", min, "..", max));
    return std::nullopt;
  }
  return v->get();
}

std::optional<double> TomlReader::Float(std::string_view key, double min, double max, bool required,
                                        bool min_exclusive, bool max_exclusive) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) Missing(key);
    return std::nullopt;
  }
  double value;
  if (const auto* f = n->as_floating_point()) {
    value = f->get();
  } else if (const auto* i = n->as_integer()) {
    value = static_cast<double>(i->get());
  } else {
    TypeError(key, *n, "a number");
    return std::nullopt;
  }
  bool below = min_exclusive ? !(value > min) : !(value >= min);
  bool above = max_exclusive ? !(value < max) : !(value <= max);
  if (!std::isfinite(value) || below || above) {
    errors_->Add(n->source().begin, KeyPath(key),
                 Cat(FormatFloat(value),
                     " is out of range; allowed: ", min_exclusive ? "> " : ">= ", FormatFloat(min),
                     max_exclusive ? " and < " : " and <= ", FormatFloat(max)));
    return std::nullopt;
  }
  return value;
}

std::optional<bool> TomlReader::Bool(std::string_view key) {
  const toml::node* n = Get(key);
  if (n == nullptr) return std::nullopt;
  if (const auto* b = n->as_boolean()) return b->get();
  TypeError(key, *n, "a boolean (true or false)");
  return std::nullopt;
}

std::optional<std::string> TomlReader::String(std::string_view key, bool required, size_t max_len) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) Missing(key);
    return std::nullopt;
  }
  const auto* s = n->as_string();
  if (s == nullptr) {
    TypeError(key, *n, "a string");
    return std::nullopt;
  }
  if (s->get().empty() || s->get().size() > max_len) {
    errors_->Add(n->source().begin, KeyPath(key),
                 Cat("string of ", s->get().size(), " bytes; allowed: 1..", max_len, " bytes"));
    return std::nullopt;
  }
  return s->get();
}

std::optional<std::vector<std::string>> TomlReader::StringList(std::string_view key,
                                                               bool required) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) Missing(key);
    return std::nullopt;
  }
  std::vector<std::string> out;
  auto take = [&](const toml::node& item) {
    const auto* s = item.as_string();
    if (s == nullptr) {
      TypeError(key, item, "a string or an array of strings");
      return false;
    }
    if (s->get().empty()) {
      errors_->Add(item.source().begin, KeyPath(key), "empty string; expected a path or glob");
      return false;
    }
    out.push_back(s->get());
    return true;
  };
  if (const auto* arr = n->as_array()) {
    if (arr->empty()) {
      errors_->Add(n->source().begin, KeyPath(key), "empty array; expected at least one path");
      return std::nullopt;
    }
    for (const toml::node& item : *arr) {
      if (!take(item)) return std::nullopt;
    }
  } else if (!take(*n)) {
    return std::nullopt;
  }
  return out;
}

std::optional<std::chrono::seconds> TomlReader::Duration(std::string_view key,
                                                         std::chrono::seconds min,
                                                         std::chrono::seconds max) {
  const toml::node* n = Get(key);
  if (n == nullptr) return std::nullopt;
  const auto* s = n->as_string();
  if (s == nullptr) {
    TypeError(key, *n, "a duration string such as \"30m\"");
    return std::nullopt;
  }
  absl::StatusOr<std::chrono::seconds> d = ParseDuration(s->get());
  if (!d.ok()) {
    errors_->Add(n->source().begin, KeyPath(key),
                 Cat(DescribeValue(*n), ": ", d.status().message()));
    return std::nullopt;
  }
  if (*d < min || *d > max) {
    errors_->Add(n->source().begin, KeyPath(key),
                 Cat(DescribeValue(*n), " is out of range; allowed: ", FormatDuration(min), "..",
                     FormatDuration(max)));
    return std::nullopt;
  }
  return *d;
}

std::optional<size_t> TomlReader::Choice(std::string_view key,
                                         std::initializer_list<std::string_view> allowed,
                                         bool required,
                                         std::initializer_list<std::string_view> unsupported) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) Missing(key);
    return std::nullopt;
  }
  std::vector<std::string> quoted;
  for (std::string_view a : allowed) quoted.push_back(Quote(a));
  const auto* s = n->as_string();
  if (s == nullptr) {
    TypeError(key, *n, Cat("one of ", absl::StrJoin(quoted, ", ")));
    return std::nullopt;
  }
  for (size_t i = 0; i < allowed.size(); ++i) {
    if (s->get() == allowed.begin()[i]) return i;
  }
  bool later = std::find(unsupported.begin(), unsupported.end(), s->get()) != unsupported.end();
  errors_->Add(n->source().begin, KeyPath(key),
               Cat(DescribeValue(*n), later ? " is not supported yet" : " is not allowed",
                   "; allowed: ", absl::StrJoin(quoted, ", ")));
  return std::nullopt;
}

std::optional<std::pair<bool, int64_t>> TomlReader::IntOrAuto(std::string_view key, int64_t min,
                                                              int64_t max) {
  const toml::node* n = table_ == nullptr ? nullptr : table_->get(key);
  if (n != nullptr && n->is_string()) {
    known_.emplace_back(key);
    if (n->as_string()->get() == "auto") return std::pair{true, int64_t{0}};
    TypeError(key, *n, Cat("\"auto\" or an integer in ", min, "..", max));
    return std::nullopt;
  }
  if (n != nullptr && !n->is_integer()) {
    known_.emplace_back(key);
    TypeError(key, *n, Cat("\"auto\" or an integer in ", min, "..", max));
    return std::nullopt;
  }
  std::optional<int64_t> v = Int(key, min, max, false);
  if (!v) return std::nullopt;
  return std::pair{false, *v};
}

std::optional<std::pair<bool, std::chrono::seconds>> TomlReader::DurationOrAuto(
    std::string_view key, std::chrono::seconds min, std::chrono::seconds max) {
  const toml::node* n = table_ == nullptr ? nullptr : table_->get(key);
  if (n != nullptr && n->is_string() && n->as_string()->get() == "auto") {
    known_.emplace_back(key);
    return std::pair{true, std::chrono::seconds{0}};
  }
  std::optional<std::chrono::seconds> d = Duration(key, min, max);
  if (!d) return std::nullopt;
  return std::pair{false, *d};
}

TomlReader TomlReader::Table(std::string_view key, bool required) {
  const toml::node* n = Get(key);
  if (n == nullptr) {
    if (required) {
      errors_->Add(where_, KeyPath(key), Cat("missing required section [", KeyPath(key), "]"));
    }
    return TomlReader(nullptr, KeyPath(key), where_, errors_, required);
  }
  const auto* t = n->as_table();
  if (t == nullptr) {
    TypeError(key, *n, "a table");
    return TomlReader(nullptr, KeyPath(key), n->source().begin, errors_, true);
  }
  return TomlReader(t, KeyPath(key), n->source().begin, errors_);
}

void TomlReader::ReportUnknownKeys() {
  if (table_ == nullptr) return;
  for (auto&& [k, v] : *table_) {
    std::string_view name = k.str();
    if (std::find(known_.begin(), known_.end(), name) != known_.end()) continue;
    std::string best;
    size_t best_d = 3;  // Suggest only close matches.
    for (const std::string& cand : known_) {
      size_t d = EditDistance(name, cand);
      if (d < best_d) {
        best_d = d;
        best = cand;
      }
    }
    std::vector<std::string> sorted = known_;
    std::sort(sorted.begin(), sorted.end());
    sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
    std::string msg = best.empty() ? Cat("unknown key; allowed keys: ", absl::StrJoin(sorted, ", "))
                                   : Cat("unknown key; did you mean '", best, "'?");
    toml::source_position pos = k.source().begin ? k.source().begin : v.source().begin;
    errors_->Add(pos, KeyPath(name), msg);
  }
}

}  // namespace belay
