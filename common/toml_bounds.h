// Bounds on the shape of a TOML document, checked by a lexer-level pass before a parser builds
// it. toml++ recurses over the tree it builds: a 600 KB file of one dotted key 300,000 parts
// long (`a.a.a… = 1`) overflows its stack, and its own nesting check (arrays and inline
// tables only) does not see it. A campaign nests 3 levels deep and has about 90 keys, so the
// bounds are far above any campaign and far below what the parser survives.
#pragma once

#include <optional>
#include <string_view>

#include "common/campaign_spec.h"

namespace belay {

struct TomlBounds {
  // The deepest node of the document tree. Each part of a table header, each part of a
  // dotted key, each array and each inline table is one level: `[a.b]` then `c = [{ d = 1 }]`
  // puts the 1 at depth 5 (a, b, c, the array's element, d). After an array of tables
  // (`[[a]]`), each header part counts as two levels, as it may pass through an array's
  // element (`[a.b]` is then a, a's last element, b).
  int max_depth = 16;
  // Parts of one key or table header (`a.b.c` has 3).
  int max_key_parts = 8;
  // Key/value pairs (those inside inline tables too) plus table headers.
  int max_keys = 1024;
};

// The first bound `text` exceeds, as an error with the line and column of the key or bracket
// that crosses it and no key path (it belongs to no campaign key); nullopt within all bounds.
//
// The pass knows TOML's comments and its four kinds of strings (basic, literal and their
// multi-line forms, escapes included), so brackets, dots, '#' and '=' inside strings are not
// counted, nor anything in a comment. It counts exactly what the parser builds, but for the
// header parts after an array of tables, which it may overcount; it never undercounts. Where
// the text is not valid TOML it steps over what it does not understand (it may then overcount
// what the parser would build before its first syntax error) and leaves the error to the
// parser. Linear in the text's size, no recursion.
std::optional<SpecError> CheckTomlBounds(std::string_view text, std::string_view file,
                                         const TomlBounds& bounds = {});

}  // namespace belay
