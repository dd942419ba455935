// Python module _diffbmp_cpu: exports the CPU XLA FFI handlers as capsules.
#include <nanobind/nanobind.h>

#include "xla/ffi/api/c_api.h"

namespace nb = nanobind;

extern "C" XLA_FFI_Error* DiffbmpForwardCpu(XLA_FFI_CallFrame*);
extern "C" XLA_FFI_Error* DiffbmpBackwardCpu(XLA_FFI_CallFrame*);

template <typename T>
static nb::capsule encapsulate(T* fn) {
  return nb::capsule(reinterpret_cast<void*>(fn));
}

NB_MODULE(_diffbmp_cpu, m) {
  m.def("registrations", []() {
    nb::dict d;
    d["diffbmp_forward"] = encapsulate(DiffbmpForwardCpu);
    d["diffbmp_backward"] = encapsulate(DiffbmpBackwardCpu);
    return d;
  });
}
