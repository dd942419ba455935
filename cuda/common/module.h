// What a backend's Python module exports (the nanobind side of both backends):
// `registrations()`, a dict of FFI target names to handler capsules, and
// `contract`, the version of the buffer contract (render_common.h) the
// handlers implement.
#pragma once

#include <nanobind/nanobind.h>

#include <initializer_list>
#include <vector>
#include <utility>

#include "render_common.h"
#include "xla/ffi/api/c_api.h"

namespace diffbmp {

using Handler = XLA_FFI_Error* (*)(XLA_FFI_CallFrame*);

inline void export_handlers(nanobind::module_& m,
                            std::initializer_list<std::pair<const char*, Handler>> handlers) {
  std::vector<std::pair<const char*, Handler>> list(handlers);
  m.def("registrations", [list]() {
    nanobind::dict d;
    for (const auto& [name, fn] : list) d[name] = nanobind::capsule(reinterpret_cast<void*>(fn));
    return d;
  });
  m.attr("contract") = kContractVersion;
}

}  // namespace diffbmp
