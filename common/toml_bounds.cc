// The shape check of TOML text: one pass, a small stack of open arrays and inline tables.
#include "common/toml_bounds.h"

#include <cstdint>
#include <string>
#include <vector>

#include "common/strings.h"

namespace belay {
namespace {

bool IsBareKeyChar(char c) {
  // TOML's A-Za-z0-9_-, plus every non-ASCII byte: counting a Unicode key part (which a
  // parser with TOML 1.1's keys would take) as a part errs on the side of counting.
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '-' || static_cast<unsigned char>(c) >= 0x80;
}

// Ends a scalar (number, boolean, date-time; a date-time may hold a space).
bool EndsScalar(char c) {
  return std::string_view(",]}#\n[{\"'=").find(c) != std::string_view::npos;
}

struct Violation {
  size_t pos;
  std::string message;
};

class ShapeScan {
 public:
  ShapeScan(std::string_view text, const TomlBounds& bounds) : t_(text), b_(bounds) {}

  std::optional<Violation> Run() {
    if (t_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;  // a UTF-8 byte order mark
    while (pos_ < t_.size()) {
      const char c = t_[pos_];
      if (c == ' ' || c == '\t' || c == '\r') {
        ++pos_;
      } else if (c == '#') {
        while (pos_ < t_.size() && t_[pos_] != '\n') ++pos_;
      } else if (c == '\n') {
        ++pos_;
        if (open_.empty()) mode_ = Mode::kKey;  // a new statement (arrays span lines)
      } else if (mode_ == Mode::kKey) {
        if (auto v = Key()) return v;
      } else if (mode_ == Mode::kValue) {
        if (auto v = Value()) return v;
      } else {
        AfterValue();
      }
    }
    return std::nullopt;
  }

 private:
  enum class Mode { kKey, kValue, kAfterValue };
  struct Open {
    bool array;  // else an inline table
    int depth;   // the array's or table's own depth
  };

  bool InArray() const { return !open_.empty() && open_.back().array; }
  bool InInlineTable() const { return !open_.empty() && !open_.back().array; }

  void SkipBlanks() {
    while (pos_ < t_.size() && (t_[pos_] == ' ' || t_[pos_] == '\t')) ++pos_;
  }

  // At a quote: past the string it opens. A single-line string ends at its quote or (a
  // syntax error) before the end of its line.
  void SkipString() {
    const char q = t_[pos_];
    const std::string triple(3, q);
    if (t_.substr(pos_, 3) == triple) {
      pos_ += 3;
      while (pos_ < t_.size()) {
        if (q == '"' && t_[pos_] == '\\') {
          pos_ += 2;
        } else if (t_.substr(pos_, 3) == triple) {
          // The run's last three quotes close it; up to two before them are content.
          while (pos_ < t_.size() && t_[pos_] == q) ++pos_;
          return;
        } else {
          ++pos_;
        }
      }
      pos_ = t_.size();
      return;
    }
    ++pos_;
    while (pos_ < t_.size() && t_[pos_] != '\n') {
      if (q == '"' && t_[pos_] == '\\' && pos_ + 1 < t_.size() && t_[pos_ + 1] != '\n') {
        pos_ += 2;
      } else if (t_[pos_++] == q) {
        return;
      }
    }
  }

  // A key or header name at pos_: its number of dotted parts (0 when there is none).
  int KeyParts() {
    int parts = 0;
    while (true) {
      SkipBlanks();
      if (pos_ >= t_.size()) break;
      if (t_[pos_] == '"' || t_[pos_] == '\'') {
        SkipString();
      } else if (IsBareKeyChar(t_[pos_])) {
        while (pos_ < t_.size() && IsBareKeyChar(t_[pos_])) ++pos_;
      } else {
        break;
      }
      ++parts;
      SkipBlanks();
      if (pos_ >= t_.size() || t_[pos_] != '.') break;
      ++pos_;
    }
    return parts;
  }

  std::optional<Violation> CountKey(size_t at) {
    if (++keys_ > b_.max_keys) {
      return Violation{
          at, Cat("more than ", b_.max_keys,
                  " keys and table headers; a campaign file may have at most ", b_.max_keys)};
    }
    return std::nullopt;
  }

  std::optional<Violation> TooDeep(size_t at, int depth) const {
    if (depth <= b_.max_depth) return std::nullopt;
    return Violation{at, Cat("nested ", depth,
                             " levels deep (each table-header part, dotted-key part, array and "
                             "inline table is a level); a campaign file may nest at most ",
                             b_.max_depth)};
  }

  std::optional<Violation> TooManyParts(size_t at, int parts, std::string_view what) const {
    if (parts <= b_.max_key_parts) return std::nullopt;
    return Violation{at, Cat(what, " of ", parts, " dotted parts; a campaign file allows at most ",
                             b_.max_key_parts)};
  }

  // Where a statement or an inline table's entry starts: a key, a [header], or the '}' of
  // an inline table.
  std::optional<Violation> Key() {
    const size_t at = pos_;
    if (open_.empty() && t_[pos_] == '[') {
      ++pos_;
      const bool array_of_tables = pos_ < t_.size() && t_[pos_] == '[';
      if (array_of_tables) ++pos_;
      const int parts = KeyParts();
      if (auto v = CountKey(at)) return v;
      if (auto v = TooManyParts(at, parts, "table header")) return v;
      // [[a.b]]: the array a.b, then its element table one level below. Once the file has an
      // array of tables, any header part may name one ([[a]] then [a.b] puts b in a's last
      // element): each counts as two levels, which is never too few.
      table_depth_ = (seen_array_of_tables_ ? 2 * parts : parts) + (array_of_tables ? 1 : 0);
      seen_array_of_tables_ = seen_array_of_tables_ || array_of_tables;
      if (auto v = TooDeep(at, table_depth_)) return v;
      while (pos_ < t_.size() && t_[pos_] == ']') ++pos_;
      mode_ = Mode::kAfterValue;
      return std::nullopt;
    }
    if (InInlineTable() && t_[pos_] == '}') {
      open_.pop_back();
      ++pos_;
      mode_ = Mode::kAfterValue;
      return std::nullopt;
    }
    const int parts = KeyParts();
    if (parts == 0 && (pos_ >= t_.size() || t_[pos_] != '=')) {
      ++pos_;  // not a key: a syntax error, for the parser to report
      return std::nullopt;
    }
    if (auto v = CountKey(at)) return v;
    if (auto v = TooManyParts(at, parts, "key")) return v;
    value_depth_ = (open_.empty() ? table_depth_ : open_.back().depth) + parts;
    if (auto v = TooDeep(at, value_depth_)) return v;
    if (pos_ < t_.size() && t_[pos_] == '=') {
      ++pos_;
      mode_ = Mode::kValue;
    }
    return std::nullopt;
  }

  // A value (of a key, or an array's element) at value_depth_.
  std::optional<Violation> Value() {
    const char c = t_[pos_];
    if ((c == ']' && InArray()) || (c == '}' && InInlineTable())) {
      open_.pop_back();  // an empty array, or after a trailing comma
      ++pos_;
      mode_ = Mode::kAfterValue;
      return std::nullopt;
    }
    if (auto v = TooDeep(pos_, value_depth_)) return v;
    if (c == '[' || c == '{') {
      open_.push_back({c == '[', value_depth_});
      ++pos_;
      if (c == '[') {
        value_depth_ = open_.back().depth + 1;
      } else {
        mode_ = Mode::kKey;
      }
      return std::nullopt;
    }
    if (c == '"' || c == '\'') {
      SkipString();
    } else {
      const size_t from = pos_;
      while (pos_ < t_.size() && !EndsScalar(t_[pos_])) ++pos_;
      if (pos_ == from) ++pos_;  // a stray ',', '=', ']' or '}': a syntax error
    }
    mode_ = Mode::kAfterValue;
    return std::nullopt;
  }

  void AfterValue() {
    const char c = t_[pos_];
    if (c == ',' && InArray()) {
      ++pos_;
      value_depth_ = open_.back().depth + 1;
      mode_ = Mode::kValue;
    } else if (c == ',' && InInlineTable()) {
      ++pos_;
      mode_ = Mode::kKey;
    } else if ((c == ']' && InArray()) || (c == '}' && InInlineTable())) {
      open_.pop_back();
      ++pos_;
    } else {
      // Not valid TOML here; take it as another value so that brackets in it still count.
      mode_ = Mode::kValue;
    }
  }

  std::string_view t_;
  const TomlBounds& b_;
  size_t pos_ = 0;
  Mode mode_ = Mode::kKey;
  int table_depth_ = 0;  // of the last [header]; 0: the root table
  bool seen_array_of_tables_ = false;
  int value_depth_ = 0;  // of the value about to be read
  int keys_ = 0;
  std::vector<Open> open_;  // at most max_depth deep: deeper is refused before it is pushed
};

}  // namespace

std::optional<SpecError> CheckTomlBounds(std::string_view text, std::string_view file,
                                         const TomlBounds& bounds) {
  std::optional<Violation> v = ShapeScan(text, bounds).Run();
  if (!v) return std::nullopt;
  // Line and column (in characters, as the parser counts them) of the violation.
  uint32_t line = 1, column = 1;
  for (size_t i = 0; i < v->pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(text[i]) & 0xC0) != 0x80) {
      ++column;
    }
  }
  return SpecError{std::string(file), line, column, "", std::move(v->message)};
}

}  // namespace belay
