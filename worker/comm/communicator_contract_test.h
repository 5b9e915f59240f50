// The contract every Communicator implementation meets, as value-parameterized tests: a test
// binary instantiates CommunicatorContract with a way to reach its communicator (under MPI,
// every rank runs the same tests in the same order, so the collectives match up).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "gtest/gtest.h"
#include "worker/comm/communicator.h"

namespace belay::comm {

struct ContractParam {
  std::string name;
  std::function<Communicator&()> communicator;
};

class CommunicatorContract : public ::testing::TestWithParam<ContractParam> {
 protected:
  void SetUp() override { comm().ResetBytesSent(); }
  Communicator& comm() { return GetParam().communicator(); }
};

std::string ContractParamName(const ::testing::TestParamInfo<ContractParam>& info);
// How gtest shows a parameter in failure messages: its name.
void PrintTo(const ContractParam& param, std::ostream* os);

// Rank `rank`'s element i of test buffer `salt`: values over 21 binades with random signs,
// so that adding them in another order usually gives other bits.
float Contribution(int rank, size_t i, uint64_t salt);
// The documented result of a sum over `world_size` ranks: rank-order fp32 additions of the
// contributions, computed here element by element.
float RankOrderSum(int world_size, size_t i, uint64_t salt);
// The same sum added from the last rank down, to show the data is order-sensitive.
float ReverseOrderSum(int world_size, size_t i, uint64_t salt);

}  // namespace belay::comm
