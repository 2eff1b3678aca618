// The state machine adapter (internal/fsm.h): raft's fsm callbacks, on the raft thread.

#include "consensus/internal/fsm.h"

#include <cstring>

namespace floe::consensus::internal {

void Frame(std::string_view bytes, char* out) {
  const size_t strip = 8 - bytes.size() % 8;
  std::memcpy(out, bytes.data(), bytes.size());
  std::memset(out + bytes.size(), 0, strip - 1);
  out[bytes.size() + strip - 1] = static_cast<char>(strip);
}

bool Unframe(std::string_view framed, std::string_view* bytes) {
  if (framed.empty() || framed.size() % 8 != 0) return false;
  const auto strip = static_cast<unsigned char>(framed.back());
  if (strip < 1 || strip > 8) return false;
  *bytes = framed.substr(0, framed.size() - strip);
  return true;
}

FsmAdapter::FsmAdapter(StateMachine* machine, uint64_t id) : machine_(machine), id_(id) {
  fsm_.version = 2;
  fsm_.data = this;
  fsm_.apply = &FsmAdapter::Apply;
  fsm_.snapshot = &FsmAdapter::Snapshot;
  fsm_.restore = &FsmAdapter::Restore;
  fsm_.snapshot_finalize = &FsmAdapter::SnapshotFinalize;
  fsm_.snapshot_async = nullptr;
}

int FsmAdapter::Apply(struct raft_fsm* fsm, const struct raft_buffer* buf, void** result) {
  auto* self = static_cast<FsmAdapter*>(fsm->data);
  // raft advances last_applied after each entry, commands or not, so the entry being applied
  // is the next one.
  const uint64_t index = raft_last_applied(self->raft_) + 1;
  *result = nullptr;
  std::string_view entry;
  if (!Unframe(std::string_view(static_cast<const char*>(buf->base), buf->len), &entry)) {
    FLOE_LOG_ERROR("consensus {}: entry {} is not framed", self->id_, index);
    return RAFT_MALFORMED;
  }
  self->machine_->Apply(index, entry);
  return 0;
}

int FsmAdapter::Snapshot(struct raft_fsm* fsm, struct raft_buffer* bufs[], unsigned* n) {
  auto* self = static_cast<FsmAdapter*>(fsm->data);
  std::string state(1, kSnapshotFormat);
  state += self->machine_->Snapshot();
  self->snapshot_bytes_.resize(FramedSize(state.size()));
  Frame(state, self->snapshot_bytes_.data());
  self->snapshot_buffer_.base = self->snapshot_bytes_.data();
  self->snapshot_buffer_.len = self->snapshot_bytes_.size();
  *bufs = &self->snapshot_buffer_;
  *n = 1;
  self->snapshots_taken_++;
  return 0;
}

// Raft no longer reads the buffers Snapshot returned.
int FsmAdapter::SnapshotFinalize(struct raft_fsm* fsm, struct raft_buffer* bufs[], unsigned* n) {
  auto* self = static_cast<FsmAdapter*>(fsm->data);
  std::string().swap(self->snapshot_bytes_);
  self->snapshot_buffer_ = {};
  *bufs = nullptr;
  *n = 0;
  return 0;
}

int FsmAdapter::Restore(struct raft_fsm* fsm, struct raft_buffer* buf) {
  auto* self = static_cast<FsmAdapter*>(fsm->data);
  std::string_view bytes;
  Status s;
  if (!Unframe(std::string_view(static_cast<const char*>(buf->base), buf->len), &bytes) ||
      bytes.empty() || bytes[0] != kSnapshotFormat) {
    s = Status::Corruption("snapshot: unknown framing or format byte");
  } else {
    s = self->machine_->Restore(bytes.substr(1));
  }
  if (!s.ok()) {
    FLOE_LOG_ERROR("consensus {}: restoring a snapshot: {}", self->id_, s.ToString());
    return RAFT_CORRUPT;  // raft keeps (and frees) the buffer
  }
  // On success the buffer is ours to free (raft's fsm contract).
  raft_free(buf->base);
  self->snapshots_restored_++;
  return 0;
}

}  // namespace floe::consensus::internal
