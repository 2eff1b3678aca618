// Frames as values of the store (private to server/; docs/frame.md, "Frames in the store").
//
//   1. A frame is one value of type kFrame at its name. The value's cell (sketch_cell.h) holds a
//      FrameHolder: a shared, immutable frame::Frame whose chunks are reference-counted byte
//      strings. Nothing changes a frame in place, so readers copy the shared_ptr out under the
//      cell's lock and work on it without any lock: a frame dropped or replaced meanwhile lives
//      until its last reader lets go.
//   2. RENAME, EXPIRE, PERSIST and the like rewrite the value sharing the cell (RewriteValue):
//      no chunk is copied. DEL, UNLINK, FLUSHALL and FRAME.DROP drop the value; the chunks go with
//      the last reference. DUMP refuses a frame.
//   3. Memory: the cell charges the frame's compressed bytes to the store (rule 8 of
//      sketch_cell.h), so frames count toward maxmemory; an import also reserves its input's size
//      while it parses (cmd_frame_import.cc, ImportWork), so a frame counts before it is built. A
//      frame dropped or replaced while a reader still holds it (an analytics task, an export job,
//      an HTTP reader) counts too, until the last reference goes: the store's frames are made by
//      ShareCounted, which adds their charge to FrameTotals::live_charge for as long as the frame
//      lives, and each cell's FrameTally adds it to FrameTotals::stored_charge for as long as the
//      cell lives; live - stored, the detached bytes, is part of used memory
//      (Engine::UsedMemoryNow, Engine::DetachedFrameBytes).
//   4. The homing rule for a cluster (docs/frame.md): chunk k of every column of frame F belongs
//      to the key ChunkKey(F, k), one slot per (frame, chunk index), so the row-aligned chunks a
//      map reads together live on one node. On one node the chunks stay inside F's value.

#ifndef FLOE_SERVER_INTERNAL_FRAME_VALUE_H_
#define FLOE_SERVER_INTERNAL_FRAME_VALUE_H_

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "frame/frame.h"
#include "server/internal/command.h"
#include "server/internal/engine_budget.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

inline constexpr uint16_t kFrameType = static_cast<uint16_t>(ValueType::kFrame);

// What a frame value's cell charges: the chunks' bytes, a little per chunk for their
// bookkeeping, and the header (names and categorical domains).
inline size_t FrameCharge(const frame::Frame& f) {
  return static_cast<size_t>(f.compressed_bytes()) + f.columns() * f.chunk_count() * 96 +
         static_cast<size_t>(f.header_bytes());
}

// Sends DROP_CHUNKS for a cluster frame's id to every member when the last stored header of that
// id dies (DEL, UNLINK, FLUSHALL, an expiry, a REPLACE by another id: docs/frames_cluster.md,
// D10). Owned jointly by the node and the headers' tallies; the node clears it when it stops, and
// a header that dies later leaves its chunks to the sweep. Thread-safe: the ids are queued under
// the lock and sent outside it, by the one caller that found nobody sending, in batches of
// every id queued meanwhile (a FLUSHALL's thousands of headers make a few messages a member,
// not one each, and no caller waits on another's sends). Stop waits for a send under way.
class ChunkDropper {
 public:
  using Send = std::function<void(const std::vector<uint64_t>& frame_ids)>;
  explicit ChunkDropper(Send send) : send_(std::move(send)) {}
  void Drop(uint64_t frame_id) {
    {
      MutexLock lock(&mu_);
      drops_++;
      if (!send_ || lose_) return;
      pending_.push_back(frame_id);
      if (sending_) return;  // the sending caller takes it with its next batch
      sending_ = true;
    }
    for (;;) {
      std::vector<uint64_t> batch;
      Send send;
      {
        MutexLock lock(&mu_);
        if (pending_.empty() || !send_) {
          pending_.clear();
          sending_ = false;
          idle_.notify_all();
          return;
        }
        batch.swap(pending_);
        send = send_;
      }
      send(batch);  // asynchronous calls: nothing waits here
    }
  }
  void Stop() {
    MutexLock lock(&mu_);
    send_ = nullptr;
    while (sending_) idle_.wait(mu_);
  }
  // Tests: loses every DROP_CHUNKS from now on, as a lost message would.
  void TEST_Lose(bool lose) {
    MutexLock lock(&mu_);
    lose_ = lose;
  }
  // Tests: how many drops were asked for (sent or lost).
  uint64_t TEST_drops() {
    MutexLock lock(&mu_);
    return drops_;
  }

 private:
  Mutex mu_;
  std::condition_variable_any idle_;  // sending_ went false
  Send send_ FLOE_GUARDED_BY(mu_);
  bool lose_ FLOE_GUARDED_BY(mu_) = false;
  uint64_t drops_ FLOE_GUARDED_BY(mu_) = 0;
  std::vector<uint64_t> pending_ FLOE_GUARDED_BY(mu_);
  bool sending_ FLOE_GUARDED_BY(mu_) = false;
};

// Counts a frame in the engine's FrameTotals for as long as its cell lives (the frames in the
// store: INFO's counts, and the charge the cells hold, rule 3), and its id among the live ones
// (docs/frames_cluster.md, D2 and D10). A cluster frame's header armed with a dropper (once it is
// stored: Arm) sends DROP_CHUNKS when it dies as the last live value of its id; a header never
// stored (refused: the key exists, OOM, a bad key) drops nothing, its coordinator does.
class FrameTally {
 public:
  FrameTally(std::shared_ptr<Engine::FrameTotals> totals, const frame::Frame& f, uint64_t id)
      : FrameTally(std::move(totals), static_cast<int64_t>(f.compressed_bytes()),
                   static_cast<int64_t>(f.raw_bytes()), static_cast<int64_t>(FrameCharge(f)), id) {}
  // A cluster frame's header (docs/frames_cluster.md, D2): counted with its chunks' figures, but
  // charging nothing here (its cell charges the header's bytes to the store as any value's, and
  // the chunks are charged where they live, D3).
  FrameTally(std::shared_ptr<Engine::FrameTotals> totals, const FrameHeader& h)
      : FrameTally(std::move(totals), Sum(h, &FrameHeader::Chunk::compressed_bytes),
                   Sum(h, &FrameHeader::Chunk::raw_bytes), 0, h.id) {}
  ~FrameTally() {
    Add(-1);
    bool last = false;
    {
      MutexLock lock(&totals_->ids_mu);
      auto it = totals_->live_ids.find(id_);
      if (it != totals_->live_ids.end() && --it->second <= 0) {
        totals_->live_ids.erase(it);
        last = true;
      }
    }
    if (dropper_ != nullptr && last) dropper_->Drop(id_);
  }
  // A header's tally once its value is stored. REQUIRES: the caller holds a reference to the
  // tally (so no other thread runs its destructor meanwhile), and calls this once.
  void Arm(std::shared_ptr<ChunkDropper> dropper) { dropper_ = std::move(dropper); }
  uint64_t id() const { return id_; }
  FrameTally(const FrameTally&) = delete;
  FrameTally& operator=(const FrameTally&) = delete;

 private:
  FrameTally(std::shared_ptr<Engine::FrameTotals> totals, int64_t compressed, int64_t raw,
             int64_t charge, uint64_t id)
      : totals_(std::move(totals)), compressed_(compressed), raw_(raw), charge_(charge), id_(id) {
    Add(1);
    MutexLock lock(&totals_->ids_mu);
    totals_->live_ids[id_]++;
  }
  static int64_t Sum(const FrameHeader& h, uint64_t FrameHeader::Chunk::*field) {
    uint64_t n = 0;
    for (const FrameHeader::Chunk& c : h.chunks) n += c.*field;
    return static_cast<int64_t>(n);
  }
  void Add(int64_t sign) {
    // relaxed: statistics for INFO, and a figure the maxmemory checks read as they read the
    // store's (a moment late at worst).
    totals_->count.fetch_add(sign, std::memory_order_relaxed);
    totals_->compressed_bytes.fetch_add(sign * compressed_, std::memory_order_relaxed);
    totals_->raw_bytes.fetch_add(sign * raw_, std::memory_order_relaxed);
    totals_->stored_charge.fetch_add(sign * charge_, std::memory_order_relaxed);
  }
  std::shared_ptr<Engine::FrameTotals> totals_;
  int64_t compressed_, raw_, charge_;
  uint64_t id_;
  std::shared_ptr<ChunkDropper> dropper_;  // a cluster frame's header only
};

// The store's shared frame (rule 3): its charge counts in totals->live_charge from here until
// the last reference to it goes, wherever that reference is by then.
inline std::shared_ptr<const frame::Frame> ShareCounted(std::shared_ptr<Engine::FrameTotals> totals,
                                                        frame::Frame f) {
  const auto charge = static_cast<int64_t>(FrameCharge(f));
  auto release = [totals, charge](const frame::Frame* p) {
    delete p;
    totals->live_charge.fetch_sub(charge, std::memory_order_relaxed);  // relaxed: as FrameTally's
  };
  std::unique_ptr<frame::Frame, decltype(release)> owned(new frame::Frame(std::move(f)), release);
  totals->live_charge.fetch_add(charge, std::memory_order_relaxed);
  // Should the control block not be allocated, the deleter runs (and takes the charge back).
  return std::shared_ptr<const frame::Frame>(std::move(owned));
}

// An import under way registers its frame's id at the member that will store its header (the
// import runs there, rule D5) for as long as it runs, so the orphan sweep never drops the chunks
// it has put (docs/frames_cluster.md, D10; FRAME_IDS_LIVE answers "importing").
class ImportingId {
 public:
  ImportingId(std::shared_ptr<Engine::FrameTotals> totals, uint64_t id)
      : totals_(std::move(totals)), id_(id) {
    MutexLock lock(&totals_->ids_mu);
    totals_->importing_ids[id_]++;
  }
  ~ImportingId() {
    MutexLock lock(&totals_->ids_mu);
    auto it = totals_->importing_ids.find(id_);
    if (it != totals_->importing_ids.end() && --it->second <= 0) totals_->importing_ids.erase(it);
  }
  ImportingId(const ImportingId&) = delete;
  ImportingId& operator=(const ImportingId&) = delete;
  uint64_t id() const { return id_; }

 private:
  std::shared_ptr<Engine::FrameTotals> totals_;
  uint64_t id_;
};

// What a cluster frame's header value charges: what it holds in memory, every block at the
// allocator's size (AllocatedBytes): the header with its shared count, its columns and chunks
// as their vectors hold them, and each name and domain value (a string's own bytes, plus its
// heap block when longer than the string keeps inline).
inline size_t HeaderCharge(const FrameHeader& h) {
  auto string_bytes = [](const std::string& s) {
    return s.capacity() > 15 ? AllocatedBytes(s.capacity() + 1) : 0;
  };
  uint64_t n = AllocatedBytes(sizeof(FrameHeader) + 16) +
               AllocatedBytes(h.columns.capacity() * sizeof(FrameHeader::Column)) +
               AllocatedBytes(h.chunks.capacity() * sizeof(FrameHeader::Chunk));
  for (const FrameHeader::Column& c : h.columns) {
    n += string_bytes(c.name) + AllocatedBytes(c.domain.capacity() * sizeof(std::string));
    for (const std::string& d : c.domain) n += string_bytes(d);
  }
  return static_cast<size_t>(n);
}

struct FrameHolder {
  // One node: the frame. A cluster: its header only (docs/frames_cluster.md, D2), the chunks
  // in the members' chunk stores; frame is then null.
  std::shared_ptr<const frame::Frame> frame;
  std::shared_ptr<const FrameHeader> header;
  size_t header_charge = 0;           // HeaderCharge(*header), computed once
  std::shared_ptr<FrameTally> tally;  // and the frame's id (docs/frames_cluster.md, D2)
  uint64_t id() const { return tally == nullptr ? 0 : tally->id(); }
  size_t MemoryBytes() const {
    return frame != nullptr ? ChargeOf(*frame) : header != nullptr ? header_charge : 0;
  }
  static size_t ChargeOf(const frame::Frame& f) { return FrameCharge(f); }
};

// Tests only: lifts the refusal below in this process (in-process clusters), so the commands
// made to work in a cluster can be tested before the refusal goes (docs/frames_cluster.md).
inline std::atomic<bool>& TEST_FramesInCluster() {
  static std::atomic<bool> on{false};
  return on;
}

// Frames and jobs live on one node for now: in a cluster every FRAME.* and JOB.* command is
// refused (true, with the error replied) rather than run on whichever node routing picks.
inline bool RefusedInCluster(CommandContext& ctx) {
  // relaxed: a test sets it before its cluster serves any command.
  if (ctx.engine.cluster() == nullptr || TEST_FramesInCluster().load(std::memory_order_relaxed)) {
    return false;
  }
  ctx.Error("ERR frames and jobs are single-node for now: not available in a cluster");
  return true;
}

// Frame names: 1 to 512 bytes, no '{' or '}' (a hash tag would move chunks: rule 4).
Status CheckFrameName(std::string_view name);
// Rule 4: "F#k" hashed whole (F has no braces), so each (frame, chunk index) has its own slot.
std::string ChunkKey(std::string_view frame, uint64_t k);

// The frame at `name`: NotFound ("ERR no such frame"), or WRONGTYPE for another type.
Result<std::shared_ptr<const frame::Frame>> LoadFrame(CommandContext& ctx, std::string_view name);
// The value at `name` as LoadFrame finds it: the frame on one node, or a cluster frame's header
// (docs/frames_cluster.md, D2); exactly one of the two is set.
struct LoadedFrame {
  std::shared_ptr<const frame::Frame> frame;
  std::shared_ptr<const FrameHeader> header;
};
Result<LoadedFrame> LoadFrameOrHeader(CommandContext& ctx, std::string_view name);
// A column of a cluster frame's header by name, or by index as FindColumn takes one.
Result<size_t> FindHeaderColumn(const FrameHeader& h, std::string_view col);

// Puts `f` at `name` from any thread (an import's job, a command). Refuses (AlreadyExists, with
// the client's text) when a live key is there and !replace; ResourceExhausted (OOM text) when
// maxmemory would be passed.
Status StoreFrame(Engine& engine, std::string_view name, frame::Frame f, bool replace);
// Puts a cluster frame's header at `name` (D2, D4: PUT_HEADER's handler, after every chunk was
// put), refusing as StoreFrame does, and refusing (AlreadyExists) a header whose id is live
// under another key. Once stored, `dropper` sends DROP_CHUNKS when the last header of its id
// dies; a refused header drops nothing (its chunks are its coordinator's to drop).
Status StoreFrameHeader(Engine& engine, std::string_view name, FrameHeader header, bool replace,
                        std::shared_ptr<ChunkDropper> dropper);

// The frame commands' shared pieces (cmd_frame_analytics.cc).
inline constexpr char kFrameTargetExists[] =
    "ERR target key exists (FRAME.IMPORT and FRAME.GROUPBY take REPLACE)";
// A column by name, or else by 0-based index; "ERR no such column" otherwise.
Result<size_t> FindColumn(const frame::Frame& f, std::string_view col);
// A map/reduce task's failure as the client's error: the budget's OOM as it is, argument and
// limit errors with "ERR ".
Status TaskError(const Status& s);
// The reply of a task that made the frame `made` for the command's destination (args[2]). Its
// store charge is held from the task's end (in `budget`, the task's own, topped up to what the
// store will charge; OOM if that does not fit) until the reply is written, so results waiting
// for their client's thread count against maxmemory. Then it is stored on the client's thread
// under its worker lock, as if the command had run inline (a transaction elsewhere never sees it
// half done, and the client's next command sees it: rule A2), the target checked again (it may
// have been made meanwhile); the reply is the result's rows. A reply never written (its client
// left) gives the charge back with the frame.
std::function<void(CommandContext&)> StoreMadeFrame(std::shared_ptr<EngineBudget> budget,
                                                    Result<frame::Frame> made, bool replace);

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_FRAME_VALUE_H_
