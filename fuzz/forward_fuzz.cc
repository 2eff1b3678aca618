// libFuzzer target for the forwarded-command decoder (docs/wire.md, "Forwarded commands"), the
// bytes a peer sends to run commands here, RPC 303's member removal ("Removing a member"),
// RPC 304's removal notice ("Telling a member it was removed"), RPC 305's life ("Recording a
// member's life"), RPC 306's request (its layout is RPC 307's too) and RPC 307's answer:
// any input either fails with a Status or decodes to a request within the bounds that encodes
// back to the same bytes. The codec's source is compiled
// in, so it carries coverage and ASan.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

#include "server/internal/cluster_node.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // RPC 303's request (member removal, rule J2): decoded or refused, and round trips.
  if (floe::Result<floe::server::internal::RemoveRequest> rm =
          floe::server::internal::DecodeRemoveRequest(bytes);
      rm.ok()) {
    floe::Result<floe::server::internal::RemoveRequest> back =
        floe::server::internal::DecodeRemoveRequest(
            floe::server::internal::EncodeRemoveRequest(*rm));
    if (!back.ok() || back->id != rm->id || back->forwarded != rm->forwarded) std::abort();
  }
  // RPC 304's request (a removal notice, rule J2): decoded or refused, and round trips.
  if (floe::Result<floe::server::internal::RemovedNotice> n =
          floe::server::internal::DecodeRemovedNotice(bytes);
      n.ok()) {
    floe::Result<floe::server::internal::RemovedNotice> back =
        floe::server::internal::DecodeRemovedNotice(
            floe::server::internal::EncodeRemovedNotice(*n));
    if (!back.ok() || back->id != n->id || back->epoch != n->epoch ||
        back->cluster_id.hi != n->cluster_id.hi || back->cluster_id.lo != n->cluster_id.lo) {
      std::abort();
    }
  }
  // RPC 305's request (a member's life, replication.md W1): decoded or refused, round trips.
  if (floe::Result<floe::server::internal::RecordLifeRequest> life =
          floe::server::internal::DecodeRecordLife(bytes);
      life.ok()) {
    floe::Result<floe::server::internal::RecordLifeRequest> back =
        floe::server::internal::DecodeRecordLife(floe::server::internal::EncodeRecordLife(*life));
    if (!back.ok() || back->id != life->id || back->life != life->life ||
        back->forwarded != life->forwarded || life->id == 0 || life->life == 0) {
      std::abort();
    }
  }
  // RPC 308's request (an ownership lease, membership.md O1): decoded or refused, round trips.
  if (floe::Result<floe::server::internal::LeaseRequest> lease =
          floe::server::internal::DecodeLeaseRequest(bytes);
      lease.ok()) {
    floe::Result<floe::server::internal::LeaseRequest> back =
        floe::server::internal::DecodeLeaseRequest(
            floe::server::internal::EncodeLeaseRequest(*lease));
    if (!back.ok() || !(*back == *lease) || lease->id == 0 || lease->life == 0) std::abort();
  }
  // RPC 306's request (backups made in sync, replication.md F7): decoded or refused, round
  // trips, within its limits.
  if (floe::Result<floe::server::internal::BackupInSyncRequest> q =
          floe::server::internal::DecodeBackupInSync(bytes);
      q.ok()) {
    floe::Result<floe::server::internal::BackupInSyncRequest> back =
        floe::server::internal::DecodeBackupInSync(floe::server::internal::EncodeBackupInSync(*q));
    if (!back.ok() || !(*back == *q) || q->items.empty() ||
        q->items.size() > floe::server::internal::kMaxInSyncItems) {
      std::abort();
    }
  }
  // RPC 307's answer (the slots a backup report named stale, replication.md W16): decoded or
  // refused, ascending, within its limits, and round trips.
  if (floe::Result<std::vector<uint16_t>> slots = floe::server::internal::DecodeSlotList(bytes);
      slots.ok()) {
    floe::Result<std::vector<uint16_t>> back =
        floe::server::internal::DecodeSlotList(floe::server::internal::EncodeSlotList(*slots));
    if (!back.ok() || *back != *slots || slots->size() > floe::server::internal::kMaxInSyncItems) {
      std::abort();
    }
    for (size_t i = 0; i < slots->size(); i++) {
      if ((*slots)[i] >= 16384 || (i > 0 && (*slots)[i] <= (*slots)[i - 1])) std::abort();
    }
  }
  floe::Result<floe::server::internal::ForwardRequest> r =
      floe::server::internal::DecodeForward(bytes);
  if (!r.ok()) return 0;
  if (!floe::server::internal::ForwardFits(r->commands)) std::abort();
  if (r->protocol != 2 && r->protocol != 3) std::abort();
  // Varints have one shortest spelling, but a decoder may accept longer ones: compare meaning.
  floe::Result<floe::server::internal::ForwardRequest> again =
      floe::server::internal::DecodeForward(floe::server::internal::EncodeForward(*r));
  if (!again.ok() || again->origin != r->origin || again->client != r->client ||
      again->seq != r->seq || again->sent_us != r->sent_us || again->watching != r->watching ||
      again->commands != r->commands || again->copies != r->copies ||
      again->continues != r->continues) {
    std::abort();
  }
  for (size_t j = 0; j < r->copies.size(); j++) {
    if (r->copies[j] >= r->commands.size() || (j > 0 && r->copies[j] <= r->copies[j - 1])) {
      std::abort();
    }
  }
  for (size_t j = 0; j < r->continues.size(); j++) {
    if (r->continues[j] == 0 || r->continues[j] >= r->commands.size() ||
        (j > 0 && r->continues[j] <= r->continues[j - 1])) {
      std::abort();
    }
  }
  // The answer's framing, read back with any count.
  (void)floe::server::internal::DecodeFramedReplies(bytes, size % 7);
  return 0;
}
