// The TOML shape bounds: each bound refuses the first thing past it, at its line and column;
// brackets, dots and quotes inside strings and comments are not counted; campaigns pass.
#include "common/toml_bounds.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "toml++/toml.h"

namespace belay {
namespace {

std::string Repeat(std::string_view s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

// "" within bounds, else the error as `belay validate` prints it.
std::string Check(std::string_view text, const TomlBounds& bounds = {}) {
  std::optional<SpecError> e = CheckTomlBounds(text, "t.toml", bounds);
  return e ? e->ToString() : "";
}

std::string NestedArrays(int n) { return "a = " + Repeat("[", n) + Repeat("]", n) + "\n"; }
std::string NestedInlineTables(int n) {
  return "x = " + Repeat("{ a = ", n) + "1" + Repeat(" }", n) + "\n";
}

TEST(TomlBounds, ShippedCampaignsAreWithinBounds) {
  int seen = 0;
  for (const auto& e : std::filesystem::directory_iterator(BELAY_SOURCE_DIR "/deploy/examples")) {
    if (e.path().extension() != ".toml") continue;
    std::stringstream text;
    text << std::ifstream(e.path()).rdbuf();
    EXPECT_EQ(Check(text.str()), "") << e.path();
    ++seen;
  }
  EXPECT_GE(seen, 2);
}

TEST(TomlBounds, ArraysNestedPastTheDepthAreRefusedAtTheBracket) {
  // `a` is level 1 and its value, the outer array, too; each array inside is one more.
  EXPECT_EQ(Check(NestedArrays(16)), "");
  EXPECT_EQ(
      Check(NestedArrays(17)),
      "t.toml:1:21: nested 17 levels deep (each table-header part, dotted-key part, array and "
      "inline table is a level); a campaign file may nest at most 16");
  // Far past the limit (the parser's own check is at 256): the same error, at once.
  EXPECT_EQ(Check(NestedArrays(100000)).substr(0, 31), "t.toml:1:21: nested 17 levels d");
}

TEST(TomlBounds, InlineTablesNestedPastTheDepthAreRefused) {
  // The innermost table's key is one level below the table.
  EXPECT_EQ(Check(NestedInlineTables(15)), "");
  EXPECT_EQ(Check(NestedInlineTables(16)).substr(0, 31), "t.toml:1:97: nested 17 levels d");
}

TEST(TomlBounds, HeaderDottedKeyAndValueDepthsAdd) {
  // [a.b.c.d] is 4 deep, e.f.g.h 4 more (the outer array is h's value), then 8 arrays
  // inside: 16; a 9th is one too many.
  const std::string head = "[campaign]\nname = \"x\"\n\n[a.b.c.d]\ne.f.g.h = ";
  EXPECT_EQ(Check(head + Repeat("[", 9) + Repeat("]", 9) + "\n"), "");
  EXPECT_EQ(Check(head + Repeat("[", 10) + Repeat("]", 10) + "\n").substr(0, 29),
            "t.toml:5:20: nested 17 levels");
  // An array of tables is one level more than its name: [[a.b.c.d.e.f.g.h]] is 9 deep.
  EXPECT_EQ(Check("[[a.b.c.d.e.f.g.h]]\nx.y.z.w.v.u.t = 1\n"), "");
  EXPECT_EQ(Check("[[a.b.c.d.e.f.g.h]]\nx.y.z.w.v.u.t.s = 1\n").substr(0, 29),
            "t.toml:2:1: nested 17 levels ");
}

TEST(TomlBounds, HeadersAfterAnArrayOfTablesCountTwiceForTheArraysTheyMayPassThrough) {
  // [[a]] then [a.b.c.d.e.f.g.h]: a, a's element, b, ... h is 9 deep; counted as 16.
  const std::string text = "[[a]]\n[a.b.c.d.e.f.g.h]\n";
  EXPECT_EQ(Check(text), "");
  EXPECT_NE(Check(text + "x = 1\n"), "");
  // Without the array of tables the same header is 8 deep, and a key 8 more fits.
  EXPECT_EQ(Check("[a]\n[a.b.c.d.e.f.g.h]\nx.y.z.w.v.u.t.s = 1\n"), "");
}

TEST(TomlBounds, LongDottedKeysAreRefusedAtTheKey) {
  EXPECT_EQ(Check("a.b.c.d.e.f.g.h = 1\n"), "");
  EXPECT_EQ(Check("x = 1\n  a.b.c.d.e.f.g.h.i = 1\n"),
            "t.toml:2:3: key of 9 dotted parts; a campaign file allows at most 8");
  EXPECT_EQ(Check("[ a . b . c . d . e . f . g . h . i ]\n"),
            "t.toml:1:1: table header of 9 dotted parts; a campaign file allows at most 8");
  // The file that crashed the parser: one key of 300,000 parts.
  EXPECT_EQ(Check("a" + Repeat(".a", 300000) + " = 1\n"),
            "t.toml:1:1: key of 300001 dotted parts; a campaign file allows at most 8");
  // Inside an inline table too.
  EXPECT_EQ(Check("t = { a.b.c.d.e.f.g.h.i = 1 }\n").substr(0, 25), "t.toml:1:7: key of 9 dott");
}

TEST(TomlBounds, TooManyKeysAreRefusedAtTheFirstOnePast) {
  std::string text;
  for (int i = 0; i < 1023; ++i) text += "k" + std::to_string(i) + " = 1\n";
  EXPECT_EQ(Check(text + "[t]\n"), "");  // 1023 keys and a header
  EXPECT_EQ(Check(text + "[t]\nlast = 2\n"),
            "t.toml:1025:1: more than 1024 keys and table headers; a campaign file may have at "
            "most 1024");
  // Keys of inline tables count as well.
  EXPECT_EQ(Check("t = [" + Repeat("{ a = 1, b = 2 }, ", 600) + "]\n").substr(0, 27),
            "t.toml:1:9213: more than 10");
}

TEST(TomlBounds, BracketsDotsAndQuotesInsideStringsAndCommentsAreNotCounted) {
  const std::string deep = Repeat("[{", 40);
  const std::string dots = Repeat("a.", 40) + "a";
  for (const std::string& text : {
           "s = \"" + deep + "\"\n",
           "s = '" + deep + "'\n",
           "s = \"\\\"" + deep + "\\\\\"\n",  // escaped quotes in a basic string
           "s = 'C:\\" + deep + "'\n",        // a backslash ends nothing in a literal
           "s = \"\"\"\n" + deep + "\n\"\"" + deep + "\n\"\"\"\n",  // "" inside a multi-line string
           "s = \"\"\"\\\"\"\"" + deep + "\"\"\"\n",                // an escaped quote before """
           "s = '''\n" + deep + "\n''" + deep + "'''\n",
           "s = '''" + deep + "'''''\n",  // two quotes of content before the closing three
           "# " + deep + " " + dots + " = 1\n",
           "a = 1 # " + deep + "\n",
           "\"" + dots + "\" = 1\n",  // a quoted key is one part, whatever it holds
           "'" + dots + "'.x = 1\n",
           "[\"" + dots + "\"]\n",
       }) {
    EXPECT_EQ(Check(text), "") << text;
  }
  // After a string, counting goes on: the arrays after this one are counted.
  EXPECT_NE(Check("s = [\"]]]]\", " + Repeat("[", 16) + Repeat("]", 16) + "]\n"), "");
  EXPECT_NE(Check("s = '''\n]]]''' \nt = " + Repeat("[", 17) + Repeat("]", 17) + "\n"), "");
}

TEST(TomlBounds, ValidTomlOfEveryKindPasses) {
  constexpr std::string_view kText = R"(# a comment
title = "TOML"   # trailing comment
"quoted key" = 'literal'
bare-key_1 = 0x_ff
dates = [1979-05-27T07:32:00Z, 1979-05-27 07:32:00-08:00, 07:32:00, 1979-05-27]
numbers = [ +1, -2_000, 3.5e-3, inf, -nan, 0o755, 0b1101, ]
nested = [ [ 1, 2 ], [ "a", 'b' ], { x = 1, y.z = 2 }, [], {} ]
multi = """
Roses are red
Violets are "blue" ""
"""
paths = '''C:\Users\'''
spans = [
  1,  # one
  2,
]

[ table . "with dots" ]
key = true

[[products]]
name = "Hammer"

[[products]]
)";
  EXPECT_EQ(Check(kText), "");
}

TEST(TomlBounds, PositionsCountCharactersAndLinesInsideStrings) {
  // Two-byte characters before the key, and a multi-line string above it.
  EXPECT_EQ(Check("s = \"\"\"\n\n\"\"\"\nt = { \"é\" = 1, a.b.c.d.e.f.g.h.i = 1 }\n").substr(0, 29),
            "t.toml:4:16: key of 9 dotted ");
}

TEST(TomlBounds, MalformedTextIsLeftToTheParser) {
  // Unterminated strings, stray brackets and junk: no bound crossed, no crash, no hang.
  for (std::string text :
       {std::string("a = \"unterminated\n[[[\n"), std::string("]]]}}},,,===\n"),
        std::string("a = '''never closed [[[["), std::string("[a.b\nc = {\n"),
        std::string("\"\"\"\\"), std::string("a = \"\\"), std::string("\xff\xfe\x00", 3)}) {
    EXPECT_EQ(Check(text), "") << text;
  }
  // Junk does not hide nesting that follows it.
  EXPECT_NE(Check("a = 1 2 3 " + Repeat("[", 17)), "");
}

// Random valid TOML (headers, arrays of tables, dotted keys, nested arrays and inline tables,
// strings of every kind full of brackets, quotes, dots and '#'), for comparing the scan with
// what toml++ builds.
class RandomToml {
 public:
  explicit RandomToml(uint32_t seed) : rng_(seed) {}

  std::string Document() {
    std::string out;
    for (int i = Below(4); i > 0; --i) out += Entry(1) + "\n";
    for (int t = Below(4); t > 0; --t) {
      const bool array = Below(3) == 0;
      out += (array ? "[[" : "[") + Name(1 + Below(4)) + (array ? "]]" : "]") + "  # [[[ {{{\n";
      for (int i = Below(4); i > 0; --i) out += Entry(1) + "\n";
    }
    return out;
  }

 private:
  int Below(int n) { return std::uniform_int_distribution<int>(0, n - 1)(rng_); }
  // A fresh name (no key is defined twice), dotted into `parts`, bare or quoted.
  std::string Name(int parts) {
    std::string out;
    for (int i = 0; i < parts; ++i) {
      const std::string n = "k" + std::to_string(next_++);
      out += (i ? " . " : "") + (Below(3) == 0 ? "\"" + n + ".[x]\"" : n);
    }
    return out;
  }
  std::string Noise() {
    static constexpr std::string_view kChars = "[]{}.,=#ab ";
    std::string out;
    for (int i = Below(8); i > 0; --i) out += kChars[static_cast<size_t>(Below(kChars.size()))];
    return out;
  }
  std::string String() {
    switch (Below(5)) {
      case 0:
        return "\"" + Noise() + "\\\"\\\\" + Noise() + "\"";  // "...\"\\..."
      case 1:
        return "'" + Noise() + "\\" + "'";
      case 2:
        return "\"\"\"\n" + Noise() + "\"\"x" + Noise() + "\\\"\"\"\"\"\"";
      case 3:
        return "'''" + Noise() + "\n''x" + Noise() + "'''''";
      default:
        return std::to_string(Below(1000));
    }
  }
  std::string Value(int depth) {
    const int kind = depth > 24 ? 0 : Below(4);
    if (kind == 1) {
      std::string out = "[";
      for (int i = Below(3); i > 0; --i) out += Value(depth + 1) + (Below(2) ? ", " : ",\n  ");
      return out + "]";
    }
    if (kind == 2) {
      std::string out = "{ ";
      for (int i = Below(3); i > 0; --i) out += (out.size() > 2 ? ", " : "") + Entry(depth + 1);
      return out + " }";
    }
    return String();
  }
  std::string Entry(int depth) { return Name(1 + Below(3)) + " = " + Value(depth + Below(3)); }

  std::mt19937 rng_;
  int next_ = 0;
};

// The depth of the deepest node under `node` (itself at `depth`).
int Depth(const toml::node& node, int depth) {
  int deepest = depth;
  if (const toml::table* t = node.as_table()) {
    for (auto&& [k, v] : *t) deepest = std::max(deepest, Depth(v, depth + 1));
  } else if (const toml::array* a = node.as_array()) {
    for (const toml::node& v : *a) deepest = std::max(deepest, Depth(v, depth + 1));
  }
  return deepest;
}

TEST(TomlBounds, RefusesExactlyTheDocumentsTheParserBuildsTooDeep) {
  int refused = 0, parsed = 0;
  for (uint32_t seed = 1; seed <= 3000; ++seed) {
    const std::string text = RandomToml(seed).Document();
    toml::table root;
    try {
      root = toml::parse(text);
    } catch (const toml::parse_error& e) {
      ADD_FAILURE() << "generated invalid TOML (seed " << seed << "): " << e.description() << "\n"
                    << text;
      continue;
    }
    ++parsed;
    const int depth = Depth(root, 0);
    for (int max_depth : {2, 4, 8, 16}) {
      TomlBounds b;
      b.max_depth = max_depth;
      b.max_key_parts = 100;
      b.max_keys = 1 << 20;
      const bool over = CheckTomlBounds(text, "t.toml", b).has_value();
      refused += over;
      // Never too few levels; exactly the parser's count but after an array of tables.
      if (depth > max_depth || text.find("[[") == std::string::npos) {
        ASSERT_EQ(over, depth > max_depth)
            << "depth " << depth << ", bound " << max_depth << ", seed " << seed << "\n"
            << text;
      }
    }
  }
  EXPECT_EQ(parsed, 3000);
  EXPECT_GT(refused, 1000);  // the bounds were crossed often, not only passed
}

}  // namespace
}  // namespace belay
