// The reference model's small kernels: weights from reference_weight(),
// RMSNorm, embedding, SwiGLU, and the step from the fused QKV projection to
// q (QK-norm, RoPE) and the paged cache. bf16 in memory, f32 arithmetic.
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdint>

#include "../cuda_error.hpp"
#include "kernels.hpp"

namespace kvflow::cuda::ref {

namespace {

// reference_weight() of kvflow/reference.hpp, the same arithmetic on the device.
__device__ __forceinline__ float weight_at(std::uint64_t seed, std::uint32_t tensor, std::uint64_t index) {
  std::uint64_t z = seed * 0x9E3779B97F4A7C15ULL ^ (static_cast<std::uint64_t>(tensor) << 40) ^ index;
  z += 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_bf16_kernel(__nv_bfloat16* out, std::uint64_t n, std::uint64_t seed, std::uint32_t tensor,
                                 float scale, float offset) {
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::uint64_t{gridDim.x} * blockDim.x) {
    out[i] = __float2bfloat16(scale * weight_at(seed, tensor, i) + offset);
  }
}

__global__ void fill_f32_kernel(float* out, std::uint64_t n, std::uint64_t seed, std::uint32_t tensor, float scale,
                                float offset) {
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < n;
       i += std::uint64_t{gridDim.x} * blockDim.x) {
    out[i] = scale * weight_at(seed, tensor, i) + offset;
  }
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  v = warp_sum(v);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  __syncthreads();  // partial[] may still be read by a previous call
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int warps = blockDim.x / 32;
  float t = lane < warps ? partial[lane] : 0.0f;
  return warp_sum(t);
}

// One block per row; 8 bf16 (16 bytes) per access where dim allows.
template <bool kOutF32>
__global__ void rms_norm_kernel(void* out, const __nv_bfloat16* in, const float* weight, std::uint32_t dim,
                                float eps) {
  const std::uint64_t row = blockIdx.x;
  const __nv_bfloat16* x = in + row * dim;
  float ss = 0.0f;
  const bool vec = dim % 8 == 0;
  if (vec) {
    for (std::uint32_t c = threadIdx.x * 8; c < dim; c += blockDim.x * 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(x + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        ss += f.x * f.x + f.y * f.y;
      }
    }
  } else {
    for (std::uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
      const float f = __bfloat162float(x[c]);
      ss += f * f;
    }
  }
  const float inv = rsqrtf(block_sum(ss) / static_cast<float>(dim) + eps);
  if (vec) {
    for (std::uint32_t c = threadIdx.x * 8; c < dim; c += blockDim.x * 8) {
      const uint4 raw = *reinterpret_cast<const uint4*>(x + c);
      const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
      float f[8];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 p = __bfloat1622float2(h[i]);
        f[2 * i] = p.x * inv * weight[c + 2 * i];
        f[2 * i + 1] = p.y * inv * weight[c + 2 * i + 1];
      }
      if constexpr (kOutF32) {
        float4* o = reinterpret_cast<float4*>(static_cast<float*>(out) + row * dim + c);
        o[0] = make_float4(f[0], f[1], f[2], f[3]);
        o[1] = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        uint4 packed;
        __nv_bfloat162* ph = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
        for (int i = 0; i < 4; ++i) ph[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
        *reinterpret_cast<uint4*>(static_cast<__nv_bfloat16*>(out) + row * dim + c) = packed;
      }
    }
  } else {
    for (std::uint32_t c = threadIdx.x; c < dim; c += blockDim.x) {
      const float f = __bfloat162float(x[c]) * inv * weight[c];
      if constexpr (kOutF32) {
        static_cast<float*>(out)[row * dim + c] = f;
      } else {
        static_cast<__nv_bfloat16*>(out)[row * dim + c] = __float2bfloat16(f);
      }
    }
  }
}

__global__ void embed_kernel(__nv_bfloat16* out, const __nv_bfloat16* table, const std::int32_t* tokens,
                             std::uint32_t dim) {
  const std::uint64_t row = blockIdx.x;
  const __nv_bfloat16* src = table + static_cast<std::uint64_t>(tokens[row]) * dim;
  __nv_bfloat16* dst = out + row * dim;
  if (dim % 8 == 0) {
    for (std::uint32_t c = threadIdx.x * 8; c < dim; c += blockDim.x * 8) {
      *reinterpret_cast<uint4*>(dst + c) = *reinterpret_cast<const uint4*>(src + c);
    }
  } else {
    for (std::uint32_t c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = src[c];
  }
}

__global__ void copy_words_kernel(std::int32_t* dst, const std::int32_t* src, std::uint32_t n) {
  for (std::uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) dst[i] = src[i];
}

__global__ void swiglu_kernel(__nv_bfloat16* act, const __nv_bfloat16* gu, std::uint32_t inter) {
  const std::uint64_t row = blockIdx.y;
  const __nv_bfloat16* g = gu + row * 2 * inter;
  const __nv_bfloat16* u = g + inter;
  __nv_bfloat16* o = act + row * inter;
  if (inter % 8 == 0) {
    for (std::uint32_t c = (blockIdx.x * blockDim.x + threadIdx.x) * 8; c < inter; c += gridDim.x * blockDim.x * 8) {
      const uint4 graw = *reinterpret_cast<const uint4*>(g + c);
      const uint4 uraw = *reinterpret_cast<const uint4*>(u + c);
      const __nv_bfloat162* gh = reinterpret_cast<const __nv_bfloat162*>(&graw);
      const __nv_bfloat162* uh = reinterpret_cast<const __nv_bfloat162*>(&uraw);
      uint4 packed;
      __nv_bfloat162* ph = reinterpret_cast<__nv_bfloat162*>(&packed);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float2 gf = __bfloat1622float2(gh[i]);
        const float2 uf = __bfloat1622float2(uh[i]);
        ph[i] = __floats2bfloat162_rn(gf.x / (1.0f + __expf(-gf.x)) * uf.x, gf.y / (1.0f + __expf(-gf.y)) * uf.y);
      }
      *reinterpret_cast<uint4*>(o + c) = packed;
    }
  } else {
    for (std::uint32_t c = blockIdx.x * blockDim.x + threadIdx.x; c < inter; c += gridDim.x * blockDim.x) {
      const float gf = __bfloat162float(g[c]);
      o[c] = __float2bfloat16(gf / (1.0f + __expf(-gf)) * __bfloat162float(u[c]));
    }
  }
}

constexpr int kMaxPairsPerLane = 4;  // head_dim up to 256

// One block per token, one warp per head: q and k heads are normed (when
// asked) and rotated, q goes to q_out, k and v into the cache.
__global__ void qkv_rope_kernel(__nv_bfloat16* q_out, const __nv_bfloat16* qkv, PagedView kv, HeadShape shape,
                                std::uint32_t start, float rope_theta, const float* q_norm, const float* k_norm,
                                float eps) {
  const std::uint32_t i = blockIdx.x;
  const std::uint32_t pos = start + i;
  const std::uint32_t hd = shape.head_dim;
  const std::uint32_t half = hd / 2;
  const std::uint32_t all = shape.heads + 2 * shape.kv_heads;
  const __nv_bfloat16* row = qkv + static_cast<std::uint64_t>(i) * all * hd;
  const std::int64_t block = kv.table[pos / kv.block_tokens];
  const std::int64_t token_base =
      block * kv.block_stride + static_cast<std::int64_t>(pos % kv.block_tokens) * shape.kv_heads * hd;
  const int lane = threadIdx.x % 32;
  for (std::uint32_t head = threadIdx.x / 32; head < all; head += blockDim.x / 32) {
    const __nv_bfloat16* x = row + static_cast<std::uint64_t>(head) * hd;
    const bool is_q = head < shape.heads;
    const bool is_k = !is_q && head < shape.heads + shape.kv_heads;
    __nv_bfloat16* dst;
    auto* kc = reinterpret_cast<__nv_bfloat16*>(kv.k);
    auto* vc = reinterpret_cast<__nv_bfloat16*>(kv.v);
    if (is_q) {
      dst = q_out + (static_cast<std::uint64_t>(i) * shape.heads + head) * hd;
    } else if (is_k) {
      dst = kc + token_base + static_cast<std::int64_t>(head - shape.heads) * hd;
    } else {
      dst = vc + token_base + static_cast<std::int64_t>(head - shape.heads - shape.kv_heads) * hd;
    }
    if (!is_q && !is_k) {
      for (std::uint32_t d = lane; d < hd; d += 32) dst[d] = x[d];
      continue;
    }
    float a[kMaxPairsPerLane];
    float b[kMaxPairsPerLane];
    float ss = 0.0f;
#pragma unroll
    for (int p = 0; p < kMaxPairsPerLane; ++p) {
      const std::uint32_t d = lane + 32 * p;
      a[p] = d < half ? __bfloat162float(x[d]) : 0.0f;
      b[p] = d < half ? __bfloat162float(x[d + half]) : 0.0f;
      ss += a[p] * a[p] + b[p] * b[p];
    }
    const float* norm = is_q ? q_norm : k_norm;
    if (norm != nullptr) {
      const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + eps);
#pragma unroll
      for (int p = 0; p < kMaxPairsPerLane; ++p) {
        const std::uint32_t d = lane + 32 * p;
        if (d < half) {
          a[p] = __bfloat162float(__float2bfloat16(a[p] * inv * norm[d]));
          b[p] = __bfloat162float(__float2bfloat16(b[p] * inv * norm[d + half]));
        }
      }
    }
#pragma unroll
    for (int p = 0; p < kMaxPairsPerLane; ++p) {
      const std::uint32_t d = lane + 32 * p;
      if (d < half) {
        const float inv_freq = powf(rope_theta, -static_cast<float>(2 * d) / static_cast<float>(hd));
        float s;
        float c;
        sincosf(static_cast<float>(pos) * inv_freq, &s, &c);
        dst[d] = __float2bfloat16(a[p] * c - b[p] * s);
        dst[d + half] = __float2bfloat16(b[p] * c + a[p] * s);
      }
    }
  }
}

unsigned grid_for(std::uint64_t n, unsigned threads) {
  const std::uint64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 65535 * 16 ? (blocks == 0 ? 1 : blocks) : 65535 * 16);
}

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(err, what, __FILE__, __LINE__);
}

}  // namespace

void fill_weight_bf16(cudaStream_t stream, bf16_t* out, std::uint64_t rows, std::uint64_t cols, std::uint64_t seed,
                      std::uint32_t tensor, float scale, float offset) {
  const std::uint64_t n = rows * cols;
  fill_bf16_kernel<<<grid_for(n, 256), 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(out), n, seed, tensor,
                                                         scale, offset);
  check_launch("fill_bf16_kernel");
}

void fill_weight_f32(cudaStream_t stream, float* out, std::uint64_t n, std::uint64_t seed, std::uint32_t tensor,
                     float scale, float offset) {
  fill_f32_kernel<<<grid_for(n, 256), 256, 0, stream>>>(out, n, seed, tensor, scale, offset);
  check_launch("fill_f32_kernel");
}

void rms_norm(cudaStream_t stream, void* out, bool out_f32, const bf16_t* in, const float* weight,
              std::uint32_t rows, std::uint32_t dim, float eps) {
  if (rows == 0) return;
  const unsigned threads = dim >= 4096 ? 512 : (dim >= 1024 ? 128 : 64);
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(in);
  if (out_f32) {
    rms_norm_kernel<true><<<rows, threads, 0, stream>>>(out, x, weight, dim, eps);
  } else {
    rms_norm_kernel<false><<<rows, threads, 0, stream>>>(out, x, weight, dim, eps);
  }
  check_launch("rms_norm_kernel");
}

void embed(cudaStream_t stream, bf16_t* out, const bf16_t* embedding, const std::int32_t* tokens,
           std::uint32_t rows, std::uint32_t dim) {
  if (rows == 0) return;
  embed_kernel<<<rows, 128, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(out),
                                         reinterpret_cast<const __nv_bfloat16*>(embedding), tokens, dim);
  check_launch("embed_kernel");
}

void copy_from_pinned(cudaStream_t stream, std::int32_t* dst, const std::int32_t* pinned, std::uint32_t n) {
  if (n == 0) return;
  const unsigned threads = 256;
  const unsigned blocks = std::min<unsigned>((n + threads - 1) / threads, 64);
  copy_words_kernel<<<blocks, threads, 0, stream>>>(dst, pinned, n);
  check_launch("copy_words_kernel");
}

void swiglu(cudaStream_t stream, bf16_t* act, const bf16_t* gu, std::uint32_t rows, std::uint32_t inter) {
  if (rows == 0) return;
  const unsigned threads = 256;
  const unsigned per_block = threads * (inter % 8 == 0 ? 8 : 1);
  const dim3 grid((inter + per_block - 1) / per_block, rows);
  swiglu_kernel<<<grid, threads, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(act),
                                              reinterpret_cast<const __nv_bfloat16*>(gu), inter);
  check_launch("swiglu_kernel");
}

void qkv_rope(cudaStream_t stream, bf16_t* q_out, const bf16_t* qkv, const PagedView& kv, HeadShape shape,
              std::uint32_t start, std::uint32_t count, float rope_theta, const float* q_norm, const float* k_norm,
              float eps) {
  if (count == 0) return;
  qkv_rope_kernel<<<count, 256, 0, stream>>>(reinterpret_cast<__nv_bfloat16*>(q_out),
                                             reinterpret_cast<const __nv_bfloat16*>(qkv), kv, shape, start,
                                             rope_theta, q_norm, k_norm, eps);
  check_launch("qkv_rope_kernel");
}

}  // namespace kvflow::cuda::ref
