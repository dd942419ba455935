// Python module _diffbmp_cuda: exports the CUDA XLA FFI handlers as capsules.
// "diffbmp_forward"/"diffbmp_backward" take an fp32 atlas (the contract of
// render_common.h); the "_bf16" pair takes mask and rgb as bf16 buffers.
#include <nanobind/nanobind.h>

#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

extern "C" XLA_FFI_Error* DiffbmpForwardCuda(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCuda(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpForwardCudaBf16(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCudaBf16(XLA_FFI_CallFrame*);

template <typename T>
static nb::capsule encapsulate(T* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

NB_MODULE(_diffbmp_cuda, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["diffbmp_forward"] = encapsulate(DiffbmpForwardCuda);
    d["diffbmp_backward"] = encapsulate(DiffbmpBackwardCuda);
    d["diffbmp_forward_bf16"] = encapsulate(DiffbmpForwardCudaBf16);
    d["diffbmp_backward_bf16"] = encapsulate(DiffbmpBackwardCudaBf16);
    return d;
  });
}
