// libFuzzer target for the replication stream (docs/wire.md, "The replication stream"): the
// REPLICATE request a peer sends and its answer. Any input either fails with a Status or
// decodes within the limits and encodes back to an equal message; a decoded request is then
// fed, twice, to a backup's Receiver (its table lists every slot as backed up here, under an
// ownership the input picks), which must install each change at most once, in order (a fill's
// start may restart the numbering; its batches are puts only), and release every byte it
// charged; a decoded answer is given to an owner's Sender, which must
// commit nothing a backup was not sent. The codec's, receiver's and sender's sources are compiled
// in, so they carry coverage and ASan.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "replica/replica.h"

namespace {

using floe::replica::Entry;

class Table : public floe::replica::TableView {
 public:
  explicit Table(uint64_t ownership) : ownership_(ownership) {}
  uint32_t self() const override { return 2; }
  uint64_t life() const override { return 7; }
  bool ListsLife(uint64_t life) const override { return life == 7; }
  uint64_t Ownership(uint16_t) const override { return ownership_; }
  bool Backs(uint16_t slot) const override { return slot % 5 != 0; }

 private:
  uint64_t ownership_;
};

class Sink : public floe::replica::Sink {
 public:
  bool Install(uint16_t slot, uint64_t n, std::span<const Entry> entries,
               std::vector<std::string>* need_state) override {
    const bool fill_start =
        entries.size() == 1 && entries[0].kind == floe::replica::EntryKind::kFlush;
    if (n == 0 && !fill_start) {  // a fill's batch (S12): puts only, whenever it comes
      for (const Entry& e : entries) {
        if (e.kind != floe::replica::EntryKind::kPut) std::abort();
      }
      return slot % 7 != 3;  // some slots run out of memory
    }
    if (n <= last_[slot] && !fill_start) std::abort();  // twice, or out of order
    last_[slot] = n;  // a fill's start (a flush at its from) restarts the numbering
    for (const Entry& e : entries) {
      if (e.kind == floe::replica::EntryKind::kDelta && e.cell_version % 2 == 1) {
        need_state->emplace_back(e.key);
      }
    }
    return n % 97 != 0;  // now and then an install fails (memory)
  }
  bool Reserve(uint64_t bytes) override {
    if (reserved_ + bytes > (64u << 20)) return false;
    reserved_ += bytes;
    return true;
  }
  void Release(uint64_t bytes) override {
    if (bytes > reserved_) std::abort();
    reserved_ -= bytes;
  }
  uint64_t Headroom() const override { return (64u << 20) - reserved_; }
  uint64_t reserved() const { return reserved_; }

 private:
  std::vector<uint64_t> last_ = std::vector<uint64_t>(floe::replica::kSlots);
  uint64_t reserved_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  if (floe::Result<floe::replica::Answer> a = floe::replica::DecodeAnswer(bytes); a.ok()) {
    floe::Result<floe::replica::Answer> back =
        floe::replica::DecodeAnswer(floe::replica::EncodeAnswer(*a));
    if (!back.ok() || !(*back == *a)) std::abort();
    // An owner given this answer to a message in flight never commits what it did not send,
    // nor what a second backup has not received.
    floe::replica::Sender sender;
    for (uint16_t slot = 0; slot < 4; slot++) {
      if (!sender.Own(slot, 1, 0, {{2, 7}, {3, 7}}, {}).ok()) std::abort();
      for (int i = 0; i < 3; i++) {
        floe::Result<floe::replica::Sender::Ticket> n = sender.Open(slot);
        if (!n.ok()) std::abort();
        sender.Close(slot, *n, {});
      }
    }
    // Slot 3's backup 3 is being filled (S12): one batch, the last.
    floe::Result<floe::replica::Sender::FillTicket> fill = sender.BeginFill(3, 3);
    if (!fill.ok()) std::abort();
    const Entry put{.kind = floe::replica::EntryKind::kPut, .key = "k", .bytes = "v"};
    if (!sender.AddFill(3, 3, *fill, std::span<const Entry>(&put, 1), true).ok()) std::abort();
    // Answered as the message in flight (its id), first by backup 2 alone, then by 3.
    for (uint32_t backup : {2u, 3u}) {
      for (int round = 0; round < 2; round++) {
        const std::optional<std::string> m = sender.NextMessage(backup);
        if (!m) break;
        floe::Result<floe::replica::Request> sent = floe::replica::DecodeRequest(*m, 1 << 20);
        if (!sent.ok()) std::abort();  // the sender's own messages always decode
        floe::replica::Answer as_if = *a;
        as_if.id = sent->id;
        if (sender.OnAnswer(backup, as_if)) sender.Resume(backup);
      }
      for (uint16_t slot = 0; slot < 4; slot++) {
        if (sender.committed(slot) > sender.started(slot)) std::abort();
        if (backup == 2 && sender.committed(slot) != 0) std::abort();  // 3 has nothing yet
      }
      // R19: slot 3 commits nothing while its in-sync backup 3 is being filled, or needs a
      // fill after one that ended unfinished.
      const std::vector<floe::replica::Sender::FillState> fills = sender.Fills();
      const std::vector<std::pair<uint16_t, uint32_t>> needs = sender.NeedsFill();
      const bool unfilled =
          (!fills.empty() && !fills[0].done) ||
          std::find(needs.begin(), needs.end(), std::pair<uint16_t, uint32_t>{3, 3}) != needs.end();
      if (unfilled && sender.committed(3) != 0) std::abort();
    }
  }
  floe::Result<floe::replica::Request> r = floe::replica::DecodeRequest(bytes, 1 << 20);
  if (!r.ok()) return 0;
  const std::string again = floe::replica::EncodeRequest(*r);
  floe::Result<floe::replica::Request> back = floe::replica::DecodeRequest(again, 1 << 20);
  if (!back.ok() || !(*back == *r)) std::abort();
  Table table(size % 3);
  Sink sink;
  {
    floe::replica::Receiver receiver(&table, &sink);
    for (int round = 0; round < 2; round++) {
      const floe::replica::Answer answer = receiver.Receive(*r);
      if (!answer.not_my_life && answer.slots.size() != r->groups.size()) std::abort();
      for (const auto& s : answer.slots) {
        if (s.applied > s.received && s.status == floe::replica::SlotStatus::kTaken) std::abort();
      }
    }
  }
  if (sink.reserved() != 0) std::abort();
  return 0;
}
