// The replaced global operator new of alloc_failure_testing.h. Every form pairs malloc with
// free, so the sanitizers see one allocator; the aligned forms are left to the library.

#include "server/internal/alloc_failure_testing.h"

#include <cstdlib>
#include <new>

namespace floe::server::internal {
namespace {

// Plain thread_locals (no constructor): reading them allocates nothing.
thread_local int64_t fail_at = 0;  // 0: off
thread_local int64_t counted = 0;
thread_local bool reached = false;

void* Allocate(std::size_t size) {
  if (fail_at > 0 && ++counted == fail_at) {
    reached = true;
    throw std::bad_alloc();
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}

}  // namespace

void FailNthAllocation(int64_t nth) {
  counted = 0;
  reached = false;
  fail_at = nth;
}

bool StopFailingAllocations() {
  fail_at = 0;
  return reached;
}

}  // namespace floe::server::internal

void* operator new(std::size_t size) { return floe::server::internal::Allocate(size); }
void* operator new[](std::size_t size) { return floe::server::internal::Allocate(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
