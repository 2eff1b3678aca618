// The raft_fsm that drives a consensus::StateMachine, and the framing of every buffer handed
// to raft. Private to the consensus module; shared by Log (log.cc) and the tests that run the
// same adapter on raft's in-memory fixture (consensus_test.cc).
//
// Thread rule: an FsmAdapter is owned by the thread running its raft instance.

#ifndef FLOE_CONSENSUS_INTERNAL_FSM_H_
#define FLOE_CONSENSUS_INTERNAL_FSM_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "consensus/consensus.h"

extern "C" {
#include <raft.h>
}

namespace floe::consensus::internal {

// Every buffer handed to raft (entries, snapshots) is padded to a multiple of 8 bytes: raft
// 0.15 lays out entries at 8-byte boundaries on disk and in messages without padding them
// itself, and a server catching up on entries of other lengths was measured to apply them
// shifted (docs/consensus.md, "Findings"). The last byte says how many bytes (1-8) to strip.
inline size_t FramedSize(size_t n) { return n + 8 - n % 8; }
// Writes FramedSize(bytes.size()) bytes to `out`.
void Frame(std::string_view bytes, char* out);
// The bytes Frame was given, or false when `framed` was not made by Frame.
bool Unframe(std::string_view framed, std::string_view* bytes);

// The first byte of every snapshot raft stores (inside the framing), so that a later layout
// can be told apart.
inline constexpr char kSnapshotFormat = 1;

class FsmAdapter {
 public:
  FsmAdapter(StateMachine* machine, uint64_t id);
  FsmAdapter(const FsmAdapter&) = delete;
  FsmAdapter& operator=(const FsmAdapter&) = delete;

  // What raft_init takes. Version 2: the snapshot buffers stay ours until snapshot_finalize.
  struct raft_fsm* fsm() {
    return &fsm_;
  }
  // The raft instance the adapter serves, read for each entry's index. REQUIRES: set before the
  // first entry is applied.
  void set_raft(struct raft* raft) { raft_ = raft; }
  uint64_t snapshots_taken() const { return snapshots_taken_; }
  uint64_t snapshots_restored() const { return snapshots_restored_; }

 private:
  static int Apply(struct raft_fsm* fsm, const struct raft_buffer* buf, void** result);
  static int Snapshot(struct raft_fsm* fsm, struct raft_buffer* bufs[], unsigned* n);
  static int SnapshotFinalize(struct raft_fsm* fsm, struct raft_buffer* bufs[], unsigned* n);
  static int Restore(struct raft_fsm* fsm, struct raft_buffer* buf);

  struct raft_fsm fsm_ {};
  StateMachine* const machine_;
  const uint64_t id_;  // for log lines
  struct raft* raft_ = nullptr;
  std::string snapshot_bytes_;
  struct raft_buffer snapshot_buffer_ {};
  uint64_t snapshots_taken_ = 0;
  uint64_t snapshots_restored_ = 0;
};

}  // namespace floe::consensus::internal

#endif  // FLOE_CONSENSUS_INTERNAL_FSM_H_
