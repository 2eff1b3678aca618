// A member's chunk store (internal/chunk_store.h; docs/frames_cluster.md, rule D3).

#include "server/internal/chunk_store.h"

#include <string>
#include <utility>

#include "frame/frame.h"
#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

namespace {

// Rule 1: every column checked, all with the same rows; nothing copied.
Result<uint32_t> CheckChunk(const ChunkPut& put) {
  uint32_t rows = 0;
  for (size_t c = 0; c < put.columns.size(); c++) {
    Result<frame::ChunkView> view = frame::ChunkView::Make(put.columns[c]);
    if (!view.ok()) {
      return Status::Corruption("chunk " + std::to_string(put.index) + " column " +
                                std::to_string(c) + ": " + std::string(view.status().message()));
    }
    if (c == 0) {
      rows = view->rows();
    } else if (view->rows() != rows) {
      return Status::Corruption("chunk " + std::to_string(put.index) +
                                ": its columns have different row counts");
    }
  }
  return rows;
}

// The entry, its columns copied into one block (after its charge was reserved).
std::shared_ptr<const ChunkStore::Chunk> MakeChunk(const ChunkPut& put, uint32_t rows) {
  auto chunk = std::make_shared<ChunkStore::Chunk>();
  size_t total = 0;
  for (std::string_view c : put.columns) total += c.size();
  chunk->bytes.reserve(total);
  for (std::string_view c : put.columns) chunk->bytes.append(c);
  chunk->columns.reserve(put.columns.size());
  size_t at = 0;
  for (std::string_view c : put.columns) {
    chunk->columns.push_back(std::string_view(chunk->bytes).substr(at, c.size()));
    at += c.size();
  }
  chunk->rows = rows;
  return chunk;
}

// A std::map node: three links and a colour beside its value.
constexpr uint64_t kMapNodeLinks = 32;

}  // namespace

int64_t ChunkStore::EntryCharge(const std::vector<std::string_view>& columns) {
  uint64_t bytes = 0;
  for (std::string_view c : columns) bytes += c.size();
  using Node = std::pair<const uint64_t, std::shared_ptr<const Chunk>>;
  // The shared Chunk with its count (make_shared: one block), its bytes, its views, its node.
  return static_cast<int64_t>(AllocatedBytes(sizeof(Chunk) + 16) + AllocatedBytes(bytes + 1) +
                              AllocatedBytes(columns.size() * sizeof(std::string_view)) +
                              AllocatedBytes(kMapNodeLinks + sizeof(Node)));
}

// The unordered map's node (a link, the hash, the id and the set) and its bucket.
const int64_t ChunkStore::kSetCharge =
    static_cast<int64_t>(AllocatedBytes(24 + sizeof(ChunkStore::Set)) + 8);

ChunkStore::~ChunkStore() {
  int64_t chunks = 0, charge = 0;
  {
    MutexLock lock(&mu_);
    for (const auto& [id, set] : sets_) {
      chunks += static_cast<int64_t>(set.chunks.size());
      charge += set.charge;
    }
    sets_.clear();
  }
  Account(-chunks, -charge);
}

void ChunkStore::Account(int64_t chunks, int64_t charge) {
  Engine::FrameTotals& t = *engine_->frame_totals();
  // relaxed: statistics, and a figure the maxmemory checks read as they read the store's.
  t.chunks.fetch_add(chunks, std::memory_order_relaxed);
  t.chunk_charge.fetch_add(charge, std::memory_order_relaxed);
}

Status ChunkStore::Put(const PutChunksRequest& request, const std::function<bool(uint16_t)>& owns) {
  // Every chunk checked and charged on the request's bytes; the entries made only once the
  // charge is reserved (rules 2 and 3).
  std::vector<uint32_t> rows;
  rows.reserve(request.chunks.size());
  int64_t total = kSetCharge;  // should the set be new
  for (const ChunkPut& put : request.chunks) {
    const uint16_t slot = ChunkSlot(request.group, put.index);
    if (!owns(slot)) {
      return Status::WrongHome("chunk " + std::to_string(put.index) + " (slot " +
                               std::to_string(slot) + ") is not homed here");
    }
    FLOE_ASSIGN_OR_RETURN(uint32_t r, CheckChunk(put));
    rows.push_back(r);
    total += EntryCharge(put.columns);
  }
  if (request.chunks.empty()) return Status::OK();
  // Rule 3: reserved against used memory and every other reservation until charged.
  const int64_t limit = engine_->maxmemory();
  if (limit > 0 &&
      (total > limit || !engine_->TryReserveMemory(total, engine_->UsedMemoryNow(), limit))) {
    return Status::ResourceExhausted(kOomError);
  }
  std::vector<std::shared_ptr<const Chunk>> made;
  made.reserve(request.chunks.size());
  for (size_t i = 0; i < request.chunks.size(); i++) {
    made.push_back(MakeChunk(request.chunks[i], rows[i]));
  }
  int64_t added_chunks = 0, added = 0;
  {
    MutexLock lock(&mu_);
    auto [it, fresh] = sets_.try_emplace(request.frame_id);
    Set& set = it->second;
    if (fresh) {
      set.header_slot = request.header_slot;
      set.charge = kSetCharge;
      added = kSetCharge;
    }
    for (size_t i = 0; i < made.size(); i++) {
      const ChunkPut& put = request.chunks[i];
      if (set.chunks.emplace(put.index, std::move(made[i])).second) {
        const int64_t charge = EntryCharge(put.columns);
        set.charge += charge;
        added += charge;
        added_chunks++;
      }
    }
    // Under the lock: whoever sees the set sees its charge, and whoever no longer sees it no
    // longer sees its charge (a Drop that accounted after its unlock left a reader of Sets()
    // and ChunkStoreBytes() a moment apart seeing no set and its bytes).
    Account(added_chunks, added);
  }
  if (limit > 0) engine_->ReleaseMemory(total);
  return Status::OK();
}

Result<std::shared_ptr<const ChunkStore::Chunk>> ChunkStore::Get(uint64_t frame_id,
                                                                 uint64_t index) const {
  MutexLock lock(&mu_);
  auto s = sets_.find(frame_id);
  if (s != sets_.end()) {
    auto c = s->second.chunks.find(index);
    if (c != s->second.chunks.end()) return c->second;
  }
  return Status::NotFound("no chunk " + std::to_string(index) + " of frame id " +
                          std::to_string(frame_id) + " here");
}

uint64_t ChunkStore::Drop(const std::vector<uint64_t>& frame_ids) {
  uint64_t dropped = 0;
  // The lock is taken for one id at a time (a peer's list holds up to kMaxFrameIds), and each
  // set is freed outside it; its charge goes with it, under the lock (as Put's comes).
  for (uint64_t id : frame_ids) {
    Set gone;
    {
      MutexLock lock(&mu_);
      auto s = sets_.find(id);
      if (s == sets_.end()) continue;
      gone = std::move(s->second);
      sets_.erase(s);
      Account(-static_cast<int64_t>(gone.chunks.size()), -gone.charge);
    }
    dropped++;
  }
  return dropped;
}

std::vector<std::pair<uint64_t, uint16_t>> ChunkStore::Sets() const {
  std::vector<std::pair<uint64_t, uint16_t>> out;
  MutexLock lock(&mu_);
  out.reserve(sets_.size());
  for (const auto& [id, set] : sets_) out.emplace_back(id, set.header_slot);
  return out;
}

bool ChunkStore::NoteSweepAnswer(uint64_t frame_id, FrameIdState state) {
  {
    MutexLock lock(&mu_);
    auto s = sets_.find(frame_id);
    if (s == sets_.end()) return false;
    if (state != FrameIdState::kGone) {
      s->second.gone_answers = 0;
      return false;
    }
    if (++s->second.gone_answers < 2) return false;
  }
  return Drop({frame_id}) > 0;
}

int64_t ChunkStore::chunks() const {
  MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, set] : sets_) n += static_cast<int64_t>(set.chunks.size());
  return n;
}

int64_t ChunkStore::charge() const {
  MutexLock lock(&mu_);
  int64_t n = 0;
  for (const auto& [id, set] : sets_) n += set.charge;
  return n;
}

}  // namespace floe::server::internal
