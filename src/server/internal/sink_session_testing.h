// A session with a reply sink, as a connection has, for tests: deferred replies are collected
// and handed back through FinishDeferred on the test's thread, in command order; a reply held
// again there (a reserved change that then waits for its backups, docs/replication.md H3)
// stays pending until the sink brings it back. Tests only.

#ifndef FLOE_SERVER_INTERNAL_SINK_SESSION_TESTING_H_
#define FLOE_SERVER_INTERNAL_SINK_SESSION_TESTING_H_

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "server/command_test.h"
#include "server/server.h"

namespace floe::server::internal {

class SinkSession {
 public:
  explicit SinkSession(Engine* engine) : session_(std::make_unique<Session>(engine, 0)) {
    // The inbox outlives this object: a reply that comes after a test gave up on it lands
    // there, not in a destroyed session's fields.
    session_->set_reply_sink([inbox = inbox_](uint64_t ticket, std::string reply) {
      std::lock_guard<std::mutex> lock(inbox->mu);
      inbox->arrived.emplace_back(ticket, std::move(reply));
    });
  }
  // Runs a command; its reply (now or later) is the next in Replies().
  void Send(std::vector<std::string> args) {
    std::vector<std::string_view> v(args.begin(), args.end());
    std::string out;
    if (session_->Execute(v, &out)) {
      order_.push_back({0, std::move(out)});
    } else {
      order_.push_back({session_->last_ticket(), {}});
    }
  }
  bool Blocked() const { return session_->local_part_pending(); }
  // The replies still to come, after taking those that arrived.
  size_t Pending() {
    Pump();
    size_t n = 0;
    for (const auto& [ticket, reply] : order_) n += ticket != 0 ? 1 : 0;
    return n;
  }
  // Waits up to `limit` for every deferred reply; returns all replies in command order (an
  // empty Reply for one that did not come).
  std::vector<resp::Reply> Replies(std::chrono::milliseconds limit = std::chrono::seconds(20)) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (Pending() != 0 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    std::vector<resp::Reply> out;
    for (const auto& [ticket, reply] : order_) {
      out.push_back(ticket != 0 ? resp::Reply{} : CommandTest::Decode(reply));
    }
    order_.clear();
    return out;
  }
  Session& session() { return *session_; }
  void End() { session_.reset(); }

 private:
  void Pump() {
    std::deque<std::pair<uint64_t, std::string>> got;
    {
      std::lock_guard<std::mutex> lock(inbox_->mu);
      got.swap(inbox_->arrived);
    }
    for (auto& [ticket, reply] : got) {
      bool held = false;
      std::string bytes = session_->FinishDeferred(ticket, std::move(reply), &held);
      if (held) continue;  // the sink brings this ticket again
      for (auto& [t, r] : order_) {
        if (t == ticket) {
          t = 0;
          r = std::move(bytes);
        }
      }
    }
  }
  struct Inbox {
    std::mutex mu;
    std::deque<std::pair<uint64_t, std::string>> arrived;
  };
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::vector<std::pair<uint64_t, std::string>> order_;
  std::unique_ptr<Session> session_;
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_SINK_SESSION_TESTING_H_
