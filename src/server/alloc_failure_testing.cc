// The replaced global operator new and delete of alloc_failure_testing.h.

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

void* AllocateAligned(std::size_t size, std::align_val_t align) {
  if (fail_at > 0 && ++counted == fail_at) {
    reached = true;
    throw std::bad_alloc();
  }
  const auto a = static_cast<std::size_t>(align);
  // aligned_alloc wants a size that is a multiple of the alignment.
  const std::size_t rounded = (size == 0 ? a : (size + a - 1) / a * a);
  if (void* p = std::aligned_alloc(a, rounded)) return p;
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

// Every form, so that each allocation pairs malloc (or aligned_alloc) with free: a form left to
// the sanitizer's runtime would be freed here, which ASan reports as a mismatch.
void* operator new(std::size_t size) { return floe::server::internal::Allocate(size); }
void* operator new[](std::size_t size) { return floe::server::internal::Allocate(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return floe::server::internal::Allocate(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  try {
    return floe::server::internal::Allocate(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new(std::size_t size, std::align_val_t align) {
  return floe::server::internal::AllocateAligned(size, align);
}
void* operator new[](std::size_t size, std::align_val_t align) {
  return floe::server::internal::AllocateAligned(size, align);
}
void* operator new(std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  try {
    return floe::server::internal::AllocateAligned(size, align);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t size, std::align_val_t align, const std::nothrow_t&) noexcept {
  try {
    return floe::server::internal::AllocateAligned(size, align);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
