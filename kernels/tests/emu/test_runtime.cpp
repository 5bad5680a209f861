// Self-tests of the emulator (kernels/emu): barriers, warp shuffles and votes, atomics, shared
// memory, launch errors, and the undefined behaviour it must refuse (checked in a child process).
#include <sys/wait.h>
#include <unistd.h>

#include "emu_test.h"

namespace {

#define LAUNCH(k, g, b, s) ::pi_emu::launch_named(#k, k, g, b, s, nullptr)

__global__ void rotate_kernel(const int64_t* in, int64_t* out) {
  __shared__ int64_t sh[256];
  const int t = threadIdx.x, n = blockDim.x;
  sh[t] = in[blockIdx.x * n + t] + (int64_t)blockIdx.x;
  __syncthreads();
  out[blockIdx.x * n + t] = sh[(t + 1) % n];
}

__global__ void warp_kernel(int64_t* out) {
  const int t = threadIdx.x, lane = t & 31;
  const int64_t v = 1000 * (int64_t)t;
  int64_t* o = out + 8 * t;
  o[0] = __shfl_sync(0xffffffffu, v, 3);
  o[1] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[2] = __shfl_up_sync(0xffffffffu, v, 2);
  o[3] = __shfl_down_sync(0xffffffffu, v, 4);
  o[4] = __all_sync(0xffffffffu, lane < 40);
  o[5] = __any_sync(0xffffffffu, lane == 7);
  o[6] = (int64_t)__ballot_sync(0xffffffffu, lane % 3 == 0);
  double x = (double)lane;
  for (int d = 16; d > 0; d >>= 1) x += __shfl_xor_sync(0xffffffffu, x, d);
  o[7] = (int64_t)x;  // 0 + 1 + ... + 31 = 496 in every lane
}

__global__ void atomics_kernel(unsigned long long* counter, double* dsum, float* fsum, int* imin, long long* lmin,
                               int* orflags, unsigned long long* cas_slot) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  atomicAdd(counter, 1ull);
  atomicAdd(dsum, 0.5);
  atomicAdd(fsum, 1.0f);
  atomicMin(imin, (int)(1000 - i));
  atomicMin(lmin, (long long)(5000000000ll - i));
  atomicOr(orflags, 1 << (i % 7));
  // Spin until our CAS wins: a lock-free push of i into one of 4 slots.
  unsigned long long old = atomicCAS(cas_slot, 0ull, 0ull);  // an atomic read (a plain one races)
  while (true) {
    const unsigned long long got = atomicCAS(cas_slot, old, old + (unsigned long long)i);
    if (got == old) break;
    old = got;
  }
}

__global__ void shared_kernel(int64_t* out) {
  // (test sources are not rewritten: what `extern __shared__ unsigned char raw[];` becomes)
  unsigned char* raw = static_cast<unsigned char*>(::pi_emu::dynamic_shared());
  __shared__ int64_t fresh[4];
  int64_t* dyn = reinterpret_cast<int64_t*>(raw);
  const int t = threadIdx.x;
  if (t == 0) out[blockIdx.x * 2] = fresh[0] + fresh[1] + fresh[2] + fresh[3];  // zero in a new block
  __syncthreads();
  if (t < 4) fresh[t] = 7;
  dyn[t] = (int64_t)t * (int64_t)(blockIdx.x + 1);
  __syncthreads();
  if (t == 0) {
    int64_t s = 0;
    for (int j = 0; j < (int)blockDim.x; ++j) s += dyn[j];
    out[blockIdx.x * 2 + 1] = s;
  }
}

__global__ void divergent_kernel(int* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1;
}

__global__ void exited_lane_kernel(int* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);  // lane 3 has exited
}

__global__ void deadlock_kernel(int* out) {
  if (threadIdx.x < 16)
    __syncthreads();  // waits for lanes 16..31, which wait for these in a full-warp shuffle
  else
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
}

// Runs this test binary again as `--death NAME` (a fresh process: forking a threaded sanitizer
// process is not supported) and expects it to die with `expect` in its stderr.
void expect_death(const char* name, const char* expect) {
  int pipefd[2];
  ECHECK(pipe(pipefd) == 0, "pipe\n");
  fflush(stdout);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(pipefd[1], 2);
    close(pipefd[0]);
    char* const args[] = {const_cast<char*>("/proc/self/exe"), const_cast<char*>("--death"), const_cast<char*>(name),
                          nullptr};
    execv("/proc/self/exe", args);
    _exit(127);
  }
  close(pipefd[1]);
  std::string err;
  char buf[4096];
  ssize_t r;
  while ((r = read(pipefd[0], buf, sizeof buf)) > 0) err.append(buf, (size_t)r);
  close(pipefd[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  const bool died = WIFSIGNALED(status) || (WIFEXITED(status) && WEXITSTATUS(status) != 0);
  ECHECK(died && err.find(expect) != std::string::npos, "%s: expected death with '%s', got status %d and:\n%s\n",
         name, expect, status, err.c_str());
}

}  // namespace

EMU_CASE(runtime, barrier_and_static_shared) {
  std::mt19937_64 rng(1);
  const int blocks = 5, threads = 256;
  std::vector<int64_t> in(blocks * threads);
  for (auto& v : in) v = (int64_t)(rng() % 1000);
  emu_test::for_schedules("rotate", [&] {
    std::vector<int64_t> out(in.size(), -1);
    LAUNCH(rotate_kernel, blocks, threads, 0)(in.data(), out.data());
    for (int b = 0; b < blocks; ++b)
      for (int t = 0; t < threads; ++t)
        ECHECK(out[b * threads + t] == in[b * threads + (t + 1) % threads] + b, "rotate b=%d t=%d\n", b, t);
    std::vector<uint8_t> bytes;
    emu_test::append(bytes, out);
    return bytes;
  });
}

EMU_CASE(runtime, warp_shuffles_and_votes) {
  emu_test::for_schedules("warp", [&] {
    const int threads = 64;
    std::vector<int64_t> out(8 * threads, -1);
    LAUNCH(warp_kernel, 1, threads, 0)(out.data());
    for (int t = 0; t < threads; ++t) {
      const int lane = t & 31, base = t & ~31;
      const int64_t* o = &out[8 * t];
      ECHECK(o[0] == 1000 * (base + 3), "shfl t=%d\n", t);
      ECHECK(o[1] == 1000 * (base + (lane ^ 5)), "shfl_xor t=%d\n", t);
      ECHECK(o[2] == 1000 * (lane >= 2 ? t - 2 : t), "shfl_up t=%d\n", t);
      ECHECK(o[3] == 1000 * (lane + 4 < 32 ? t + 4 : t), "shfl_down t=%d\n", t);
      ECHECK(o[4] == 1 && o[5] == 1, "votes t=%d\n", t);
      ECHECK(o[6] == 0x49249249ll, "ballot t=%d: %llx\n", t, (unsigned long long)o[6]);
      ECHECK(o[7] == 496, "xor reduction t=%d\n", t);
    }
    std::vector<uint8_t> bytes;
    emu_test::append(bytes, out);
    return bytes;
  });
}

EMU_CASE(runtime, atomics) {
  emu_test::for_schedules("atomics", [&] {
    unsigned long long counter = 0, slot = 0;
    double dsum = 0;
    float fsum = 0;
    int imin = 1 << 30, orflags = 0;
    long long lmin = 1ll << 62;
    const int blocks = 7, threads = 128, n = blocks * threads;
    LAUNCH(atomics_kernel, blocks, threads, 0)(&counter, &dsum, &fsum, &imin, &lmin, &orflags, &slot);
    ECHECK(counter == (unsigned long long)n, "counter %llu\n", counter);
    ECHECK(dsum == 0.5 * n, "double sum %g\n", dsum);
    ECHECK(fsum == (float)n, "float sum %g\n", (double)fsum);
    ECHECK(imin == 1000 - (n - 1) && lmin == 5000000000ll - (n - 1), "min %d %lld\n", imin, lmin);
    ECHECK(orflags == 127, "or %d\n", orflags);
    ECHECK(slot == (unsigned long long)n * (n - 1) / 2, "cas %llu\n", slot);
    return std::vector<uint8_t>();
  });
}

EMU_CASE(runtime, shared_memory_fresh_per_block) {
  emu_test::for_schedules("shared", [&] {
    const int blocks = 4, threads = 96;
    std::vector<int64_t> out(2 * blocks, -1);
    LAUNCH(shared_kernel, blocks, threads, threads * sizeof(int64_t))(out.data());
    for (int b = 0; b < blocks; ++b) {
      ECHECK(out[2 * b] == 0, "static shared not fresh in block %d\n", b);
      ECHECK(out[2 * b + 1] == (int64_t)(b + 1) * threads * (threads - 1) / 2, "dynamic shared block %d\n", b);
    }
    std::vector<uint8_t> bytes;
    emu_test::append(bytes, out);
    return bytes;
  });
}

EMU_CASE(runtime, launch_errors) {
  std::vector<int64_t> out(8);
  LAUNCH(shared_kernel, 1, 2048, 0)(out.data());
  ECHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "block of 2048 threads accepted\n");
  ECHECK(cudaGetLastError() == cudaSuccess, "the error is not cleared by reading it\n");
  LAUNCH(shared_kernel, 0, 32, 0)(out.data());
  ECHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "empty grid accepted\n");
  LAUNCH(shared_kernel, 1, 32, 64 * 1024)(out.data());
  ECHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "64 KiB of dynamic shared memory accepted\n");
}

// Entered by `pointins_emu_tests --death NAME` (main.cpp): runs a kernel the emulator must refuse.
int emu_death(const char* name) {
  std::vector<int> out(64);
  const std::string n(name);
  if (n == "divergent")
    LAUNCH(divergent_kernel, 1, 32, 0)(out.data());
  else if (n == "exited_lane")
    LAUNCH(exited_lane_kernel, 1, 64, 0)(out.data());
  else if (n == "deadlock")
    LAUNCH(deadlock_kernel, 1, 32, 0)(out.data());
  else
    return 2;
  return 0;  // not refused: the parent's check fails
}

EMU_CASE(runtime, undefined_behaviour_is_refused) {
  expect_death("divergent", "divergent __syncthreads()");
  expect_death("exited_lane", "exited lane");
  expect_death("deadlock", "deadlock");
}
