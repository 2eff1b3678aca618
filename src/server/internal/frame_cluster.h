// Putting a frame's chunks at their homes (docs/frames_cluster.md, D4 and D5). Private to
// server/.
//
//   1. PlanChunkPuts groups a frame's chunks by their home under a slot map (D1: chunk k of a
//      frame of group g at the owner of ChunkSlot(g, k)), in index order, into PUT_CHUNKS requests
//      of at most kPutBatchBytes of column bytes each (a larger chunk goes alone). The requests'
//      column views point into the frame's chunks: the frame must outlive them.
//   2. ClusterNode::PutFrameChunks sends them with at most kMaxPutsInFlight in flight (64 MiB),
//      and on the first failure sends no more, waits for those in flight, then asks every member
//      to drop the id's chunks (DROP_CHUNKS, D9) and fails with that failure.

#ifndef FLOE_SERVER_INTERNAL_FRAME_CLUSTER_H_
#define FLOE_SERVER_INTERNAL_FRAME_CLUSTER_H_

#include <cstdint>
#include <vector>

#include "cluster/cluster.h"
#include "frame/frame.h"
#include "server/internal/cluster_node.h"
#include "server/internal/frame_rpc.h"

namespace floe::server::internal {

inline constexpr uint64_t kPutBatchBytes = uint64_t{8} << 20;
inline constexpr size_t kMaxPutsInFlight = 8;

struct ChunkPutPlan {
  net::NodeId home = 0;
  PutChunksRequest request;
};
// Rule 1. REQUIRES: f has at least one column.
std::vector<ChunkPutPlan> PlanChunkPuts(const frame::Frame& f, uint64_t frame_id, uint16_t group,
                                        uint16_t header_slot, const cluster::SlotMap& map,
                                        uint64_t batch_bytes = kPutBatchBytes);

// The header of `f` (D2) under its id and group.
FrameHeader HeaderOf(const frame::Frame& f, uint64_t frame_id, uint16_t group);

// Chunk k of a cluster frame from GET_CHUNK's answer (D7) as a one-chunk frame of the header's
// names, types and domains. The bytes are a peer's: Corruption unless they decode (DecodeChunk-
// Columns), one per column, each as frame::Vec::Make takes it, with the header's rows for k.
// REQUIRES: k < h.chunks.size().
Result<frame::Frame> ChunkFrameOf(const FrameHeader& h, uint64_t k, std::string_view answer);

// GET_CHUNK of chunk k of a cluster frame (D7) at its home: `done` gets the answer, or the
// client's error for a home that does not answer (D9: "CLUSTERDOWN The node <addr> is
// unreachable (...)") or lacks it ("ERR frame F is missing chunk k at member N").
void FetchChunk(ClusterNode& node, const FrameHeader& h, std::string_view name, uint64_t k,
                std::function<void(Result<std::string>)> done);

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_FRAME_CLUSTER_H_
