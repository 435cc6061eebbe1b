// dtype dispatch for the kernels: float32, bfloat16 and float16 storage, with
// all arithmetic in float32. A generic lambda receives a TypeTag<T>.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

namespace diffaug_fast {

template <typename T>
struct TypeTag {
  using type = T;
};

template <typename F>
void dispatch_storage_type(at::ScalarType st, const char* what, F&& f) {
  switch (st) {
    case at::kFloat: f(TypeTag<float>{}); break;
    case at::kBFloat16: f(TypeTag<c10::BFloat16>{}); break;
    case at::kHalf: f(TypeTag<c10::Half>{}); break;
    default: TORCH_CHECK(false, "diffaug_fast: ", what, " has dtype ", st, "; expected float32, bfloat16 or float16");
  }
}

}  // namespace diffaug_fast
