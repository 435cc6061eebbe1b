// Host-side tensor plumbing shared by the CPU and CUDA launchers.
//
// Kernels see each tensor as B examples, each a contiguous block of `inner`
// elements in one of two memory orders (NCHW or channels-last), with its own
// batch stride. That covers contiguous tensors, channels-last tensors and
// channel slices such as the first half of a learn_sigma output, without copies;
// anything else is made contiguous first.
#pragma once
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

namespace diffaug_fast {

struct BatchLayout {
  bool channels_last = false;  // memory order inside an example
  int64_t batch = 0;
  int64_t inner = 0;     // elements per example
  int64_t channels = 1;  // only meaningful for channels_last
  int64_t pixels = 1;    // H*W, only meaningful for channels_last
};

inline bool is_channels_last_only(const at::Tensor& t) {
  return t.dim() == 4 && !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline BatchLayout layout_of(const at::Tensor& t) {
  BatchLayout l;
  l.channels_last = is_channels_last_only(t);
  l.batch = t.size(0);
  l.inner = l.batch == 0 ? 0 : t.numel() / l.batch;
  if (t.dim() == 4) {
    l.channels = t.size(1);
    l.pixels = t.size(2) * t.size(3);
  }
  return l;
}

// True when every example of `t` is a contiguous block in the given order.
inline bool examples_are_blocks(const at::Tensor& t, bool channels_last) {
  if (t.numel() == 0) return false;  // copying nothing is free and keeps the checks simple
  if (!channels_last) return t.select(0, 0).is_contiguous();
  if (t.dim() != 4) return false;
  // channels-last block: strides (C, ..) become (1, W*C, C) inside the example
  const auto st = t.strides();
  const auto sz = t.sizes();
  return st[1] == 1 && st[3] == sz[1] && st[2] == sz[1] * sz[3];
}

// `t` with example blocks in the requested order, copying only when needed.
inline at::Tensor as_blocks(const at::Tensor& t, bool channels_last) {
  if (examples_are_blocks(t, channels_last)) return t;
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t.contiguous();
}

inline at::Tensor canonical_input(const at::Tensor& t) {
  // The leading input (and so the output) is fully contiguous in its order.
  return is_channels_last_only(t) ? t : t.contiguous();
}

inline at::Tensor empty_blocks_like(const at::Tensor& t, bool channels_last) {
  return at::empty(t.sizes(), t.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                       : at::MemoryFormat::Contiguous));
}

inline void check_coefficients(const at::Tensor& ref, const at::Tensor& a, const at::Tensor& s) {
  TORCH_CHECK(ref.dim() >= 1, "diffaug_fast: input must have a batch dimension");
  for (const auto* c : {&a, &s}) {
    TORCH_CHECK(c->dim() == 1 && c->size(0) == ref.size(0), "diffaug_fast: coefficients must have shape [",
                ref.size(0), "], got ", c->sizes());
    TORCH_CHECK(c->scalar_type() == at::kFloat, "diffaug_fast: coefficients must be float32");
    TORCH_CHECK(c->device() == ref.device(), "diffaug_fast: coefficients must be on ", ref.device());
  }
}

}  // namespace diffaug_fast
