// GPT-2 forward, backward and AdamW on one GPU (see cuda_gpt2.h).
#include "worker/model/cuda_gpt2.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/adamw.h"
#include "kernels/cuda/attention.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/flash_attention.h"
#include "kernels/cuda/grad_norm.h"
#include "kernels/cuda/layernorm.h"
#include "kernels/cuda/softmax_xent.h"

namespace belay::model {

namespace kc = belay::kernels::cuda;

CudaGpt2::CudaGpt2(const ParameterLayout& layout, int B, int T, bool fused_attention,
                   const ShardedOptimizer* sharded)
    : layout_(layout), B_(B), T_(T), flash_(fused_attention), groups_(GradientGroups(layout)) {
  if (sharded != nullptr) sharded_ = *sharded;
}

size_t CudaGpt2::StateSize() const {
  return static_cast<size_t>(sharded_ ? sharded_->shard_size : layout_.total());
}

CudaGpt2::~CudaGpt2() {
  if (stream_ != nullptr) cudaStreamSynchronize(stream_);
  blas_.reset();
  for (void* p : allocations_) cudaFree(p);
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

template <typename E>
absl::Status CudaGpt2::Alloc(E** ptr, size_t count) {
  const size_t bytes = std::max<size_t>(count, 1) * sizeof(E);
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: the caller may retry with a smaller micro-batch
    return absl::ResourceExhaustedError(absl::StrCat("GPU memory: ", bytes,
                                                     " more bytes do not fit after ", device_bytes_,
                                                     " (B=", B_, ", T=", T_, ")"));
  }
  BELAY_CUDA_RETURN_IF_ERROR(err);
  allocations_.push_back(p);
  device_bytes_ += bytes;
  *ptr = static_cast<E*>(p);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaGpt2>> CudaGpt2::Create(const ParameterLayout& layout, int B,
                                                           int T, Attention attention,
                                                           const ShardedOptimizer* sharded) {
  const Gpt2Config& c = layout.config();
  if (B <= 0 || T <= 0 || T > c.max_seq_len || T % 8 != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPU micro-batch B=", B, " T=", T,
                                                   ": T must be a multiple of 8 and at most ",
                                                   c.max_seq_len));
  }
  if (c.d_model % c.n_head != 0 || (c.d_model / c.n_head) % 8 != 0 || c.d_model % 8 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("GPU model needs d_model and head size multiples of 8, got d_model ",
                     c.d_model, " with ", c.n_head, " heads"));
  }
  const bool supported = kc::FlashAttentionSupports(T, c.d_model, c.n_head);
  const bool fused = attention == Attention::kFused || (attention == Attention::kAuto && supported);
  if (fused && !supported) {
    return absl::InvalidArgumentError(
        absl::StrCat("fused attention needs head size 64 and T a multiple of 64, got d_model ",
                     c.d_model, " with ", c.n_head, " heads and T=", T));
  }
  if (sharded != nullptr) {
    for (const ShardedOptimizer::Piece& p : sharded->pieces) {
      if (p.size < 0 || p.flat_offset < 0 || p.flat_offset + p.size > layout.total() ||
          p.shard_offset < 0 || p.shard_offset + p.size > sharded->shard_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer shard piece [", p.flat_offset, ", +", p.size, ") at ", p.shard_offset,
            " does not fit ", layout.total(), " parameters / a shard of ", sharded->shard_size));
      }
    }
    if (sharded->group_padded.empty()) {
      if (sharded->staging < 1)
        return absl::InvalidArgumentError("optimizer shard without staging");
    } else {
      const std::vector<std::vector<Segment>> groups = GradientGroups(layout);
      if (sharded->group_padded.size() != groups.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("sharded gradients: ", sharded->group_padded.size(),
                         " padded group sizes for ", groups.size(), " gradient groups"));
      }
      for (size_t g = 0; g < groups.size(); ++g) {
        int64_t elements = 0;
        for (const Segment& seg : groups[g]) elements += seg.size;
        if (sharded->group_padded[g] < elements) {
          return absl::InvalidArgumentError(
              absl::StrCat("sharded gradients: gradient group ", g, " has ", elements,
                           " elements, padded to only ", sharded->group_padded[g]));
        }
      }
    }
  }
  std::unique_ptr<CudaGpt2> m(new CudaGpt2(layout, B, T, fused, sharded));
  BELAY_RETURN_IF_NOT_OK(m->Allocate());
  return m;
}

absl::Status CudaGpt2::Allocate() {
  const Gpt2Config& c = layout_.config();
  const size_t L = static_cast<size_t>(c.n_layer), C = static_cast<size_t>(c.d_model);
  const size_t NH = static_cast<size_t>(c.n_head), Vp = static_cast<size_t>(c.padded_vocab);
  const size_t N = static_cast<size_t>(B_) * static_cast<size_t>(T_);
  const size_t P = static_cast<size_t>(layout_.total());
  const size_t att =
      static_cast<size_t>(B_) * NH * static_cast<size_t>(T_) * static_cast<size_t>(T_);
  BELAY_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  absl::StatusOr<std::unique_ptr<kc::Blas>> blas = kc::Blas::Create();
  if (!blas.ok()) return blas.status();
  blas_ = std::move(*blas);

  BELAY_RETURN_IF_NOT_OK(Alloc(&params_, P));
  BELAY_RETURN_IF_NOT_OK(Alloc(&master_, StateSize()));
  if (!sharded_gradients()) BELAY_RETURN_IF_NOT_OK(Alloc(&grads_, P));
  BELAY_RETURN_IF_NOT_OK(Alloc(&m_, StateSize()));
  BELAY_RETURN_IF_NOT_OK(Alloc(&v_, StateSize()));
  if (sharded_) BELAY_RETURN_IF_NOT_OK(Alloc(&grad_shard_, StateSize()));
  if (sharded_gradients()) {
    // The embeddings' group is the last; the others share the ring, whose second buffer
    // starts 256-byte aligned like the first (cuBLASLt picks its algorithm by alignment).
    const std::vector<int64_t>& padded = sharded_->group_padded;
    ring_size_ = (*std::max_element(padded.begin(), padded.end() - 1) + 63) / 64 * 64;
    BELAY_RETURN_IF_NOT_OK(Alloc(&embed_buffer_, static_cast<size_t>(padded.back())));
    BELAY_RETURN_IF_NOT_OK(Alloc(&ring_, 2 * static_cast<size_t>(ring_size_)));
  } else if (sharded_) {
    BELAY_RETURN_IF_NOT_OK(Alloc(&staging_, 2 * static_cast<size_t>(sharded_->staging)));
  }
  BELAY_RETURN_IF_NOT_OK(Alloc(&inputs_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&targets_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&mask_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&bucket_ids_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&bucket_starts_, N + 1));
  BELAY_RETURN_IF_NOT_OK(Alloc(&bucket_positions_, N));

  BELAY_RETURN_IF_NOT_OK(Alloc(&encoded_, N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln1_, L * N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln1_mean_, L * N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln1_rstd_, L * N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&qkv_, L * N * 3 * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&atty_, L * N * C));
  if (flash_) {
    BELAY_RETURN_IF_NOT_OK(
        Alloc(&lse_, L * static_cast<size_t>(B_) * NH * static_cast<size_t>(T_)));
  } else {
    BELAY_RETURN_IF_NOT_OK(Alloc(&att_, L * att));
  }
  BELAY_RETURN_IF_NOT_OK(Alloc(&residual2_, L * N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln2_, L * N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln2_mean_, L * N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&ln2_rstd_, L * N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&fch_, L * N * 4 * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&fch_gelu_, L * N * 4 * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&residual3_, L * N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&lnf_, N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&lnf_mean_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&lnf_rstd_, N));
  BELAY_RETURN_IF_NOT_OK(Alloc(&logits_, N * Vp));
  BELAY_RETURN_IF_NOT_OK(Alloc(&losses_, N));

  BELAY_RETURN_IF_NOT_OK(Alloc(&proj_, N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&dres_, N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&dc_, N * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&d3c_, N * 3 * C));
  BELAY_RETURN_IF_NOT_OK(Alloc(&d4c_, N * 4 * C));
  const int iN = B_ * T_, iC = c.d_model;
  if (!flash_) {
    BELAY_RETURN_IF_NOT_OK(
        Alloc(&att_scratch_, std::max(kc::AttentionForwardScratch(B_, T_, iC, c.n_head),
                                      kc::AttentionBackwardScratch(B_, T_, iC, c.n_head))));
  }
  float_scratch_size_ =
      std::max({kc::MatmulBackwardScratch(iN, 4 * iC), kc::LayerNormBackwardScratch(iN, iC),
                kc::FlashAttentionBackwardScratch(B_, T_, c.n_head)});
  BELAY_RETURN_IF_NOT_OK(Alloc(&float_scratch_, float_scratch_size_));
  BELAY_RETURN_IF_NOT_OK(Alloc(&norm_, 1));
  BELAY_RETURN_IF_NOT_OK(Alloc(&norm_scratch_, kc::SumOfSquaresScratch()));
  return ZeroGradients();
}

absl::Status CudaGpt2::SetParameters(const float* host_params) {
  const size_t P = static_cast<size_t>(layout_.total()), S = StateSize();
  // All parameters in fp32 on the device: the master weights themselves, or (sharded) a
  // temporary buffer; their bf16 copy from there.
  float* full = master_;
  if (sharded_) BELAY_CUDA_RETURN_IF_ERROR(cudaMallocAsync(&full, P * sizeof(float), stream_));
  absl::Status s = kernels::CudaStatus(
      cudaMemcpyAsync(full, host_params, P * sizeof(float), cudaMemcpyHostToDevice, stream_),
      "cudaMemcpyAsync", __FILE__, __LINE__);
  if (s.ok()) s = kc::ConvertToBf16(full, params_, static_cast<int64_t>(P), stream_);
  if (sharded_) BELAY_CUDA_RETURN_IF_ERROR(cudaFreeAsync(full, stream_));
  BELAY_RETURN_IF_NOT_OK(s);
  if (sharded_) {
    // The pieces' master weights; zero elsewhere in the shard.
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(master_, 0, S * sizeof(float), stream_));
    for (const ShardedOptimizer::Piece& p : sharded_->pieces) {
      BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          master_ + p.shard_offset, host_params + p.flat_offset,
          static_cast<size_t>(p.size) * sizeof(float), cudaMemcpyHostToDevice, stream_));
    }
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(grad_shard_, 0, S * sizeof(float), stream_));
  }
  if (grads_ != nullptr)
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(grads_, 0, P * sizeof(float), stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(m_, 0, S * sizeof(float), stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(v_, 0, S * sizeof(float), stream_));
  return Synchronize();
}

absl::Status CudaGpt2::GetParameters(float* host_params) const {
  if (sharded_) {
    // The bf16 copy everywhere (bf16 -> fp32 is exact: the upper 16 bits), then the pieces'
    // master weights over it.
    const size_t P = static_cast<size_t>(layout_.total());
    std::vector<uint16_t> copy(P);
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(copy.data(), params_, P * sizeof(uint16_t),
                                               cudaMemcpyDeviceToHost, stream_));
    BELAY_RETURN_IF_NOT_OK(Synchronize());
    for (size_t i = 0; i < P; ++i) {
      const uint32_t bits = uint32_t{copy[i]} << 16;
      std::memcpy(host_params + i, &bits, sizeof(float));
    }
    for (const ShardedOptimizer::Piece& p : sharded_->pieces) {
      BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(
          host_params + p.flat_offset, master_ + p.shard_offset,
          static_cast<size_t>(p.size) * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    }
    return Synchronize();
  }
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_params, master_,
                                             static_cast<size_t>(layout_.total()) * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  return Synchronize();
}

absl::Status CudaGpt2::GetGradients(float* host_grads) const {
  if (grads_ == nullptr)
    return absl::FailedPreconditionError("GetGradients with sharded gradients: no whole gradient");
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_grads, grads_,
                                             static_cast<size_t>(layout_.total()) * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  return Synchronize();
}

absl::Status CudaGpt2::GetMoments(float* host_m, float* host_v) const {
  const size_t bytes = StateSize() * sizeof(float);
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_m, m_, bytes, cudaMemcpyDeviceToHost, stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host_v, v_, bytes, cudaMemcpyDeviceToHost, stream_));
  return Synchronize();
}

absl::Status CudaGpt2::SetMoments(const float* host_m, const float* host_v) {
  const size_t bytes = StateSize() * sizeof(float);
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m_, host_m, bytes, cudaMemcpyHostToDevice, stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(v_, host_v, bytes, cudaMemcpyHostToDevice, stream_));
  return Synchronize();
}

absl::StatusOr<std::vector<float>> CudaGpt2::GetLosses() const {
  std::vector<float> out(static_cast<size_t>(B_) * static_cast<size_t>(T_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), losses_, out.size() * sizeof(float),
                                             cudaMemcpyDeviceToHost, stream_));
  BELAY_RETURN_IF_NOT_OK(Synchronize());
  return out;
}

absl::Status CudaGpt2::ZeroGradients() {
  if (grads_ == nullptr) {
    BELAY_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(grad_shard_, 0, StateSize() * sizeof(float), stream_));
  } else {
    BELAY_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(grads_, 0, static_cast<size_t>(layout_.total()) * sizeof(float), stream_));
  }
  return absl::OkStatus();
}

float* CudaGpt2::device_group_buffer(int group) {
  if (!sharded_gradients() || group < 0 || static_cast<size_t>(group) >= groups_.size())
    return nullptr;
  if (static_cast<size_t>(group) + 1 == groups_.size()) return embed_buffer_;
  return ring_ + (group % 2) * ring_size_;
}

int64_t CudaGpt2::group_buffer_size(int group) const {
  if (!sharded_gradients() || group < 0 || static_cast<size_t>(group) >= groups_.size()) return 0;
  return sharded_->group_padded[static_cast<size_t>(group)];
}

absl::Status CudaGpt2::AddToGradientShard(const float* from, int64_t n, int64_t shard_offset,
                                          bool accumulate) {
  if (!sharded_gradients())
    return absl::FailedPreconditionError("AddToGradientShard without sharded gradients");
  if (n < 0 || shard_offset < 0 || shard_offset + n > sharded_->shard_size ||
      (from == nullptr && n > 0)) {
    return absl::InvalidArgumentError(absl::StrCat("AddToGradientShard: ", n, " elements at ",
                                                   shard_offset, " of a gradient shard of ",
                                                   sharded_->shard_size));
  }
  float* to = grad_shard_ + shard_offset;
  if (accumulate) return kc::Accumulate(to, from, n, stream_);
  if (n > 0) {
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(to, from, static_cast<size_t>(n) * sizeof(float),
                                               cudaMemcpyDeviceToDevice, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaGpt2::Synchronize() const {
  BELAY_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
  return absl::OkStatus();
}

namespace {

// Named pointers into a device buffer laid out like the parameters.
template <typename T>
ParameterLayout::Views<T> BindDevice(const ParameterLayout& layout, T* base) {
  auto at = [&](const char* name) { return base + layout.at(name).offset; };
  ParameterLayout::Views<T> v{};
  v.wte = at("wte");
  v.wpe = at("wpe");
  v.ln1w = at("h.ln_1.weight");
  v.ln1b = at("h.ln_1.bias");
  v.qkvw = at("h.attn.c_attn.weight");
  v.qkvb = at("h.attn.c_attn.bias");
  v.attprojw = at("h.attn.c_proj.weight");
  v.attprojb = at("h.attn.c_proj.bias");
  v.ln2w = at("h.ln_2.weight");
  v.ln2b = at("h.ln_2.bias");
  v.fcw = at("h.mlp.c_fc.weight");
  v.fcb = at("h.mlp.c_fc.bias");
  v.fcprojw = at("h.mlp.c_proj.weight");
  v.fcprojb = at("h.mlp.c_proj.bias");
  v.lnfw = at("ln_f.weight");
  v.lnfb = at("ln_f.bias");
  return v;
}

}  // namespace

absl::StatusOr<double> CudaGpt2::Forward(const int32_t* inputs, const int32_t* targets,
                                         const uint8_t* mask, float loss_scale) {
  const Gpt2Config& c = layout_.config();
  const int C = c.d_model, NH = c.n_head, L = c.n_layer, Vp = c.padded_vocab;
  const int N = B_ * T_;
  const size_t NC = static_cast<size_t>(N) * static_cast<size_t>(C);
  const size_t att = static_cast<size_t>(B_) * static_cast<size_t>(NH) * static_cast<size_t>(T_) *
                     static_cast<size_t>(T_);
  const size_t C1 = static_cast<size_t>(C), N1 = static_cast<size_t>(N);
  for (int i = 0; i < N; ++i) {
    if (inputs[i] < 0 || inputs[i] >= c.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("input token ", inputs[i], " at ", i,
                                                     " outside the vocabulary of ", c.vocab_size));
    }
    if (mask[i] != 0 && (targets[i] < 0 || targets[i] >= c.vocab_size)) {
      return absl::InvalidArgumentError(absl::StrCat("target token ", targets[i], " at ", i,
                                                     " outside the vocabulary of ", c.vocab_size));
    }
  }
  BELAY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(inputs_, inputs, N1 * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  BELAY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(targets_, targets, N1 * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(mask_, mask, N1, cudaMemcpyHostToDevice, stream_));
  have_grad_pass_ = loss_scale > 0;
  if (have_grad_pass_) {
    // The encoder's backward groups positions by token; the host has the tokens now.
    const kc::EncoderBuckets buckets = kc::BucketTokens(inputs, N);
    n_bucket_ids_ = static_cast<int>(buckets.ids.size());
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bucket_ids_, buckets.ids.data(),
                                               buckets.ids.size() * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, stream_));
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bucket_starts_, buckets.starts.data(),
                                               buckets.starts.size() * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, stream_));
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(bucket_positions_, buckets.positions.data(),
                                               buckets.positions.size() * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, stream_));
    // The copies read pageable host memory that goes away on return.
    BELAY_RETURN_IF_NOT_OK(Synchronize());
  }
  auto p = BindDevice<const bf16>(layout_, params_);
  kc::Blas& blas = *blas_;

  BELAY_RETURN_IF_NOT_OK(kc::EncoderForward(encoded_, inputs_, p.wte, p.wpe, B_, T_, C, stream_));
  BELAY_RETURN_IF_NOT_OK(kc::ResidualLayerNormForward(nullptr, ln1_, ln1_mean_, ln1_rstd_, encoded_,
                                                      nullptr, p.ln1w, p.ln1b, N, C, stream_));
  for (int l = 0; l < L; ++l) {
    const size_t lc = static_cast<size_t>(l);
    const bf16* residual = l == 0 ? encoded_ : residual3_ + (lc - 1) * NC;
    bf16* ln1 = ln1_ + lc * NC;
    bf16* qkv = qkv_ + lc * NC * 3;
    bf16* atty = atty_ + lc * NC;
    bf16* residual2 = residual2_ + lc * NC;
    bf16* ln2 = ln2_ + lc * NC;
    bf16* fch = fch_ + lc * NC * 4;
    bf16* fch_gelu = fch_gelu_ + lc * NC * 4;
    bf16* residual3 = residual3_ + lc * NC;

    BELAY_RETURN_IF_NOT_OK(kc::MatmulForward(blas, qkv, nullptr, ln1, p.qkvw + lc * 3 * C1 * C1,
                                             p.qkvb + lc * 3 * C1, N, C, 3 * C, stream_));
    if (flash_) {
      BELAY_RETURN_IF_NOT_OK(
          kc::FlashAttentionForward(atty, lse_ + lc * N1 * NH, qkv, B_, T_, C, NH, stream_));
    } else {
      BELAY_RETURN_IF_NOT_OK(kc::AttentionForward(blas, atty, att_ + lc * att, att_scratch_, qkv,
                                                  B_, T_, C, NH, stream_));
    }
    BELAY_RETURN_IF_NOT_OK(kc::MatmulForward(blas, proj_, nullptr, atty, p.attprojw + lc * C1 * C1,
                                             p.attprojb + lc * C1, N, C, C, stream_));
    BELAY_RETURN_IF_NOT_OK(kc::ResidualLayerNormForward(
        residual2, ln2, ln2_mean_ + lc * N1, ln2_rstd_ + lc * N1, residual, proj_, p.ln2w + lc * C1,
        p.ln2b + lc * C1, N, C, stream_));
    BELAY_RETURN_IF_NOT_OK(kc::MatmulForward(blas, fch_gelu, fch, ln2, p.fcw + lc * 4 * C1 * C1,
                                             p.fcb + lc * 4 * C1, N, C, 4 * C, stream_));
    BELAY_RETURN_IF_NOT_OK(kc::MatmulForward(blas, proj_, nullptr, fch_gelu,
                                             p.fcprojw + lc * 4 * C1 * C1, p.fcprojb + lc * C1, N,
                                             4 * C, C, stream_));
    // The residual add, fused with the LayerNorm that reads it next: the next layer's ln_1,
    // or ln_f after the last layer.
    if (l + 1 < L) {
      BELAY_RETURN_IF_NOT_OK(kc::ResidualLayerNormForward(
          residual3, ln1_ + (lc + 1) * NC, ln1_mean_ + (lc + 1) * N1, ln1_rstd_ + (lc + 1) * N1,
          residual2, proj_, p.ln1w + (lc + 1) * C1, p.ln1b + (lc + 1) * C1, N, C, stream_));
    } else {
      BELAY_RETURN_IF_NOT_OK(kc::ResidualLayerNormForward(
          residual3, lnf_, lnf_mean_, lnf_rstd_, residual2, proj_, p.lnfw, p.lnfb, N, C, stream_));
    }
  }
  BELAY_RETURN_IF_NOT_OK(
      kc::MatmulForward(blas, logits_, nullptr, lnf_, p.wte, nullptr, N, C, Vp, stream_));
  BELAY_RETURN_IF_NOT_OK(kc::SoftmaxCrossEntropy(logits_, losses_, targets_, mask_, loss_scale,
                                                 have_grad_pass_, N, c.vocab_size, Vp, stream_));
  absl::StatusOr<std::vector<float>> losses = GetLosses();
  if (!losses.ok()) return losses.status();
  double sum = 0;  // in position order, on the host: the same sum every run
  for (float x : *losses) sum += x;
  return sum;
}

absl::Status CudaGpt2::Backward(BackwardHook* hook) {
  if (!have_grad_pass_) {
    return absl::FailedPreconditionError("Backward needs a Forward with loss_scale > 0 first");
  }
  have_grad_pass_ = false;  // dlogits are consumed
  const Gpt2Config& c = layout_.config();
  const int C = c.d_model, NH = c.n_head, L = c.n_layer, Vp = c.padded_vocab;
  const int N = B_ * T_;
  const size_t NC = static_cast<size_t>(N) * static_cast<size_t>(C);
  const size_t att = static_cast<size_t>(B_) * static_cast<size_t>(NH) * static_cast<size_t>(T_) *
                     static_cast<size_t>(T_);
  const size_t C1 = static_cast<size_t>(C), N1 = static_cast<size_t>(N);
  auto p = BindDevice<const bf16>(layout_, params_);
  kc::Blas& blas = *blas_;
  float* fs = float_scratch_;
  // Where group g's gradients go: its places in the whole gradient, or (stage 2) its group
  // buffer, cleared once the caller has let go of it.
  ParameterLayout::Views<float> g{};
  std::vector<float*> into(layout_.tensors().size());
  auto acquire = [&](int group) -> absl::Status {
    const std::vector<Segment>& segments = groups_[static_cast<size_t>(group)];
    if (grads_ != nullptr) {
      PointAtFlat(segments, grads_, into);
    } else {
      PointAtPacked(segments, device_group_buffer(group), into);
    }
    if (hook != nullptr) BELAY_RETURN_IF_NOT_OK(hook->Acquire(group, into));
    g = ParameterLayout::ViewsOf(into);
    if (grads_ != nullptr) return absl::OkStatus();
    BELAY_CUDA_RETURN_IF_ERROR(
        cudaMemsetAsync(device_group_buffer(group), 0,
                        static_cast<size_t>(group_buffer_size(group)) * sizeof(float), stream_));
    return absl::OkStatus();
  };
  auto release = [&](int group) {
    return hook != nullptr ? hook->Release(group) : absl::OkStatus();
  };

  // Output head (tied to wte): dlnf = dlogits · wte, dwte += dlogitsᵀ · lnf. The embeddings'
  // gradients stay open for the whole pass (the encoder adds into them last).
  BELAY_RETURN_IF_NOT_OK(acquire(L + 1));
  const ParameterLayout::Views<float> ge = g;
  BELAY_RETURN_IF_NOT_OK(kc::MatmulBackward(blas, dc_, ge.wte, nullptr, fs, logits_, lnf_, p.wte,
                                            nullptr, N, C, Vp, stream_));
  BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(dres_, 0, NC * sizeof(bf16), stream_));
  BELAY_RETURN_IF_NOT_OK(acquire(0));
  BELAY_RETURN_IF_NOT_OK(kc::LayerNormBackward(dres_, g.lnfw, g.lnfb, fs, dc_,
                                               residual3_ + static_cast<size_t>(L - 1) * NC, p.lnfw,
                                               lnf_mean_, lnf_rstd_, N, C, stream_));
  BELAY_RETURN_IF_NOT_OK(release(0));  // ln_f
  // dres_ holds the gradient of the residual stream; each block's LayerNorm backward adds its
  // path into it, the projections read it as their output gradient.
  for (int l = L - 1; l >= 0; --l) {
    const size_t lc = static_cast<size_t>(l);
    const bf16* residual = l == 0 ? encoded_ : residual3_ + (lc - 1) * NC;
    const bf16* ln1 = ln1_ + lc * NC;
    const bf16* qkv = qkv_ + lc * NC * 3;
    const bf16* atty = atty_ + lc * NC;
    const bf16* residual2 = residual2_ + lc * NC;
    const bf16* ln2 = ln2_ + lc * NC;
    const bf16* fch = fch_ + lc * NC * 4;
    const bf16* fch_gelu = fch_gelu_ + lc * NC * 4;
    BELAY_RETURN_IF_NOT_OK(acquire(L - l));  // g: layer l's slices

    // MLP: d(fch) through the GELU in the epilogue, then the fc layer.
    BELAY_RETURN_IF_NOT_OK(kc::MatmulBackward(blas, d4c_, g.fcprojw, g.fcprojb, fs, dres_, fch_gelu,
                                              p.fcprojw + lc * 4 * C1 * C1, fch, N, 4 * C, C,
                                              stream_));
    BELAY_RETURN_IF_NOT_OK(kc::MatmulBackward(blas, dc_, g.fcw, g.fcb, fs, d4c_, ln2,
                                              p.fcw + lc * 4 * C1 * C1, nullptr, N, C, 4 * C,
                                              stream_));
    BELAY_RETURN_IF_NOT_OK(kc::LayerNormBackward(dres_, g.ln2w, g.ln2b, fs, dc_, residual2,
                                                 p.ln2w + lc * C1, ln2_mean_ + lc * N1,
                                                 ln2_rstd_ + lc * N1, N, C, stream_));
    // Attention.
    BELAY_RETURN_IF_NOT_OK(kc::MatmulBackward(blas, dc_, g.attprojw, g.attprojb, fs, dres_, atty,
                                              p.attprojw + lc * C1 * C1, nullptr, N, C, C,
                                              stream_));
    if (flash_) {
      BELAY_RETURN_IF_NOT_OK(kc::FlashAttentionBackward(
          d3c_, fs, dc_, qkv, atty, lse_ + lc * N1 * NH, B_, T_, C, NH, stream_));
    } else {
      BELAY_RETURN_IF_NOT_OK(kc::AttentionBackward(blas, d3c_, att_scratch_, dc_, qkv,
                                                   att_ + lc * att, B_, T_, C, NH, stream_));
    }
    BELAY_RETURN_IF_NOT_OK(kc::MatmulBackward(blas, dc_, g.qkvw, g.qkvb, fs, d3c_, ln1,
                                              p.qkvw + lc * 3 * C1 * C1, nullptr, N, C, 3 * C,
                                              stream_));
    BELAY_RETURN_IF_NOT_OK(kc::LayerNormBackward(dres_, g.ln1w, g.ln1b, fs, dc_, residual,
                                                 p.ln1w + lc * C1, ln1_mean_ + lc * N1,
                                                 ln1_rstd_ + lc * N1, N, C, stream_));
    BELAY_RETURN_IF_NOT_OK(release(L - l));  // layer l
  }
  kc::EncoderBucketsView view{bucket_ids_, bucket_starts_, bucket_positions_, n_bucket_ids_};
  BELAY_RETURN_IF_NOT_OK(kc::EncoderBackward(ge.wte, ge.wpe, dres_, view, B_, T_, C, stream_));
  return release(L + 1);  // embeddings
}

absl::StatusOr<double> CudaGpt2::GradientSumOfSquares() {
  if (grads_ == nullptr)
    return absl::FailedPreconditionError(
        "GradientSumOfSquares with sharded gradients: use GradientShardSumOfSquares");
  BELAY_RETURN_IF_NOT_OK(kc::SumOfSquares(norm_, norm_scratch_, grads_, layout_.total(), stream_));
  double out = 0;
  BELAY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&out, norm_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  BELAY_RETURN_IF_NOT_OK(Synchronize());
  return out;
}

absl::Status CudaGpt2::Update(const kernels::cpu::AdamWParams& p, float weight_decay, float clip) {
  if (sharded_)
    return absl::FailedPreconditionError("Update on a sharded optimizer: use UpdateShard");
  if (clip < 1.0f) {
    BELAY_RETURN_IF_NOT_OK(kc::Scale(grads_, layout_.total(), clip, stream_));
  }
  kernels::cpu::AdamWParams q = p;
  for (const TensorView& t : layout_.tensors()) {
    q.weight_decay = t.decay ? weight_decay : 0.0f;
    const auto o = static_cast<size_t>(t.offset);
    BELAY_RETURN_IF_NOT_OK(
        kc::AdamWUpdate(master_ + o, params_ + o, grads_ + o, m_ + o, v_ + o, t.size, q, stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaGpt2::PackGradients(const std::vector<Segment>& segments, int64_t padded,
                                     int slot) {
  if (staging_ == nullptr)
    return absl::FailedPreconditionError("PackGradients without a stage-1 sharded optimizer");
  if (slot != 0 && slot != 1)
    return absl::InvalidArgumentError(absl::StrCat("staging slot ", slot));
  float* staging = device_staging(slot);
  int64_t at = 0;
  for (const Segment& s : segments) at += s.size;
  if (at > padded || padded > sharded_->staging) {
    return absl::InvalidArgumentError(absl::StrCat("PackGradients: ", at, " elements padded to ",
                                                   padded, " in a staging buffer of ",
                                                   sharded_->staging));
  }
  at = 0;
  for (const Segment& s : segments) {
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(staging + at, grads_ + s.offset,
                                               static_cast<size_t>(s.size) * sizeof(float),
                                               cudaMemcpyDeviceToDevice, stream_));
    at += s.size;
  }
  if (padded > at) {
    BELAY_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(
        staging + at, 0, static_cast<size_t>(padded - at) * sizeof(float), stream_));
  }
  return absl::OkStatus();
}

absl::Status CudaGpt2::UnpackParameters(const std::vector<Segment>& segments, const float* from,
                                        int64_t size) {
  if (!sharded_)
    return absl::FailedPreconditionError("UnpackParameters without a sharded optimizer");
  int64_t at = 0;
  for (const Segment& s : segments) {
    if (s.offset < 0 || s.size < 0 || s.offset + s.size > layout_.total()) {
      return absl::InvalidArgumentError(absl::StrCat("UnpackParameters: segment [", s.offset, ", +",
                                                     s.size, ") outside ", layout_.total(),
                                                     " parameters"));
    }
    at += s.size;
  }
  if (at > size || (from == nullptr && at > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("UnpackParameters: ", at, " elements from a buffer of ", size));
  }
  at = 0;
  for (const Segment& s : segments) {
    BELAY_RETURN_IF_NOT_OK(kc::ConvertToBf16(from + at, params_ + s.offset, s.size, stream_));
    at += s.size;
  }
  return absl::OkStatus();
}

absl::StatusOr<double> CudaGpt2::GradientShardSumOfSquares() {
  if (!sharded_)
    return absl::FailedPreconditionError("GradientShardSumOfSquares without a sharded optimizer");
  BELAY_RETURN_IF_NOT_OK(
      kc::SumOfSquares(norm_, norm_scratch_, grad_shard_, sharded_->shard_size, stream_));
  double out = 0;
  BELAY_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(&out, norm_, sizeof(double), cudaMemcpyDeviceToHost, stream_));
  BELAY_RETURN_IF_NOT_OK(Synchronize());
  return out;
}

absl::Status CudaGpt2::UpdateShard(const kernels::cpu::AdamWParams& p, float weight_decay,
                                   float clip) {
  if (!sharded_) return absl::FailedPreconditionError("UpdateShard without a sharded optimizer");
  if (clip < 1.0f)
    BELAY_RETURN_IF_NOT_OK(kc::Scale(grad_shard_, sharded_->shard_size, clip, stream_));
  kernels::cpu::AdamWParams q = p;
  for (const ShardedOptimizer::Piece& piece : sharded_->pieces) {
    q.weight_decay = piece.decay ? weight_decay : 0.0f;
    const auto so = static_cast<size_t>(piece.shard_offset);
    BELAY_RETURN_IF_NOT_OK(kc::AdamWUpdate(master_ + so, params_ + piece.flat_offset,
                                           grad_shard_ + so, m_ + so, v_ + so, piece.size, q,
                                           stream_));
  }
  return absl::OkStatus();
}

}  // namespace belay::model
