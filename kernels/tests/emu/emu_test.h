// Test harness of the emulated CUDA kernels: checks, random inputs, and running a case under
// several thread schedules (kernels/emu), checking that every schedule gives the same answer.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "pointins_emu.h"

namespace emu_test {

extern int failures;
extern int checks;

#define ECHECK(cond, ...)                                                   \
  do {                                                                      \
    ++::emu_test::checks;                                                   \
    if (!(cond)) {                                                          \
      if (++::emu_test::failures <= 30) {                                   \
        std::printf("%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                                           \
        std::printf("  [schedule %s]\n", ::emu_test::schedule_label());     \
      }                                                                     \
    }                                                                       \
  } while (0)

#define EOK(call) ECHECK((call) == 0 && cudaGetLastError() == cudaSuccess, "%s returned an error\n", #call)

const char* schedule_label();

// The schedules every case runs under: one block at a time in order and reversed (threads of a
// block reversed too), several blocks at once in shuffled order, and shuffled with preemption at
// atomics and relaxed accesses. POINTINS_EMU_SCHEDULES=quick keeps the first and the last.
std::vector<pi_emu::Schedule> schedules();

// Runs `run` (which returns its outputs as raw bytes) under every schedule; all outputs must be
// equal to the first (pass bitwise=false for results with float atomics: then `run` itself
// compares with tolerances and returns only what is exact).
void for_schedules(const char* what, const std::function<std::vector<uint8_t>()>& run);

template <typename T>
void append(std::vector<uint8_t>& out, const std::vector<T>& v) {
  const size_t at = out.size();
  out.resize(at + v.size() * sizeof(T));
  if (!v.empty()) std::memcpy(out.data() + at, v.data(), v.size() * sizeof(T));
}

// CSR offsets of `sizes`.
std::vector<int64_t> csr(const std::vector<int64_t>& sizes);
// Random segment sizes of the edge-case mixes the tests use (empty, 1, 31..33, long ...).
std::vector<int64_t> random_sizes(std::mt19937_64& rng, int count, int64_t max_size);

using Case = std::function<void()>;
void register_case(const char* family, const char* name, Case c);
struct Registrar {
  Registrar(const char* family, const char* name, Case c) { register_case(family, name, std::move(c)); }
};
#define EMU_CASE(family, name)                                                       \
  static void emu_case_##family##_##name();                                          \
  static ::emu_test::Registrar emu_reg_##family##_##name(#family, #name, &emu_case_##family##_##name); \
  static void emu_case_##family##_##name()

}  // namespace emu_test
