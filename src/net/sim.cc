// SimNetwork: a deterministic network for tests (docs/rpc.md, "Layers").

#include "net/net.h"

namespace floe::net {

Loop& SimTransport::loop() { return *net_; }

Status SimTransport::Send(NodeId to, Bytes message) {
  if (crashed_ || (net_->nodes_.count(to) == 0 && to != id_)) {
    // Unknown or crashed: the message is sent and lost, as on a real network.
    net_->stats_.sent++;
    net_->stats_.dropped++;
    return Status::OK();
  }
  net_->Deliver(id_, to, std::move(message));
  return Status::OK();
}

SimNetwork::SimNetwork(uint64_t seed) : rng_(seed) {}
SimNetwork::~SimNetwork() = default;

SimTransport& SimNetwork::AddNode(NodeId id) {
  RemoveNode(id);
  nodes_[id] = std::unique_ptr<SimTransport>(new SimTransport(this, id));
  return *nodes_[id];
}

void SimNetwork::RemoveNode(NodeId id) {
  auto it = nodes_.find(id);
  if (it == nodes_.end()) return;
  // Kept, not destroyed: whatever still uses the crashed node's transport (its endpoint's
  // timers) sends into the void instead of through a dangling reference.
  it->second->crashed_ = true;
  crashed_.push_back(std::move(it->second));
  nodes_.erase(it);
}

void SimNetwork::Cut(NodeId a, NodeId b, bool cut) {
  const std::pair<NodeId, NodeId> link = std::minmax(a, b);
  if (cut) {
    cut_.insert(link);
  } else {
    cut_.erase(link);
  }
}

void SimNetwork::CutOneWay(NodeId from, NodeId to, bool cut) {
  if (cut) {
    one_way_.insert({from, to});
  } else {
    one_way_.erase({from, to});
  }
}

bool SimNetwork::IsCut(NodeId from, NodeId to) const {
  return cut_.count(std::minmax(from, to)) != 0 || one_way_.count({from, to}) != 0;
}

void SimNetwork::PostAt(uint64_t at_micros, std::function<void()> fn) {
  events_.push(Event{std::max(at_micros, now_), seq_++, std::move(fn)});
}

void SimNetwork::Deliver(NodeId from, NodeId to, Transport::Bytes message) {
  stats_.sent++;
  if (IsCut(from, to)) {
    stats_.partitioned++;
    return;
  }
  std::uniform_real_distribution<double> coin(0, 1);
  if (coin(rng_) < faults_.drop) {
    stats_.dropped++;
    return;
  }
  const int copies = coin(rng_) < faults_.duplicate ? 2 : 1;
  if (copies == 2) stats_.duplicated++;
  for (int c = 0; c < copies; c++) {
    uint64_t delay = faults_.min_delay_us;
    if (faults_.max_delay_us > faults_.min_delay_us) {
      delay += rng_() % (faults_.max_delay_us - faults_.min_delay_us + 1);
    }
    // A corrupted copy has one byte flipped and is delivered unchecked.
    const bool corrupt = faults_.corrupt > 0 && coin(rng_) < faults_.corrupt;
    const uint64_t flip = rng_();
    if (corrupt) stats_.corrupted++;
    PostAt(now_ + delay, [this, from, to, m = message, corrupt, flip]() {
      // Checked at delivery too: a link cut while the message was in flight loses it.
      auto it = nodes_.find(to);
      if (it == nodes_.end() || IsCut(from, to)) {
        stats_.dropped++;
        return;
      }
      stats_.delivered++;
      if (!it->second->receiver_) return;
      std::string bytes = m->Flatten();
      if (corrupt && !bytes.empty()) {
        bytes[flip % bytes.size()] ^= static_cast<char>(1 << (flip >> 60) % 8);
        return it->second->receiver_(std::move(bytes), /*checked=*/false);
      }
      // Otherwise what arrives is what was sent, as if checked.
      it->second->receiver_(std::move(bytes), /*checked=*/true);
    });
  }
}

bool SimNetwork::RunUntil(const std::function<bool()>& done, uint64_t max_us) {
  const uint64_t end = now_ + max_us;
  if (done()) return true;
  while (!events_.empty() && events_.top().at <= end) {
    Event e = std::move(const_cast<Event&>(events_.top()));
    events_.pop();
    now_ = e.at;
    e.fn();
    if (done()) return true;
  }
  if (events_.empty() || events_.top().at > end) now_ = std::max(now_, end);
  return done();
}

void SimNetwork::RunFor(uint64_t us) {
  RunUntil([] { return false; }, us);
}

}  // namespace floe::net
