// The agreed table (docs/membership.md, rule M1): the state machine a Raft log drives, and the
// proposals that go through the leader.

#include <chrono>
#include <condition_variable>
#include <map>

#include "cluster/cluster.h"

namespace floe::cluster {

// What the log drives: each committed change applied to a copy of the table, which then
// replaces the published one. A change the table refuses changes nothing, on every member alike
// (Apply is deterministic, contract 7), and its reason goes back to the proposer.
class Meta::Machine : public consensus::StateMachine {
 public:
  explicit Machine(MetaOptions options) : options_(std::move(options)) {}

  void Apply(uint64_t index, std::string_view entry) override {
    Result<Change> change = DecodeChange(entry);
    Status result;
    std::shared_ptr<const Table> published;
    {
      MutexLock lock(&mu_);
      if (!change.ok()) {
        // Proposals are encoded by EncodeChange; bytes that do not decode cannot come from a
        // member of this version. Skipped alike everywhere.
        result = Status::Corruption("log entry " + std::to_string(index) + ": " +
                                    std::string(change.status().message()));
      } else {
        auto next = std::make_shared<Table>(*table_);
        result = next->Apply(*change);
        if (result.ok()) {
          table_ = std::move(next);
          published = table_;
        }
      }
      results_[index] = result;
      // Results are read by the proposer's done, which runs right after its entry's Apply; the
      // others (entries proposed elsewhere) are kept a while, then dropped.
      while (results_.size() > kKeptResults) results_.erase(results_.begin());
    }
    if (!result.ok() && change.ok() && change->kind != Change::Kind::kInitialize) {
      FLOE_LOG_DEBUG("cluster: log entry {} refused by the table: {}", index, result.ToString());
    }
    if (published && options_.on_change) options_.on_change(published);
  }

  std::string Snapshot() override {
    MutexLock lock(&mu_);
    return table_->Encode();
  }

  Status Restore(std::string_view snapshot) override {
    Result<Table> t = Table::Decode(snapshot);
    if (!t.ok()) return t.status();
    auto published = std::make_shared<const Table>(std::move(*t));
    {
      MutexLock lock(&mu_);
      table_ = published;
    }
    if (options_.on_change) options_.on_change(published);
    return Status::OK();
  }

  std::shared_ptr<const Table> table() {
    MutexLock lock(&mu_);
    return table_;
  }

  // The table's verdict on the entry at `index`, once (for the proposer's done).
  Status TakeResult(uint64_t index) {
    MutexLock lock(&mu_);
    auto it = results_.find(index);
    if (it == results_.end()) return Status::OK();  // dropped: long applied, accepted or not
    Status st = it->second;
    results_.erase(it);
    return st;
  }

  const MetaOptions& options() const { return options_; }

 private:
  static constexpr size_t kKeptResults = 1024;
  const MetaOptions options_;
  Mutex mu_;
  std::shared_ptr<const Table> table_ FLOE_GUARDED_BY(mu_) = std::make_shared<const Table>();
  std::map<uint64_t, Status> results_ FLOE_GUARDED_BY(mu_);
};

Result<ClusterId> ClusterIdOfLog(const consensus::StoredLog& log) {
  Table table;
  if (!log.snapshot.empty()) {
    Result<Table> t = Table::Decode(log.snapshot);
    if (!t.ok()) return Status::Corruption("the log's snapshot: " + t.status().ToString());
    table = std::move(*t);
  }
  for (const auto& [index, entry] : log.entries) {
    if (!table.cluster_id().empty()) break;
    Result<Change> change = DecodeChange(entry);
    if (change.ok()) (void)table.Apply(*change);  // a refused change changes nothing (Apply)
  }
  return table.cluster_id();
}

Result<std::unique_ptr<Meta>> Meta::Start(MetaOptions options) {
  if (!options.founders.empty()) {
    // Fail now, not when the log's first entry is refused.
    Result<Table> t = Table::Initial(options.founders, options.replicas);
    if (!t.ok()) return t.status();
  }
  std::unique_ptr<Meta> meta(new Meta());
  meta->machine_ = std::make_unique<Machine>(std::move(options));
  FLOE_ASSIGN_OR_RETURN(
      meta->log_, consensus::Log::Start(meta->machine_->options().raft, meta->machine_.get()));
  if (!meta->machine_->options().founders.empty()) {
    // A founder that leads a log whose table is still empty proposes kInitialize. Founders may
    // each propose it once: the table accepts the first and refuses the others, alike everywhere.
    Meta* self = meta.get();
    meta->initializer_ = std::thread([self] { self->InitializeLoop(); });
  }
  return meta;
}

void Meta::InitializeLoop() {
  const MetaOptions& o = machine_->options();
  Change init;
  init.kind = Change::Kind::kInitialize;
  init.members = o.founders;
  init.count = o.replicas;
  // Each founder picks its own; the first kInitialize committed decides for everyone (rule M5).
  init.cluster_id = ClusterId::Random();
  bool in_flight = false;
  for (;;) {
    {
      MutexLock lock(&stop_mu_);
      if (initialize_done_) {
        initialize_done_ = false;
        in_flight = false;
      }
      if (stopping_ || !table()->members().empty()) return;
    }
    if (!in_flight && log_->state().leader) {
      in_flight = true;
      // The done only clears the flag (with no lock held here: a refusal may run it at once);
      // a refusal (another founder's came first) or an unknown outcome is settled by the
      // table, which this loop watches.
      Propose(init, [this](Status) {
        MutexLock l(&stop_mu_);
        initialize_done_ = true;
        stop_cv_.notify_all();
      });
    }
    MutexLock lock(&stop_mu_);
    if (!stopping_ && !initialize_done_) {
      stop_cv_.wait_for(stop_mu_, std::chrono::milliseconds(20));
    }
  }
}

Meta::~Meta() { Stop(); }

std::shared_ptr<const Table> Meta::table() const { return machine_->table(); }

void Meta::Propose(const Change& change, std::function<void(Status)> done) {
  Machine* machine = machine_.get();
  log_->Propose(EncodeChange(change), [machine, done = std::move(done)](Result<uint64_t> index) {
    if (!index.ok()) return done(index.status());
    done(machine->TakeResult(*index));
  });
}

void Meta::AddServer(uint64_t id, std::string address, consensus::Role role,
                     std::function<void(Status)> done) {
  log_->AddServer(id, std::move(address), role, std::move(done));
}

void Meta::RemoveServer(uint64_t id, std::function<void(Status)> done) {
  log_->RemoveServer(id, std::move(done));
}

void Meta::Assign(uint64_t id, consensus::Role role, std::function<void(Status)> done) {
  log_->Assign(id, role, std::move(done));
}

void Meta::TransferLeadership(uint64_t id, std::function<void(Status)> done) {
  log_->TransferLeadership(id, std::move(done));
}

void Meta::ConfirmLeadership(consensus::IndexDone done) const {
  log_->ConfirmLeadership(std::move(done));
}

consensus::State Meta::raft() const { return log_->state(); }

void Meta::Stop() {
  {
    MutexLock lock(&stop_mu_);
    if (stopping_) return;
    stopping_ = true;
    stop_cv_.notify_all();
  }
  if (initializer_.joinable()) initializer_.join();
  if (log_) log_->Stop();
}

}  // namespace floe::cluster
