// Allocation failure on demand, for tests of what a write leaves behind when memory runs out
// part way (docs/replication.md, M9). A test binary that links alloc_failure_testing.cc has its
// global operator new replaced: off until armed, and then only on the arming thread.

#ifndef FLOE_SERVER_INTERNAL_ALLOC_FAILURE_TESTING_H_
#define FLOE_SERVER_INTERNAL_ALLOC_FAILURE_TESTING_H_

#include <cstdint>

namespace floe::server::internal {

// The `nth` allocation (from 1) of this thread from now on throws std::bad_alloc; the others
// succeed.
void FailNthAllocation(int64_t nth);
// Disarms; whether the armed allocation was reached (and failed).
bool StopFailingAllocations();

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_ALLOC_FAILURE_TESTING_H_
