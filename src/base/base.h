// base: the vocabulary every Floe module speaks.
//
//   Status / Result<T>   errors as values (one pointer when OK, like LevelDB's Status)
//   FLOE_CHECK           invariants whose violation would corrupt data (aborts)
//   FLOE_LOG_*           logging through spdlog
//   HashKey / Murmur3    xxh3 for keys; MurmurHash3 x64-128 for HyperLogLog
//   Mutex / MutexLock    a mutex that clang's thread-safety analysis understands
//   NowMicros ...        clocks
//
// Thread rules: Status and Result are thread-compatible values. The hash functions and clocks are
// thread-safe. Mutex is thread-safe by definition.

#ifndef FLOE_BASE_BASE_H_
#define FLOE_BASE_BASE_H_

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>

// ---------------------------------------------------------------------------------------------
// Thread-safety annotations (clang -Wthread-safety; no-ops elsewhere).
#if defined(__clang__)
#define FLOE_TSA(x) __attribute__((x))
#else
#define FLOE_TSA(x)
#endif
#define FLOE_CAPABILITY(name) FLOE_TSA(capability(name))
#define FLOE_SCOPED_CAPABILITY FLOE_TSA(scoped_lockable)
#define FLOE_GUARDED_BY(mu) FLOE_TSA(guarded_by(mu))
#define FLOE_PT_GUARDED_BY(mu) FLOE_TSA(pt_guarded_by(mu))
#define FLOE_REQUIRES(...) FLOE_TSA(requires_capability(__VA_ARGS__))
#define FLOE_EXCLUDES(...) FLOE_TSA(locks_excluded(__VA_ARGS__))
#define FLOE_ACQUIRE(...) FLOE_TSA(acquire_capability(__VA_ARGS__))
#define FLOE_RELEASE(...) FLOE_TSA(release_capability(__VA_ARGS__))
#define FLOE_TRY_ACQUIRE(...) FLOE_TSA(try_acquire_capability(__VA_ARGS__))
#define FLOE_NO_THREAD_SAFETY_ANALYSIS FLOE_TSA(no_thread_safety_analysis)

#define FLOE_PREDICT_FALSE(x) (__builtin_expect(static_cast<bool>(x), 0))
#define FLOE_PREDICT_TRUE(x) (__builtin_expect(static_cast<bool>(x), 1))

namespace floe {

// ---------------------------------------------------------------------------------------------
// Status: OK is a null pointer, so returning success costs one register.
enum class StatusCode : uint8_t {
  kOk = 0,
  kNotFound,
  kInvalidArgument,
  kCorruption,  // bytes that do not decode
  kOutOfRange,
  kAlreadyExists,
  kFailedPrecondition,
  kResourceExhausted,  // a limit was hit (memory, clients, lengths)
  kUnavailable,
  kTimeout,
  kAborted,  // a compare-and-swap lost, a transaction must retry
  kInternal,
  kPermissionDenied,  // unauthenticated or forged input
  kCancelled,         // the caller gave up
  kUnimplemented,     // no such method
  kWrongHome,         // asked a node that is not the key's home under the sender's slot map
  // New codes go last: RPC sends the number (docs/wire.md).
};

std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(StatusCode code, std::string_view message);
  Status(const Status& other);
  Status& operator=(const Status& other);
  Status(Status&&) noexcept = default;
  Status& operator=(Status&&) noexcept = default;
  ~Status() = default;

  static Status OK() { return Status(); }
  static Status NotFound(std::string_view m) { return {StatusCode::kNotFound, m}; }
  static Status InvalidArgument(std::string_view m) { return {StatusCode::kInvalidArgument, m}; }
  static Status Corruption(std::string_view m) { return {StatusCode::kCorruption, m}; }
  static Status OutOfRange(std::string_view m) { return {StatusCode::kOutOfRange, m}; }
  static Status AlreadyExists(std::string_view m) { return {StatusCode::kAlreadyExists, m}; }
  static Status FailedPrecondition(std::string_view m) {
    return {StatusCode::kFailedPrecondition, m};
  }
  static Status ResourceExhausted(std::string_view m) {
    return {StatusCode::kResourceExhausted, m};
  }
  static Status Unavailable(std::string_view m) { return {StatusCode::kUnavailable, m}; }
  static Status Timeout(std::string_view m) { return {StatusCode::kTimeout, m}; }
  static Status Aborted(std::string_view m) { return {StatusCode::kAborted, m}; }
  static Status Internal(std::string_view m) { return {StatusCode::kInternal, m}; }
  static Status PermissionDenied(std::string_view m) { return {StatusCode::kPermissionDenied, m}; }
  static Status Cancelled(std::string_view m) { return {StatusCode::kCancelled, m}; }
  static Status Unimplemented(std::string_view m) { return {StatusCode::kUnimplemented, m}; }
  static Status WrongHome(std::string_view m) { return {StatusCode::kWrongHome, m}; }

  bool ok() const { return state_ == nullptr; }
  StatusCode code() const { return state_ ? state_->code : StatusCode::kOk; }
  // The message alone, without the code name. Empty when OK.
  std::string_view message() const { return state_ ? std::string_view(state_->message) : ""; }
  // "OK" or "<CodeName>: <message>".
  std::string ToString() const;

  // Prefixes the message with context ("decoding HLL: ..."); a no-op on OK.
  Status WithContext(std::string_view context) const;

  friend bool operator==(const Status& a, const Status& b) {
    return a.code() == b.code() && a.message() == b.message();
  }

 private:
  struct State {
    StatusCode code;
    std::string message;
  };
  std::unique_ptr<State> state_;
};

// ---------------------------------------------------------------------------------------------
// Result<T>: a T or a non-OK Status (Abseil's StatusOr, trimmed).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT: implicit by design
    if (status_.ok()) status_ = Status::Internal("Result constructed from an OK status");
  }

  bool ok() const { return status_.ok(); }
  const Status& status() const& { return status_; }
  Status status() && { return std::move(status_); }

  // REQUIRES: ok().
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }
  T&& operator*() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

  T value_or(T fallback) const& { return ok() ? *value_ : std::move(fallback); }

 private:
  Status status_;
  std::optional<T> value_;
};

#define FLOE_CONCAT_INNER_(a, b) a##b
#define FLOE_CONCAT_(a, b) FLOE_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (a Status) is not OK.
#define FLOE_RETURN_IF_ERROR(expr)                                   \
  do {                                                               \
    ::floe::Status floe_status_ = (expr);                            \
    if (FLOE_PREDICT_FALSE(!floe_status_.ok())) return floe_status_; \
  } while (0)

// `lhs` = the value of `rexpr` (a Result<T>), or returns its Status from the enclosing function.
#define FLOE_ASSIGN_OR_RETURN(lhs, rexpr) \
  FLOE_ASSIGN_OR_RETURN_IMPL_(FLOE_CONCAT_(floe_result_, __LINE__), lhs, rexpr)
#define FLOE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr)                 \
  auto tmp = (rexpr);                                                \
  if (FLOE_PREDICT_FALSE(!tmp.ok())) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()

// ---------------------------------------------------------------------------------------------
// Checks. FLOE_CHECK is always on; FLOE_DCHECK only in debug builds. Use them for invariants a
// client or a peer cannot break; anything outside input can break is a Status instead.
namespace internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, std::string_view msg);
}  // namespace internal

#define FLOE_CHECK(cond)                                                                           \
  do {                                                                                             \
    if (FLOE_PREDICT_FALSE(!(cond))) ::floe::internal::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)
#define FLOE_CHECK_MSG(cond, msg)                                      \
  do {                                                                 \
    if (FLOE_PREDICT_FALSE(!(cond)))                                   \
      ::floe::internal::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)
#define FLOE_CHECK_OK(expr)                                                                    \
  do {                                                                                         \
    ::floe::Status floe_check_status_ = (expr);                                                \
    if (FLOE_PREDICT_FALSE(!floe_check_status_.ok()))                                          \
      ::floe::internal::CheckFailed(__FILE__, __LINE__, #expr, floe_check_status_.ToString()); \
  } while (0)
#ifdef NDEBUG
#define FLOE_DCHECK(cond) \
  do {                    \
  } while (false && (cond))
#else
#define FLOE_DCHECK(cond) FLOE_CHECK(cond)
#endif

// ---------------------------------------------------------------------------------------------
// Logging: spdlog's default logger; the level is set once at start-up.
enum class LogLevel : uint8_t { kTrace, kDebug, kInfo, kWarn, kError, kOff };
// Parses "trace", "debug", "info", "warn", "error", "off".
Result<LogLevel> ParseLogLevel(std::string_view name);
void SetLogLevel(LogLevel level);

#define FLOE_LOG_DEBUG(...) ::spdlog::debug(__VA_ARGS__)
#define FLOE_LOG_INFO(...) ::spdlog::info(__VA_ARGS__)
#define FLOE_LOG_WARN(...) ::spdlog::warn(__VA_ARGS__)
#define FLOE_LOG_ERROR(...) ::spdlog::error(__VA_ARGS__)

// ---------------------------------------------------------------------------------------------
// Hashing.

// The hash of a key: XXH3-64 with seed 0. Stable across processes and versions, because key
// homing in a cluster depends on every node computing the same value.
uint64_t HashBytes(std::string_view bytes);

// MurmurHash3 x64-128 (the canonical smhasher algorithm). PostgreSQL's `hll` extension uses it
// with seed 0 and keeps the first 64 bits.
struct Hash128 {
  uint64_t h1;
  uint64_t h2;
};
Hash128 Murmur3x64_128(const void* data, size_t len, uint32_t seed);

// A fast 64-bit finalizer (splitmix64), for mixing integers.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// ---------------------------------------------------------------------------------------------
// Parses a decimal int64 strictly, as Redis's string2ll does: an optional '-', digits with no
// leading zero ("0" alone is fine), no sign on zero, no spaces, no '+', no overflow.
bool ParseDecimalInt64(std::string_view s, int64_t* out);

// ---------------------------------------------------------------------------------------------
// Mutex with capability annotations, so FLOE_GUARDED_BY(mu_) is checked by clang.
class FLOE_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() FLOE_ACQUIRE() { mu_.lock(); }
  void Unlock() FLOE_RELEASE() { mu_.unlock(); }
  bool TryLock() FLOE_TRY_ACQUIRE(true) { return mu_.try_lock(); }
  // For std::condition_variable_any and std::lock_guard.
  void lock() FLOE_ACQUIRE() { mu_.lock(); }
  void unlock() FLOE_RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

class FLOE_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex* mu) FLOE_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() FLOE_RELEASE() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// A lock for critical sections of tens of nanoseconds that many threads hit at once (one hot
// sketch): a waiter spins briefly, then yields its core instead of sleeping in the kernel, so a
// hand-over costs no futex system calls. Not for long sections: use Mutex there.
class FLOE_CAPABILITY("mutex") SpinMutex {
 public:
  SpinMutex() = default;
  SpinMutex(const SpinMutex&) = delete;
  SpinMutex& operator=(const SpinMutex&) = delete;

  void Lock() FLOE_ACQUIRE() {
    // acquire: pairs with Unlock's release, so the previous holder's writes are visible.
    while (locked_.exchange(true, std::memory_order_acquire)) {
      for (int spins = 0; locked_.load(std::memory_order_relaxed); spins++) {
        if (spins < 128) {
          CpuRelax();
        } else {
          YieldCore();
        }
      }
    }
  }
  void Unlock() FLOE_RELEASE() { locked_.store(false, std::memory_order_release); }

 private:
  static void CpuRelax();
  static void YieldCore();
  std::atomic<bool> locked_{false};
};

class FLOE_SCOPED_CAPABILITY SpinLock {
 public:
  explicit SpinLock(SpinMutex* mu) FLOE_ACQUIRE(mu) : mu_(mu) { mu_->Lock(); }
  ~SpinLock() FLOE_RELEASE() { mu_->Unlock(); }
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

 private:
  SpinMutex* const mu_;
};

// ---------------------------------------------------------------------------------------------
// Clocks.
uint64_t NowMicros();  // monotonic, for durations
// Monotonic and counting time suspended (CLOCK_BOOTTIME): for leases, so that a process or a
// machine suspended past its lease finds it lapsed when it wakes (docs/membership.md, O1).
uint64_t BootMicros();
uint64_t WallMicros();  // since the Unix epoch, for expiry times users give
// A cheap monotonic tick counter for short durations on hot paths (the TSC where the CPU has
// an invariant one; otherwise nanoseconds of the steady clock).
uint64_t CycleNow();
// Converts a number of CycleNow ticks to microseconds (calibrated once, at first use).
double CyclesToMicros(uint64_t ticks);

// ---------------------------------------------------------------------------------------------
// Threads.
// Starts a thread running `fn`, or returns ResourceExhausted when the system has none to give
// (std::thread throws std::system_error, which would end the process from wherever a worker is
// started). Callers degrade: run the work on the calling thread, or fail their job.
template <typename F>
Result<std::thread> StartThread(F&& fn);

namespace internal {
// Tests: the next `n` StartThread calls fail as if the system were out of threads.
void FailNextThreadStarts(int n);
bool ConsumeThreadStartFailure();
}  // namespace internal

template <typename F>
Result<std::thread> StartThread(F&& fn) {
  if (internal::ConsumeThreadStartFailure()) {
    return Status::ResourceExhausted("cannot start a thread (injected)");
  }
  try {
    return std::thread(std::forward<F>(fn));
  } catch (const std::system_error& e) {
    return Status::ResourceExhausted(std::string("cannot start a thread: ") + e.what());
  }
}

}  // namespace floe

#endif  // FLOE_BASE_BASE_H_
