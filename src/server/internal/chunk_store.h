// A member's chunk store (docs/frames_cluster.md, rule D3): the chunks of frames in a cluster
// that this member homes, keyed by (frame id, chunk index), outside the keyspace. Private to
// server/.
//
//   1. An entry is every column's chunk k of one frame, as reference-counted bytes checked by
//      frame::ChunkView::Make (a peer's bytes are untrusted: Corruption), every column with the
//      same rows. A chunk put twice under the same id and index keeps the first (rule D4).
//   2. Put is all or nothing: every chunk of the request is checked (home, bytes, memory) before
//      any is kept. A chunk whose ChunkSlot(group, index) this member does not own is refused
//      (WrongHome).
//   3. Memory: an entry charges what it holds (EntryCharge: its columns' bytes in one block,
//      its views, its node in the set and its shared count, each block at the allocator's
//      size, AllocatedBytes) and a set what it holds (kSetCharge) to the engine's FrameTotals
//      (chunks, chunk_charge), part of used memory (Engine::UsedMemoryNow). A put reserves its
//      whole charge, with used memory measured afresh and every other reservation counted,
//      before it copies a byte; one that does not fit under maxmemory is refused with the OOM
//      text and keeps nothing. The charge goes when the entry leaves the store; a reader
//      holding its bytes keeps them alive unseen.
//   4. A set (a frame id's entries) records its header's slot, for the orphan sweep (rule D10).
//   5. The sweep (ClusterNode::SweepChunks, every kChunkSweepUs) asks the home of each set's
//      header slot whether its id is live, importing or gone (FRAME_IDS_LIVE); a set answered
//      gone twice in a row is dropped. An import registers its id at the header's home before it
//      puts a chunk (ImportingId), so a sweep never drops the chunks of an import under way.
//
// Thread rules: thread-safe; every method takes the store's lock for a map operation only
// (checking bytes and reserving memory happen outside it).

#ifndef FLOE_SERVER_INTERNAL_CHUNK_STORE_H_
#define FLOE_SERVER_INTERNAL_CHUNK_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/base.h"
#include "server/internal/frame_rpc.h"
#include "server/server.h"

namespace floe::server::internal {

// How often a member sweeps its chunk store for orphans (rule 5).
inline constexpr uint64_t kChunkSweepUs = 30'000'000;

class ChunkStore {
 public:
  // Every column's chunk k in one block: `columns` view `bytes`. Immutable once made.
  struct Chunk {
    std::string bytes;
    std::vector<std::string_view> columns;
    uint32_t rows = 0;
  };
  // Rule 3: what an entry of these columns' sizes holds, and a set (its node in the map of sets,
  // its slot there and its map of entries) beside its entries.
  static int64_t EntryCharge(const std::vector<std::string_view>& columns);
  static const int64_t kSetCharge;

  explicit ChunkStore(Engine* engine) : engine_(engine) {}
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // Rules 1-3. `owns(slot)`: whether this member homes that slot.
  Status Put(const PutChunksRequest& request, const std::function<bool(uint16_t)>& owns);
  // NotFound when the entry is not here.
  Result<std::shared_ptr<const Chunk>> Get(uint64_t frame_id, uint64_t index) const;
  // Drops each id's set, taking the lock for one id at a time; returns how many sets were here.
  uint64_t Drop(const std::vector<uint64_t>& frame_ids);
  // Every set here: its frame id and header slot (rule 4).
  std::vector<std::pair<uint64_t, uint16_t>> Sets() const;
  // The orphan sweep (rule 5): the state the home of a set's header slot gave for its id. The
  // second kGone in a row drops the set (true); kLive or kImporting starts the count again.
  bool NoteSweepAnswer(uint64_t frame_id, FrameIdState state);
  // The entries and the charge they hold (INFO's frame_chunks and frame_chunk_bytes).
  int64_t chunks() const;
  int64_t charge() const;

 private:
  struct Set {
    uint16_t header_slot = 0;
    std::map<uint64_t, std::shared_ptr<const Chunk>> chunks;
    int64_t charge = 0;
    int gone_answers = 0;  // rule 5
  };
  void Account(int64_t chunks, int64_t charge);

  Engine* const engine_;
  mutable Mutex mu_;
  std::unordered_map<uint64_t, Set> sets_ FLOE_GUARDED_BY(mu_);
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_CHUNK_STORE_H_
