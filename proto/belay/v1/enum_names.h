// Short, lower-case names of the API's enum values for people and logs: the value's name
// without its enum's prefix (CAMPAIGN_STATE_RUNNING -> "running", END_REASON_NODE_FAILURE ->
// "node_failure"). Every enum in belay/v1 prefixes its values with its own name in
// UPPER_SNAKE_CASE, which is what is stripped. A number with no value gives its digits.
#pragma once

#include <cctype>
#include <string>
#include <type_traits>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"

namespace belay::v1 {

template <typename E>
requires google::protobuf::is_proto_enum<E>::value std::string ShortName(E value) {
  const google::protobuf::EnumDescriptor* d = google::protobuf::GetEnumDescriptor<E>();
  const google::protobuf::EnumValueDescriptor* v = d->FindValueByNumber(static_cast<int>(value));
  if (v == nullptr) return std::to_string(static_cast<int>(value));
  // "CampaignState" -> "CAMPAIGN_STATE_".
  std::string prefix;
  for (char c : d->name()) {
    if (std::isupper(static_cast<unsigned char>(c)) && !prefix.empty()) prefix.push_back('_');
    prefix.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
  }
  prefix.push_back('_');
  std::string name(v->name());
  if (name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0)
    name.erase(0, prefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace belay::v1
