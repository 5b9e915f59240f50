// Shared helpers for the GPU kernel tests: skip without a device, device buffers that start
// poisoned, bf16 conversions. Host code only.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/types.h"

namespace belay::kernels::cuda::testing {

// Empty when a device is usable, else why not.
inline std::string NoDeviceReason() {
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    return absl::StrCat(cudaGetErrorName(err), " (", cudaGetErrorString(err), ")");
  }
  if (count == 0) return "no CUDA device found";
  return "";
}

#define BELAY_REQUIRE_CUDA_DEVICE()                                                         \
  do {                                                                                      \
    const std::string belay_no_device_ = ::belay::kernels::cuda::testing::NoDeviceReason(); \
    if (!belay_no_device_.empty()) GTEST_SKIP() << "no GPU: " << belay_no_device_;          \
  } while (0)

#define BELAY_ASSERT_CUDA_OK(call)                                                         \
  do {                                                                                     \
    cudaError_t belay_err_ = (call);                                                       \
    ASSERT_EQ(belay_err_, cudaSuccess) << #call << ": " << cudaGetErrorString(belay_err_); \
  } while (0)

// A device allocation of n elements of T, filled with 0xff bytes on creation (NaN as float
// and as bf16), so an element a kernel fails to write shows up.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (cudaMalloc(&ptr_, bytes() == 0 ? 1 : bytes()) != cudaSuccess) {
      ADD_FAILURE() << "cudaMalloc of " << bytes() << " bytes failed";
      ptr_ = nullptr;
      return;
    }
    Poison();
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { Upload(host); }
  ~DeviceBuffer() { cudaFree(ptr_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  T* get() const { return ptr_; }
  size_t size() const { return n_; }
  size_t bytes() const { return n_ * sizeof(T); }

  void Poison() { EXPECT_EQ(cudaMemset(ptr_, 0xff, bytes()), cudaSuccess); }
  void Upload(const std::vector<T>& host) {
    ASSERT_EQ(host.size(), n_);
    EXPECT_EQ(cudaMemcpy(ptr_, host.data(), bytes(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  // Waits for all device work, then copies back.
  std::vector<T> Download() const {
    std::vector<T> host(n_);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(host.data(), ptr_, bytes(), cudaMemcpyDeviceToHost), cudaSuccess);
    return host;
  }

 private:
  T* ptr_ = nullptr;
  size_t n_ = 0;
};

// A stream of its own, so launchers are exercised off the default stream.
class Stream {
 public:
  Stream() { EXPECT_EQ(cudaStreamCreate(&s_), cudaSuccess); }
  ~Stream() { cudaStreamDestroy(s_); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return s_; }

 private:
  cudaStream_t s_ = nullptr;
};

inline std::vector<bf16> ToBf16(const std::vector<float>& v) {
  std::vector<bf16> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __float2bfloat16_rn(v[i]);
  return out;
}

inline std::vector<float> ToFloat(const std::vector<bf16>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = __bfloat162float(v[i]);
  return out;
}

// The values a bf16 tensor can hold nearest to v: what a CPU reference is fed so that it sees
// exactly the GPU kernel's inputs.
inline std::vector<float> RoundedToBf16(const std::vector<float>& v) { return ToFloat(ToBf16(v)); }

// ‖got − ref‖ / ‖ref‖ over n elements (‖got − ref‖ when ref is all zero): a whole-tensor
// check that can be tight where elementwise bounds must allow for the occasional large
// rounding of a small element.
inline double RelativeError(const float* got, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(got[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

inline double RelativeError(const std::vector<float>& got, const std::vector<float>& ref) {
  EXPECT_EQ(got.size(), ref.size());
  return RelativeError(got.data(), ref.data(), std::min(got.size(), ref.size()));
}

inline bool SameBytes(const void* a, const void* b, size_t bytes) {
  return std::memcmp(a, b, bytes) == 0;
}

// bf16 keeps 8 significant bits: one rounding is a relative error of at most 2^-8.
inline constexpr double kBf16Eps = 1.0 / 256.0;

// An optimizer's bf16 working copy after an update: the new fp32 master weights rounded once
// (written), or still the poison it started as (the launcher was given no copy to write).
inline void ExpectWorkingCopy(const std::vector<bf16>& copy, const std::vector<float>& master,
                              bool written) {
  ASSERT_EQ(copy.size(), master.size());
  for (size_t i = 0; i < copy.size(); ++i) {
    const float got = __bfloat162float(copy[i]);
    if (!written) {
      ASSERT_TRUE(std::isnan(got)) << "working copy written though null, at " << i;
    } else {
      ASSERT_LE(std::fabs(static_cast<double>(got) - master[i]), kBf16Eps * std::fabs(master[i]))
          << "working copy at " << i << ": " << got << " for master " << master[i];
    }
  }
}

}  // namespace belay::kernels::cuda::testing
