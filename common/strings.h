// String concatenation that accepts std::string_view: Debian's abseil is built with its own
// absl::string_view, so absl::StrCat does not take std::string_view arguments.
#pragma once

#include <iterator>
#include <string>

#include "absl/strings/string_view.h"
#include "fmt/format.h"

#if !defined(ABSL_USES_STD_STRING_VIEW)
// Lets Cat print absl::string_view (Status::message(), for one) where it is its own type.
template <>
struct fmt::formatter<absl::string_view> : fmt::formatter<std::string_view> {
  auto format(absl::string_view s, fmt::format_context& ctx) const {
    return fmt::formatter<std::string_view>::format(std::string_view(s.data(), s.size()), ctx);
  }
};
#endif

namespace belay {

// Concatenates the arguments as fmt's "{}" prints each (numbers in their shortest form).
template <typename... Args>
std::string Cat(const Args&... args) {
  std::string out;
  (fmt::format_to(std::back_inserter(out), "{}", args), ...);
  return out;
}

}  // namespace belay
