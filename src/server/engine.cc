// The Engine: clients, statistics, the exclusive section, active expiry. Its configuration
// (CONFIG SET, the hot settings) is in config.cc.

#include <algorithm>

#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"

namespace floe::server {

// ---------------------------------------------------------------------------------------------
Engine::Engine(Config config, int workers)
    : config_(std::move(config)),
      analytics_(std::make_unique<internal::AnalyticsPool>()),
      pieces_(std::make_unique<internal::AnalyticsPool>(0, kMaxQueuedPieces)) {
  workers = std::max(workers, 1) + 1;  // the last one runs proxy sessions
  const size_t ncommands = internal::AllCommands().size();
  for (int i = 0; i < workers; i++) {
    worker_locks_.emplace_back();
    auto s = std::make_unique<WorkerStats>();
    s->calls.reset(new std::atomic<uint64_t>[ncommands]());
    s->ticks.reset(new std::atomic<uint64_t>[ncommands]());
    s->failed.reset(new std::atomic<uint64_t>[ncommands]());
    s->latency.reset(new std::atomic<LatencyCounts*>[ncommands]());
    stats_.push_back(std::move(s));
  }
  start_ms_ = static_cast<int64_t>(WallMicros() / 1000);
  // The cycle clock calibrates itself on first use (a 5 ms spin): here, not in the first
  // command's latency record on an I/O thread.
  (void)CyclesToMicros(0);
  // A cluster member, founded (--cluster) or joined (--join): its writes at home are captured
  // for the slots it owns with backups, and it keeps the copies of the slots it backs up.
  if (!config_.cluster.empty() || !config_.join.empty()) {
    replication_ = std::make_unique<internal::Replication>(this);
  }
  MutexLock lock(&config_mu_);
  ApplyHotSettings(config_);
}

Engine::~Engine() = default;

int64_t Engine::ReplicaStoreBytes() const {
  // A backup's copies, and the changes this member's backups have not acknowledged yet (W4:
  // they wait while a backup is down, so maxmemory refuses writes rather than grow the queue).
  return replication_ != nullptr ? static_cast<int64_t>(replication_->store().store().MemoryUsed() +
                                                        replication_->sender().queued_bytes())
                                 : 0;
}

bool Engine::CheckPassword(std::string_view password) const {
  std::string expected;
  {
    MutexLock lock(&config_mu_);
    expected = config_.requirepass;
  }
  if (expected.empty()) return true;
  // Constant time in the length of the expected password.
  unsigned diff = password.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); i++) {
    diff |= static_cast<unsigned>(expected[i] ^ (i < password.size() ? password[i] : 0));
  }
  return diff == 0;
}

int64_t Engine::UsedMemory(bool may_trim_copies) {
  const auto now = static_cast<int64_t>(NowMicros());
  const bool trim_due = may_trim_copies && trim_copies_.load(std::memory_order_relaxed);
  if (trim_due || now - used_memory_at_us_.load(std::memory_order_relaxed) > 1000) {
    int64_t used = static_cast<int64_t>(store_.MemoryUsed()) + client_buffer_bytes() +
                   DetachedFrameBytes() + ChunkStoreBytes() + ReplicaStoreBytes();
    // Cached copies of other nodes' keys count too, and go first when memory is short.
    if (internal::ClusterNode* node = cluster()) {
      dkv::Dkv& d = node->dkv();
      int64_t cached = static_cast<int64_t>(d.CacheBytes());
      const int64_t limit = maxmemory();
      if (cached > 0 && limit > 0 && used + cached > limit) {
        if (may_trim_copies) {
          d.TrimCache();
          cached = static_cast<int64_t>(d.CacheBytes());
          trim_copies_.store(false, std::memory_order_relaxed);
        } else {
          // Not here (the caller may hold DKV locks): they are as good as gone.
          trim_copies_.store(true, std::memory_order_relaxed);
          cached = 0;
        }
      }
      used += cached;
    }
    used_memory_.store(used, std::memory_order_relaxed);
    used_memory_at_us_.store(now, std::memory_order_relaxed);
  }
  return used_memory_.load(std::memory_order_relaxed);
}

bool Engine::TryReserveMemory(int64_t bytes, int64_t used, int64_t limit) {
  // A compare-and-swap loop, so the counter never holds an attempt that fails (which could
  // refuse another that fits) nor passes the limit. 0 <= bytes <= limit, so limit - bytes
  // cannot overflow, nor (once cur is within it) limit - bytes - cur.
  int64_t cur = reserved_memory_.load(std::memory_order_acquire);
  do {
    if (cur > limit - bytes || used > limit - bytes - cur) return false;
  } while (!reserved_memory_.compare_exchange_weak(cur, cur + bytes, std::memory_order_acq_rel,
                                                   std::memory_order_acquire));
  return true;
}

bool Engine::PostPiece(std::function<void()> make) {
  return pieces_->Post(std::move(make), nullptr);
}

void Engine::StopPieces() { pieces_->Shutdown(); }

uint64_t Engine::NewFrameId() {
  constexpr uint64_t kLowBits = 44;
  const internal::ClusterNode* node = cluster();
  const uint64_t member = node != nullptr ? node->self() : 0;
  // relaxed: only uniqueness matters, which the read-modify-write gives.
  const uint64_t n = frame_totals_->next_id.fetch_add(1, std::memory_order_relaxed);
  return (member << kLowBits) | (n & ((uint64_t{1} << kLowBits) - 1));
}

int64_t Engine::UsedMemoryNow() const {
  int64_t used = static_cast<int64_t>(store_.MemoryUsed()) + client_buffer_bytes() +
                 DetachedFrameBytes() + ChunkStoreBytes() + ReplicaStoreBytes();
  if (const internal::ClusterNode* node = cluster()) {
    used += static_cast<int64_t>(node->dkv().CacheBytes());
  }
  return used;
}

std::shared_ptr<ClientState> Engine::RegisterClient(std::string addr, std::string laddr) {
  auto c = std::make_shared<ClientState>();
  c->id = next_client_id_.fetch_add(1, std::memory_order_relaxed);
  c->addr = std::move(addr);
  c->laddr = std::move(laddr);
  c->created_ms = static_cast<int64_t>(WallMicros() / 1000);
  c->last_interaction_ms.store(c->created_ms, std::memory_order_relaxed);
  MutexLock lock(&clients_mu_);
  clients_.emplace(c->id, c);
  client_count_.store(clients_.size(), std::memory_order_relaxed);
  return c;
}

void Engine::UnregisterClient(uint64_t id) {
  MutexLock lock(&clients_mu_);
  clients_.erase(id);
  client_count_.store(clients_.size(), std::memory_order_relaxed);
}

std::vector<std::shared_ptr<ClientState>> Engine::Clients() const {
  MutexLock lock(&clients_mu_);
  std::vector<std::shared_ptr<ClientState>> out;
  out.reserve(clients_.size());
  for (const auto& [id, c] : clients_) out.push_back(c);
  return out;
}

Engine::ExclusiveSection::ExclusiveSection(Engine* engine) FLOE_NO_THREAD_SAFETY_ANALYSIS
    : engine_(engine) {
  for (Mutex& m : engine_->worker_locks_) m.Lock();
}

Engine::ExclusiveSection::~ExclusiveSection() FLOE_NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = engine_->worker_locks_.rbegin(); it != engine_->worker_locks_.rend(); ++it) {
    it->Unlock();
  }
}

// Like Redis's activeExpireCycle: sweep slots of shards that hold expiring keys; keep going
// while more than a quarter of the expiring keys looked at had expired and time remains.
void Engine::ActiveExpireCycle(int worker, uint64_t budget_us) {
  if (store_.ExpiringCount() == 0) return;
  const uint64_t start = NowMicros();
  MutexLock lock(&worker_lock(worker));
  for (;;) {
    const auto now_ms = static_cast<int64_t>(WallMicros() / 1000);
    const store::Store::ExpireSweep sweep = store_.RemoveExpired(&expire_cursor_, 256, now_ms);
    stats(worker).expired_keys.fetch_add(sweep.removed, std::memory_order_relaxed);
    if (sweep.examined == 0 || sweep.removed * 4 < sweep.examined) break;
    if (NowMicros() - start > budget_us) break;
  }
}

}  // namespace floe::server
