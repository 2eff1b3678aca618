// A member's chunk store (internal/chunk_store.h; docs/frames_cluster.md, rule D3).

#include "server/internal/chunk_store.h"

#include <string>
#include <utility>

#include "frame/frame.h"
#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

namespace {

// Rule 1: every column checked, all with the same rows.
Result<std::shared_ptr<const ChunkStore::Chunk>> MakeChunk(const ChunkPut& put, int64_t* charge) {
  auto chunk = std::make_shared<ChunkStore::Chunk>();
  chunk->columns.reserve(put.columns.size());
  for (size_t c = 0; c < put.columns.size(); c++) {
    Result<frame::ChunkView> view = frame::ChunkView::Make(put.columns[c]);
    if (!view.ok()) {
      return Status::Corruption("chunk " + std::to_string(put.index) + " column " +
                                std::to_string(c) + ": " + std::string(view.status().message()));
    }
    if (c == 0) {
      chunk->rows = view->rows();
    } else if (view->rows() != chunk->rows) {
      return Status::Corruption("chunk " + std::to_string(put.index) +
                                ": its columns have different row counts");
    }
    chunk->columns.push_back(std::make_shared<const std::string>(put.columns[c]));
    *charge += static_cast<int64_t>(put.columns[c].size()) + ChunkStore::kChunkOverhead;
  }
  return std::shared_ptr<const ChunkStore::Chunk>(std::move(chunk));
}

}  // namespace

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
  std::vector<std::pair<uint64_t, std::shared_ptr<const Chunk>>> made;
  made.reserve(request.chunks.size());
  std::vector<int64_t> charges;
  charges.reserve(request.chunks.size());
  int64_t total = 0;
  for (const ChunkPut& put : request.chunks) {
    const uint16_t slot = ChunkSlot(request.group, put.index);
    if (!owns(slot)) {
      return Status::WrongHome("chunk " + std::to_string(put.index) + " (slot " +
                               std::to_string(slot) + ") is not homed here");
    }
    int64_t charge = 0;
    FLOE_ASSIGN_OR_RETURN(std::shared_ptr<const Chunk> chunk, MakeChunk(put, &charge));
    made.emplace_back(put.index, std::move(chunk));
    charges.push_back(charge);
    total += charge;
  }
  if (made.empty()) return Status::OK();
  // Rule 3: reserved against used memory and every other reservation until charged.
  const int64_t limit = engine_->maxmemory();
  if (limit > 0 &&
      (total > limit || !engine_->TryReserveMemory(total, engine_->UsedMemoryNow(), limit))) {
    return Status::ResourceExhausted(kOomError);
  }
  int64_t added_chunks = 0, added = 0;
  {
    MutexLock lock(&mu_);
    Set& set = sets_[request.frame_id];
    if (set.chunks.empty()) set.header_slot = request.header_slot;
    for (size_t i = 0; i < made.size(); i++) {
      if (set.chunks.emplace(made[i].first, std::move(made[i].second)).second) {
        set.charge += charges[i];
        added += charges[i];
        added_chunks++;
      }
    }
  }
  Account(added_chunks, added);
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
  int64_t chunks = 0, charge = 0;
  // The lock is taken for one id at a time (a peer's list holds up to kMaxFrameIds), and each
  // set is freed outside it.
  for (uint64_t id : frame_ids) {
    Set gone;
    {
      MutexLock lock(&mu_);
      auto s = sets_.find(id);
      if (s == sets_.end()) continue;
      gone = std::move(s->second);
      sets_.erase(s);
    }
    dropped++;
    chunks += static_cast<int64_t>(gone.chunks.size());
    charge += gone.charge;
  }
  Account(-chunks, -charge);
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
