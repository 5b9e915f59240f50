// Device enumeration: sane properties on a GPU machine, a clear reason everywhere else.
#include "kernels/device.h"

#include <gtest/gtest.h>

#include "common/version.h"

namespace belay::kernels {
namespace {

TEST(CudaDevices, ListsUsableDevicesOrSaysWhyNot) {
  absl::StatusOr<std::vector<CudaDevice>> devices = ListCudaDevices();
  if (!devices.ok()) {
    EXPECT_EQ(devices.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_FALSE(devices.status().message().empty());
    GTEST_SKIP() << "no GPU: " << devices.status().message();
  }
  ASSERT_FALSE(devices->empty());
  for (const CudaDevice& d : *devices) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(d.cc_major, 7) << d.name;
    EXPECT_GT(d.memory_bytes, uint64_t{1} << 30) << d.name;
    EXPECT_GT(d.multiprocessors, 0) << d.name;
  }
}

TEST(CudaDevices, RuntimeVersionMatchesBuild) {
  if (kBuiltWithCuda) {
    EXPECT_NE(CudaRuntimeVersion(), "none");
  } else {
    EXPECT_EQ(CudaRuntimeVersion(), "none");
  }
}

}  // namespace
}  // namespace belay::kernels
