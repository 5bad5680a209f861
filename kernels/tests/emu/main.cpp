// Runner of the emulated-kernel tests: `pointins_emu_tests FAMILY...` (no argument: all; --list).
#include <algorithm>
#include <chrono>

#include "emu_test.h"

namespace emu_test {

int failures = 0;
int checks = 0;
static std::string g_label = "-";

const char* schedule_label() { return g_label.c_str(); }

std::vector<pi_emu::Schedule> schedules() {
  std::vector<pi_emu::Schedule> all;
  pi_emu::Schedule s;
  s.workers = 1, s.order = pi_emu::kForward, s.yield = 0, s.seed = 0;
  all.push_back(s);
  s.workers = 1, s.order = pi_emu::kReverse, s.yield = 0, s.seed = 0;
  all.push_back(s);
  s.workers = 3, s.order = pi_emu::kShuffled, s.yield = 0, s.seed = 11;
  all.push_back(s);
  s.workers = 2, s.order = pi_emu::kShuffled, s.yield = 0.25, s.seed = 29;
  all.push_back(s);
  const char* env = std::getenv("POINTINS_EMU_SCHEDULES");
  if (env && std::string(env) == "quick") all = {all.front(), all.back()};
  return all;
}

void for_schedules(const char* what, const std::function<std::vector<uint8_t>()>& run) {
  std::vector<uint8_t> first;
  bool have = false;
  std::string first_label;
  for (const pi_emu::Schedule& s : schedules()) {
    pi_emu::set_schedule(s);
    g_label = pi_emu::schedule_name(s);
    std::vector<uint8_t> out = run();
    if (!have) {
      first = std::move(out);
      first_label = g_label;
      have = true;
    } else {
      ECHECK(out == first, "%s: output differs from the one under %s\n", what, first_label.c_str());
    }
  }
  g_label = "-";
}

std::vector<int64_t> csr(const std::vector<int64_t>& sizes) {
  std::vector<int64_t> off(sizes.size() + 1, 0);
  for (size_t i = 0; i < sizes.size(); ++i) off[i + 1] = off[i] + sizes[i];
  return off;
}

std::vector<int64_t> random_sizes(std::mt19937_64& rng, int count, int64_t max_size) {
  std::vector<int64_t> sizes(count);
  for (auto& s : sizes) {
    switch (rng() % 6) {
      case 0: s = 0; break;
      case 1: s = 1; break;
      case 2: s = 31 + (int64_t)(rng() % 3); break;
      default: s = (int64_t)(rng() % (uint64_t)(max_size + 1));
    }
  }
  return sizes;
}

static std::vector<std::pair<std::string, std::pair<std::string, Case>>>& registry() {
  static std::vector<std::pair<std::string, std::pair<std::string, Case>>> r;
  return r;
}

void register_case(const char* family, const char* name, Case c) {
  registry().push_back({family, {name, std::move(c)}});
}

}  // namespace emu_test

int emu_death(const char* name);  // test_runtime.cpp

int main(int argc, char** argv) {
  using namespace emu_test;
  if (argc == 3 && std::string(argv[1]) == "--death") return emu_death(argv[2]);
  std::vector<std::string> want(argv + 1, argv + argc);
  if (want.size() == 1 && want[0] == "--list") {
    for (auto& r : registry()) std::printf("%s %s\n", r.first.c_str(), r.second.first.c_str());
    return 0;
  }
  int ran = 0;
  for (auto& r : registry()) {
    if (!want.empty() && std::find(want.begin(), want.end(), r.first) == want.end()) continue;
    const int before = failures;
    const auto t0 = std::chrono::steady_clock::now();
    r.second.second();
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%-12s %-28s %s  (%.2f s)\n", r.first.c_str(), r.second.first.c_str(),
                failures == before ? "ok" : "FAILED", sec);
    std::fflush(stdout);
    ++ran;
  }
  const pi_emu::Stats st = pi_emu::stats();
  std::printf("%d cases, %d checks, %d failures; emulated %llu launches, %llu blocks, %llu threads, %llu barriers, "
              "%llu warp operations, %llu yields\n",
              ran, checks, failures, (unsigned long long)st.launches, (unsigned long long)st.blocks,
              (unsigned long long)st.threads, (unsigned long long)st.barriers, (unsigned long long)st.warp_ops,
              (unsigned long long)st.yields);
  if (ran == 0) {
    std::printf("no test case matched\n");
    return 2;
  }
  return failures ? 1 : 0;
}
