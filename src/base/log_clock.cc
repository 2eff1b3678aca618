#include <chrono>
#include <ctime>
#include <thread>

#include "base/base.h"

namespace floe {

Result<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "trace") return LogLevel::kTrace;
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn" || name == "warning") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  if (name == "off") return LogLevel::kOff;
  return Status::InvalidArgument("unknown log level '" + std::string(name) +
                                 "' (expected trace, debug, info, warn, error or off)");
}

void SetLogLevel(LogLevel level) {
  switch (level) {
    case LogLevel::kTrace:
      spdlog::set_level(spdlog::level::trace);
      break;
    case LogLevel::kDebug:
      spdlog::set_level(spdlog::level::debug);
      break;
    case LogLevel::kInfo:
      spdlog::set_level(spdlog::level::info);
      break;
    case LogLevel::kWarn:
      spdlog::set_level(spdlog::level::warn);
      break;
    case LogLevel::kError:
      spdlog::set_level(spdlog::level::err);
      break;
    case LogLevel::kOff:
      spdlog::set_level(spdlog::level::off);
      break;
  }
}

void SpinMutex::CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

void SpinMutex::YieldCore() { std::this_thread::yield(); }

uint64_t NowMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

uint64_t BootMicros() {
  timespec ts{};
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

uint64_t WallMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

namespace {
bool HaveInvariantTsc() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0x80000007u));
  return (edx & (1u << 8)) != 0;
#else
  return false;
#endif
}
const bool kUseTsc = HaveInvariantTsc();

uint64_t SteadyNanos() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

uint64_t CycleNow() {
#if defined(__x86_64__)
  if (kUseTsc) return __builtin_ia32_rdtsc();
#endif
  return SteadyNanos();
}

double CyclesToMicros(uint64_t ticks) {
  static const double micros_per_tick = [] {
    if (!kUseTsc) return 1e-3;
    const uint64_t n0 = SteadyNanos();
    const uint64_t t0 = CycleNow();
    while (SteadyNanos() - n0 < 5'000'000) {
    }
    const uint64_t n1 = SteadyNanos();
    const uint64_t t1 = CycleNow();
    return static_cast<double>(n1 - n0) / 1e3 / static_cast<double>(t1 - t0);
  }();
  return static_cast<double>(ticks) * micros_per_tick;
}

}  // namespace floe

namespace floe::internal {

namespace {
// relaxed: a test sets it before the code under test starts its threads.
std::atomic<int> thread_start_failures{0};
}  // namespace

void FailNextThreadStarts(int n) { thread_start_failures.store(n, std::memory_order_relaxed); }

bool ConsumeThreadStartFailure() {
  int left = thread_start_failures.load(std::memory_order_relaxed);
  while (left > 0) {
    if (thread_start_failures.compare_exchange_weak(left, left - 1, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

}  // namespace floe::internal
