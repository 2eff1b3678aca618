// What any thread may read of an rpc peer without the endpoint's mutex: whether it is one of
// ours, whether it is up, and the lease from it (docs/rpc.md, "Peers and liveness", "Leases").

#ifndef FLOE_RPC_INTERNAL_PEER_CELLS_H_
#define FLOE_RPC_INTERNAL_PEER_CELLS_H_

#include <atomic>
#include <cstdint>
#include <memory>

#include "rpc/rpc.h"

namespace floe::rpc::internal {

struct PeerCell {
  std::atomic<bool> known{false};
  std::atomic<bool> up{false};
  std::atomic<uint64_t> lease_until{0};  // holder side: valid while the loop clock is below it
};

// A two-level table by node id. A page is allocated when an id in its range is first made and
// lives as long as the table, so a cell never moves or goes away (a lease update queued as a
// job may hold a reference to one). Find is lock-free from any thread; Make is for one writer
// at a time (the endpoint calls it under its mutex).
class PeerCells {
 public:
  PeerCells() : pages_(new std::atomic<Page*>[kPages]()) {}
  ~PeerCells() {
    for (size_t i = 0; i < kPages; i++) delete pages_[i].load(std::memory_order_relaxed);
  }
  PeerCells(const PeerCells&) = delete;
  PeerCells& operator=(const PeerCells&) = delete;

  // Null for an id no page covers yet; a cell that exists may still not be `known`.
  PeerCell* Find(NodeId id) const {
    if (id > kMaxPeerId) return nullptr;
    Page* page = pages_[id >> kPageBits].load(std::memory_order_acquire);
    return page == nullptr ? nullptr : &page->cells[id & ((size_t{1} << kPageBits) - 1)];
  }
  // REQUIRES: id <= kMaxPeerId.
  PeerCell& Make(NodeId id) {
    std::atomic<Page*>& slot = pages_[id >> kPageBits];
    if (slot.load(std::memory_order_relaxed) == nullptr) {
      slot.store(new Page(), std::memory_order_release);
    }
    return *Find(id);
  }

 private:
  static constexpr int kPageBits = 10;
  static constexpr size_t kPages = (size_t{kMaxPeerId} >> kPageBits) + 1;
  struct Page {
    PeerCell cells[size_t{1} << kPageBits];
  };
  std::unique_ptr<std::atomic<Page*>[]> pages_;
};

}  // namespace floe::rpc::internal

#endif  // FLOE_RPC_INTERNAL_PEER_CELLS_H_
