// Tests only: a StateMachine that records every applied entry (consensus_test.cc and
// consensus_fixture_test.cc).

#ifndef FLOE_CONSENSUS_INTERNAL_RECORDER_TESTING_H_
#define FLOE_CONSENSUS_INTERNAL_RECORDER_TESTING_H_

#include <atomic>
#include <cstdint>
#include <future>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/base.h"
#include "consensus/consensus.h"

namespace floe::consensus::internal {

// Records every applied entry; its snapshot is the whole record, so a server brought up by a
// snapshot must end with exactly the leader's history.
class Recorder : public StateMachine {
 public:
  void Apply(uint64_t index, std::string_view entry) override {
    {
      MutexLock lock(&mu_);
      applied_.push_back({index, std::string(entry)});
    }
    if (gate_) gate_->Pass();
  }
  std::string Snapshot() override {
    MutexLock lock(&mu_);
    std::string out;
    for (const auto& [index, entry] : applied_) {
      out += std::to_string(index) + " " + std::to_string(entry.size()) + " " + entry;
    }
    return out;
  }
  Status Restore(std::string_view bytes) override {
    std::vector<std::pair<uint64_t, std::string>> parsed;
    while (!bytes.empty()) {
      const size_t a = bytes.find(' ');
      const size_t b = bytes.find(' ', a + 1);
      if (a == bytes.npos || b == bytes.npos) return Status::Corruption("bad record snapshot");
      const uint64_t index = std::stoull(std::string(bytes.substr(0, a)));
      const size_t len = std::stoull(std::string(bytes.substr(a + 1, b - a - 1)));
      if (bytes.size() - b - 1 < len) return Status::Corruption("short record snapshot");
      parsed.push_back({index, std::string(bytes.substr(b + 1, len))});
      bytes.remove_prefix(b + 1 + len);
    }
    MutexLock lock(&mu_);
    applied_ = std::move(parsed);
    restores_++;
    return Status::OK();
  }
  std::vector<std::string> Entries() {
    MutexLock lock(&mu_);
    std::vector<std::string> out;
    for (const auto& e : applied_) out.push_back(e.second);
    return out;
  }
  std::vector<std::pair<uint64_t, std::string>> Applied() {
    MutexLock lock(&mu_);
    return applied_;
  }
  int restores() {
    MutexLock lock(&mu_);
    return restores_;
  }

  // Blocks Apply (the raft thread) until Open(), to hold requests pending deterministically.
  struct Gate {
    std::promise<void> entered, open;
    std::shared_future<void> opened = open.get_future().share();
    std::atomic<bool> first{true};
    void Pass() {
      if (first.exchange(false)) {
        entered.set_value();
        opened.wait();
      }
    }
  };
  Gate* gate_ = nullptr;

 private:
  Mutex mu_;
  std::vector<std::pair<uint64_t, std::string>> applied_ FLOE_GUARDED_BY(mu_);
  int restores_ FLOE_GUARDED_BY(mu_) = 0;
};

}  // namespace floe::consensus::internal

#endif  // FLOE_CONSENSUS_INTERNAL_RECORDER_TESTING_H_
