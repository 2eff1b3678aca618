// Test doubles for src/replica's tests: a table view and a sink that records what it installs.

#ifndef FLOE_REPLICA_REPLICA_TESTING_H_
#define FLOE_REPLICA_REPLICA_TESTING_H_

#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "replica/replica.h"

namespace floe::replica {

class FakeTable : public TableView {
 public:
  uint32_t self() const override { return self_; }
  uint64_t life() const override { return life_; }
  bool ListsLife(uint64_t life) const override { return listed_life_ == life; }
  uint64_t Ownership(uint16_t slot) const override {
    auto it = ownership_.find(slot);
    return it == ownership_.end() ? 1 : it->second;
  }
  bool Backs(uint16_t slot) const override { return !not_backed_.contains(slot); }

  uint32_t self_ = 2;
  uint64_t life_ = 7;
  uint64_t listed_life_ = 7;
  std::map<uint16_t, uint64_t> ownership_;
  std::set<uint16_t> not_backed_;
};

// Records every installed change as text, and keeps a memory budget.
class FakeSink : public Sink {
 public:
  bool Install(uint16_t slot, uint64_t n, std::span<const Entry> entries,
               std::vector<std::string>* need_state) override {
    if (fail_installs > 0) {
      fail_installs--;
      return false;
    }
    std::string text = std::to_string(slot) + "#" + std::to_string(n) + ":";
    for (const Entry& e : entries) {
      text += std::to_string(static_cast<int>(e.kind)) + "/" + std::string(e.key) + "=" +
              std::string(e.bytes) + ";";
      if (e.kind == EntryKind::kDelta && e.cell_version != cell_version) {
        need_state->emplace_back(e.key);
      }
    }
    std::lock_guard lock(mu);
    installed.push_back(text);
    for (const Entry& e : entries) {
      if (e.kind == EntryKind::kPut) kv[slot][std::string(e.key)] = std::string(e.bytes);
      if (e.kind == EntryKind::kRemove) kv[slot].erase(std::string(e.key));
      if (e.kind == EntryKind::kFlush) kv[slot].clear();
    }
    return true;
  }
  bool Reserve(uint64_t bytes) override {
    std::lock_guard lock(mu);
    if (reserved + bytes > budget) return false;
    reserved += bytes;
    return true;
  }
  void Release(uint64_t bytes) override {
    std::lock_guard lock(mu);
    reserved -= bytes;
  }
  uint64_t Headroom() const override {
    std::lock_guard lock(mu);
    return budget - reserved;
  }

  mutable std::mutex mu;
  std::vector<std::string> installed;
  // What the installs left, per slot: puts, removes and flushes applied.
  std::map<uint16_t, std::map<std::string, std::string>> kv;
  uint64_t reserved = 0;
  uint64_t budget = 1ull << 34;
  uint64_t cell_version = 1;
  int fail_installs = 0;  // the next installs that fail
};

inline Entry Put(std::string_view key, std::string_view value) {
  return {.kind = EntryKind::kPut, .key = key, .type = 1, .bytes = value};
}

inline Change One(uint64_t n, std::string_view key, std::string_view value) {
  return {.n = n, .entries = {Put(key, value)}};
}

inline Request Message(uint16_t slot, uint64_t ownership, uint64_t committed,
                       std::vector<Change> changes) {
  Request r{.target = 2, .life = 7};
  r.groups.push_back(
      {.slot = slot, .ownership = ownership, .committed = committed, .changes = changes});
  return r;
}

}  // namespace floe::replica

#endif  // FLOE_REPLICA_REPLICA_TESTING_H_
