// The replies of a command split across nodes, or asked of every node, combined into the
// client's one reply (docs/cluster.md, rule C2), and the error replies of a forward (C4).
// Internal to src/server: routing.cc makes the gathers, gather.cc combines them.

#ifndef FLOE_SERVER_INTERNAL_GATHER_H_
#define FLOE_SERVER_INTERNAL_GATHER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"

namespace floe::server::internal {

enum class Combine : uint8_t {
  kAsIs,     // one part: its reply is the reply
  kSum,      // integers added (DEL, UNLINK, EXISTS, TOUCH, DBSIZE)
  kConcat,   // arrays joined (KEYS)
  kSorted,   // arrays of names joined and sorted (FRAME.LIST)
  kJoined,   // arrays of anything joined as they came, in the client's protocol (JOB.LIST)
  kMGet,     // values put back in the order of the keys
  kAllOk,    // +OK when every part said OK (FLUSHALL, FLUSHDB)
  kRandom,   // one of the non-null answers (RANDOMKEY)
  kScan,     // one member's SCAN reply with the cursor made cluster-wide
  kPfCount,  // HLL.EXPORT of every key, merged here (PFCOUNT)
};

// The parts of a command that runs on several nodes, and their replies as they come.
struct Gather {
  Combine how = Combine::kAsIs;
  int protocol = 2;
  std::vector<std::string> replies;            // per part: RESP2 bytes (kAsIs: the client's)
  std::vector<std::vector<size_t>> positions;  // kMGet, kPfCount: each part's keys' positions
  size_t keys = 0;                             // kMGet, kPfCount
  uint64_t scan_index = 0, members = 0;        // kScan
  std::atomic<size_t> remaining{0};
  std::function<void(std::string)> done;
};

// A RESP error reply of `text`.
std::string ErrorBytes(std::string_view text);
// Rule C4's answer when the node at `address` does not answer (or refuses) a request.
std::string Unreachable(const std::string& address, const Status& why);
// The client's reply from every part's reply (REQUIRES: every part answered).
std::string FinishGather(Gather& g);
// Records part `i`'s reply; the last one to arrive finishes the whole and calls `done`.
void PartDone(const std::shared_ptr<Gather>& g, size_t i, std::string reply);

// SCAN cursors of a cluster: the member's index and its own cursor in one number.
bool EncodeScanCursor(uint64_t local, uint64_t index, uint64_t* out);
void DecodeScanCursor(uint64_t cursor, uint64_t* local, uint64_t* index);

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_GATHER_H_
