// NcclCommunicator (label gpu): the Communicator contract through host-to-device staging, the
// device-side rank-order sum against the CPU one on a large buffer, and id and argument
// checks. One process is one rank: tests/comm/nccl_communicator_test.sh starts one rank, and
// W ranks (one per GPU, joined by an id file) where the machine has W ≥ 2 GPUs. Without a
// device the program says why and exits 77 (ctest's skip code).
#include "worker/comm/nccl_communicator.h"

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/grad_norm.h"
#include "kernels/device.h"
#include "worker/comm/communicator_contract_test.h"
#include "worker/comm/nccl.h"
#include "worker/runtime/rank_env.h"

namespace belay::comm {
namespace {

std::unique_ptr<NcclCommunicator> nccl;

// Device copies of the host buffers of one call, laid out so that the copies overlap exactly
// as the host buffers do (an in-place call stays in place, a misplaced one stays misplaced).
class DeviceMirror {
 public:
  struct Range {
    const void* host;
    size_t bytes;
  };
  ~DeviceMirror() {
    for (void* p : allocations_) cudaFree(p);
  }

  // Maps ranges a and b (one region when they overlap, else one each).
  absl::Status Map(Range a, Range b) {
    auto lo = [](Range r) { return reinterpret_cast<uintptr_t>(r.host); };
    auto hi = [&](Range r) { return lo(r) + r.bytes; };
    if (a.bytes > 0 && b.bytes > 0 && lo(a) < hi(b) && lo(b) < hi(a)) {
      return Region(std::min(lo(a), lo(b)), std::max(hi(a), hi(b)));
    }
    if (a.bytes > 0) BELAY_RETURN_IF_NOT_OK(Region(lo(a), hi(a)));
    if (b.bytes > 0) BELAY_RETURN_IF_NOT_OK(Region(lo(b), hi(b)));
    return absl::OkStatus();
  }

  template <typename T>
  T* Device(T* host) const {
    const uintptr_t h = reinterpret_cast<uintptr_t>(host);
    for (const Mapped& m : regions_) {
      if (h >= m.host && h <= m.host + m.bytes) {
        return reinterpret_cast<T*>(reinterpret_cast<uintptr_t>(m.device) + (h - m.host));
      }
    }
    return nullptr;  // an empty span
  }

  absl::Status CopyBack(void* host, size_t bytes) const {
    if (bytes == 0) return absl::OkStatus();
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpy(host, Device(host), bytes, cudaMemcpyDeviceToHost));
    return absl::OkStatus();
  }

 private:
  struct Mapped {
    uintptr_t host;
    size_t bytes;
    void* device;
  };
  absl::Status Region(uintptr_t begin, uintptr_t end) {
    void* d = nullptr;
    BELAY_CUDA_RETURN_IF_ERROR(cudaMalloc(&d, end - begin));
    allocations_.push_back(d);
    BELAY_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(d, reinterpret_cast<const void*>(begin), end - begin, cudaMemcpyHostToDevice));
    regions_.push_back({begin, end - begin, d});
    return absl::OkStatus();
  }
  std::vector<void*> allocations_;
  std::vector<Mapped> regions_;
};

// The pending NCCL call, then the copy of its output back to the host buffer.
class StagedOperation final : public CommHandle::Operation {
 public:
  StagedOperation(std::unique_ptr<DeviceMirror> mirror, CommHandle inner, void* out,
                  size_t out_bytes)
      : mirror_(std::move(mirror)), inner_(std::move(inner)), out_(out), out_bytes_(out_bytes) {}
  absl::Status Wait() override {
    absl::Status s = inner_.Wait();
    if (s.ok()) s = mirror_->CopyBack(out_, out_bytes_);
    return s;
  }

 private:
  std::unique_ptr<DeviceMirror> mirror_;
  CommHandle inner_;
  void* out_;
  size_t out_bytes_;
};

// The contract tests use host vectors: this communicator copies them to the device, runs the
// NCCL communicator's call on the copies and copies the output back on Wait.
class DeviceStagedCommunicator final : public Communicator {
 public:
  explicit DeviceStagedCommunicator(NcclCommunicator& inner) : inner_(inner) {}
  int rank() const override { return inner_.rank(); }
  int world_size() const override { return inner_.world_size(); }

  CommHandle StartAllReduceSum(std::span<float> data) override {
    return Staged({data.data(), data.size_bytes()}, {nullptr, 0}, data.data(), data.size_bytes(),
                  [&](const DeviceMirror& m) {
                    return inner_.StartAllReduceSum({m.Device(data.data()), data.size()});
                  });
  }
  CommHandle StartReduceScatterSum(std::span<const float> input, std::span<float> shard) override {
    return Staged({input.data(), input.size_bytes()}, {shard.data(), shard.size_bytes()},
                  shard.data(), shard.size_bytes(), [&](const DeviceMirror& m) {
                    return inner_.StartReduceScatterSum({m.Device(input.data()), input.size()},
                                                        {m.Device(shard.data()), shard.size()});
                  });
  }
  CommHandle StartAllGather(std::span<const float> shard, std::span<float> output) override {
    return Staged({shard.data(), shard.size_bytes()}, {output.data(), output.size_bytes()},
                  output.data(), output.size_bytes(), [&](const DeviceMirror& m) {
                    return inner_.StartAllGather({m.Device(shard.data()), shard.size()},
                                                 {m.Device(output.data()), output.size()});
                  });
  }
  absl::Status Broadcast(std::span<std::byte> data, int root) override {
    return inner_.Broadcast(data, root);
  }
  absl::Status Barrier() override { return inner_.Barrier(); }
  absl::Status AllReduceSumInt64(std::span<int64_t> data) override {
    return inner_.AllReduceSumInt64(data);
  }
  absl::Status AllGatherInt64(std::span<const int64_t> shard, std::span<int64_t> output) override {
    return inner_.AllGatherInt64(shard, output);
  }
  absl::Status AllGatherBytes(std::span<const std::byte> shard,
                              std::span<std::byte> output) override {
    return inner_.AllGatherBytes(shard, output);
  }
  CommStats bytes_sent() const override { return inner_.bytes_sent(); }
  void ResetBytesSent() override { inner_.ResetBytesSent(); }

 private:
  CommHandle Staged(DeviceMirror::Range a, DeviceMirror::Range b, void* out, size_t out_bytes,
                    const std::function<CommHandle(const DeviceMirror&)>& start) {
    auto mirror = std::make_unique<DeviceMirror>();
    if (absl::Status s = mirror->Map(a, b); !s.ok()) return CommHandle(std::move(s));
    CommHandle inner = start(*mirror);
    return CommHandle(
        std::make_unique<StagedOperation>(std::move(mirror), std::move(inner), out, out_bytes));
  }
  NcclCommunicator& inner_;
};

std::unique_ptr<DeviceStagedCommunicator> staged;

INSTANTIATE_TEST_SUITE_P(Nccl, CommunicatorContract,
                         ::testing::Values(ContractParam{
                             "Nccl", []() -> Communicator& { return *staged; }}),
                         ContractParamName);

TEST(NcclCommunicator, LargeDeviceSumHasTheRankOrderBitsInPlaceAndNot) {
  const int w = nccl->world_size(), r = nccl->rank();
  const size_t shard = (1 << 20) + 5;
  std::vector<float> host(shard * static_cast<size_t>(w));
  for (size_t i = 0; i < host.size(); ++i) host[i] = Contribution(r, i, 70);
  float* dev = nullptr;
  float* out = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, host.size() * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&out, shard * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(dev, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice),
            cudaSuccess);
  // Into a separate shard, then in place into this rank's block.
  ASSERT_TRUE(nccl->ReduceScatterSum({dev, host.size()}, {out, shard}).ok());
  ASSERT_TRUE(
      nccl->ReduceScatterSum({dev, host.size()}, {dev + static_cast<size_t>(r) * shard, shard})
          .ok());
  std::vector<float> got(shard), in_place(shard);
  ASSERT_EQ(cudaMemcpy(got.data(), out, shard * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  ASSERT_EQ(cudaMemcpy(in_place.data(), dev + static_cast<size_t>(r) * shard, shard * sizeof(float),
                       cudaMemcpyDeviceToHost),
            cudaSuccess);
  size_t differ = 0;
  for (size_t i = 0; i < shard; ++i) {
    const uint32_t want =
        std::bit_cast<uint32_t>(RankOrderSum(w, static_cast<size_t>(r) * shard + i, 70));
    if (std::bit_cast<uint32_t>(got[i]) != want || std::bit_cast<uint32_t>(in_place[i]) != want)
      ++differ;
  }
  EXPECT_EQ(differ, 0u) << "of " << shard << " elements";
  cudaFree(dev);
  cudaFree(out);
}

// The input is written on another stream, behind milliseconds of other kernels there, and
// the reduce-scatter is ordered after it only through OrderAfter: the host does not wait for
// that stream. Started too early, the collective would read the poisoned buffer.
TEST(NcclCommunicator, ACollectiveOrderedAfterAnEventReadsWhatItsStreamWrote) {
  const int w = nccl->world_size(), r = nccl->rank();
  const size_t shard = (size_t{64} << 20) / static_cast<size_t>(w);  // 256 MiB in all
  const size_t n = shard * static_cast<size_t>(w);
  std::vector<float> host(n);
  for (size_t i = 0; i < n; ++i) host[i] = Contribution(r, i, 71);
  float *src = nullptr, *busy = nullptr, *dev = nullptr;
  ASSERT_EQ(cudaMalloc(&src, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&busy, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dev, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(src, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_EQ(cudaMemset(busy, 0, n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(cudaMemset(dev, 0xff, n * sizeof(float)), cudaSuccess);  // NaN
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  cudaStream_t writer = nullptr;
  cudaEvent_t written = nullptr;
  ASSERT_EQ(cudaStreamCreateWithFlags(&writer, cudaStreamNonBlocking), cudaSuccess);
  ASSERT_EQ(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), cudaSuccess);
  for (int k = 0; k < 40; ++k)
    ASSERT_TRUE(kernels::cuda::Accumulate(busy, src, static_cast<int64_t>(n), writer).ok());
  ASSERT_EQ(cudaMemcpyAsync(dev, src, n * sizeof(float), cudaMemcpyDeviceToDevice, writer),
            cudaSuccess);
  ASSERT_EQ(cudaEventRecord(written, writer), cudaSuccess);
  ASSERT_TRUE(nccl->OrderAfter(written).ok());
  float* mine = dev + static_cast<size_t>(r) * shard;
  ASSERT_TRUE(nccl->ReduceScatterSum({dev, n}, {mine, shard}).ok());
  std::vector<float> got(shard);
  ASSERT_EQ(cudaMemcpy(got.data(), mine, shard * sizeof(float), cudaMemcpyDeviceToHost),
            cudaSuccess);
  size_t differ = 0;
  for (size_t i = 0; i < shard; ++i) {
    const uint32_t want =
        std::bit_cast<uint32_t>(RankOrderSum(w, static_cast<size_t>(r) * shard + i, 71));
    if (std::bit_cast<uint32_t>(got[i]) != want) ++differ;
  }
  EXPECT_EQ(differ, 0u) << "of " << shard << " elements";
  EXPECT_EQ(nccl->OrderAfter(nullptr).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_EQ(cudaStreamSynchronize(writer), cudaSuccess);
  cudaEventDestroy(written);
  cudaStreamDestroy(writer);
  cudaFree(dev);
  cudaFree(busy);
  cudaFree(src);
}

TEST(NcclCommunicator, IdsHaveTheirSizeAndBadOnesAreRefused) {
  absl::StatusOr<std::string> id = NewNcclId();
  ASSERT_TRUE(id.ok()) << id.status();
  EXPECT_EQ(id->size(), kNcclIdBytes);
  EXPECT_EQ(NcclCommunicator::Create("short", 0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NcclCommunicator::Create(*id, 2, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(NcclBuilt());
}

std::string ReadFile(const char* path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace
}  // namespace belay::comm

// --new-id FILE writes a fresh id (the script's rank 0 of a multi-GPU run); otherwise the
// rank comes from BELAY_RANK / BELAY_WORLD_SIZE / BELAY_LOCAL_RANK and the id from the file
// BELAY_NCCL_TEST_ID (a single rank makes its own).
int main(int argc, char** argv) {
  using namespace belay;
  absl::StatusOr<std::vector<kernels::CudaDevice>> devices = kernels::ListCudaDevices();
  if (!devices.ok()) {
    std::printf("SKIP: no CUDA device: %s\n", std::string(devices.status().message()).c_str());
    return 77;
  }
  if (argc == 2 && std::string(argv[1]) == "--device-count") {
    std::printf("%zu\n", devices->size());
    return 0;
  }
  if (argc == 3 && std::string(argv[1]) == "--new-id") {
    absl::StatusOr<std::string> id = comm::NewNcclId();
    if (!id.ok()) return 1;
    std::ofstream(argv[2], std::ios::binary) << *id;
    return 0;
  }
  absl::StatusOr<runtime::RankInfo> info =
      runtime::RankInfoFromEnvironment(runtime::ProcessEnvironment());
  if (!info.ok()) {
    std::fprintf(stderr, "%s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<int> device = runtime::ChooseCudaDevice(*info, static_cast<int>(devices->size()));
  if (!device.ok() || cudaSetDevice(*device) != cudaSuccess) {
    std::fprintf(stderr, "cannot choose a device: %s\n",
                 std::string(device.status().message()).c_str());
    return 1;
  }
  std::string id;
  if (info->world_size == 1) {
    id = comm::NewNcclId().value_or("");
  } else if (const char* file = std::getenv("BELAY_NCCL_TEST_ID"); file != nullptr) {
    id = comm::ReadFile(file);
  }
  absl::StatusOr<std::unique_ptr<comm::NcclCommunicator>> c =
      comm::NcclCommunicator::Create(id, info->rank, info->world_size);
  if (!c.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", info->rank, std::string(c.status().message()).c_str());
    return 1;
  }
  comm::nccl = std::move(*c);
  comm::staged = std::make_unique<comm::DeviceStagedCommunicator>(*comm::nccl);
  ::testing::InitGoogleTest(&argc, argv);
  const int rc = RUN_ALL_TESTS();
  comm::staged.reset();
  comm::nccl.reset();
  return rc;
}
