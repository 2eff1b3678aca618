// Helpers the frame tests share (docs/frames_cluster.md): frames and chunk bytes to put, calls
// into a member's frame RPCs, INFO's frame figures and a count of what a thread allocates.
// Tests only.

#ifndef FLOE_SERVER_INTERNAL_FRAME_TESTING_H_
#define FLOE_SERVER_INTERNAL_FRAME_TESTING_H_

#include <gtest/gtest.h>

#include <cstddef>
#include <cstdint>
#include <future>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "cluster/cluster.h"
#include "frame/frame.h"
#include "server/internal/cluster_node.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_value.h"
#include "server/server.h"
#include "wire/wire.h"

// tcmalloc's hooks, present when the test links it (not under a sanitizer): the bytes this
// thread allocates, at the allocator's own sizes.
extern "C" {
typedef void (*MallocHook_NewHook)(const void* ptr, size_t size);
typedef void (*MallocHook_DeleteHook)(const void* ptr);
int MallocHook_AddNewHook(MallocHook_NewHook hook) __attribute__((weak));
int MallocHook_RemoveNewHook(MallocHook_NewHook hook) __attribute__((weak));
int MallocHook_AddDeleteHook(MallocHook_DeleteHook hook) __attribute__((weak));
int MallocHook_RemoveDeleteHook(MallocHook_DeleteHook hook) __attribute__((weak));
size_t MallocExtension_GetAllocatedSize(const void* p) __attribute__((weak));
}

namespace floe::server::internal {

// Counts what this thread allocates while it lives: every allocation's bytes (allocated()), and
// those less the bytes it frees (held()). Tests call Available() first and skip without it.
class ThreadAllocations {
 public:
  static bool Available() {
    return MallocHook_AddNewHook != nullptr && MallocExtension_GetAllocatedSize != nullptr;
  }
  ThreadAllocations() {
    MallocHook_AddNewHook(&OnNew);
    MallocHook_AddDeleteHook(&OnDelete);
    current_ = this;
  }
  ~ThreadAllocations() {
    current_ = nullptr;
    MallocHook_RemoveNewHook(&OnNew);
    MallocHook_RemoveDeleteHook(&OnDelete);
  }
  ThreadAllocations(const ThreadAllocations&) = delete;
  ThreadAllocations& operator=(const ThreadAllocations&) = delete;
  int64_t allocated() const { return allocated_; }
  int64_t held() const { return held_; }

 private:
  static void OnNew(const void* p, size_t) {
    if (current_ == nullptr || p == nullptr) return;
    const auto n = static_cast<int64_t>(MallocExtension_GetAllocatedSize(p));
    current_->allocated_ += n;
    current_->held_ += n;
  }
  static void OnDelete(const void* p) {
    if (current_ == nullptr || p == nullptr) return;
    current_->held_ -= static_cast<int64_t>(MallocExtension_GetAllocatedSize(p));
  }
  static inline thread_local ThreadAllocations* current_ = nullptr;
  int64_t allocated_ = 0, held_ = 0;
};

// A hand-made message: `varints` encoded, then `tail` (the decoders' huge-count checks).
inline std::string VarintsThen(const std::vector<uint64_t>& varints, std::string_view tail) {
  std::string out;
  wire::Writer w(&out);
  for (uint64_t v : varints) w.PutVarint64(v);
  out += tail;
  return out;
}

// Whether `decode(msg)` refuses `msg` as Corruption, expecting it to allocate at most `most`
// bytes on the way (checked where ThreadAllocations is available).
template <typename Decode>
bool RefusedWithin(Decode decode, const std::string& msg, int64_t most) {
  int64_t allocated = 0;
  StatusCode code = StatusCode::kOk;
  {
    std::optional<ThreadAllocations> count;
    if (ThreadAllocations::Available()) count.emplace();
    code = decode(msg).status().code();
    if (count) allocated = count->allocated();
  }
  EXPECT_LE(allocated, most) << "bytes allocated decoding a message of " << msg.size();
  return code == StatusCode::kCorruption;
}

inline std::string Numbers(std::vector<double> v) { return frame::Compress(v); }

inline void SetMaxMemory(Engine& engine, int64_t bytes) {
  const std::string v = std::to_string(bytes);
  std::string failed;
  ASSERT_TRUE(engine.SetConfig({{"maxmemory", v}}, &failed).ok()) << failed;
}

inline Result<std::string> CallFrame(ClusterNode& from, net::NodeId to, uint16_t method,
                                     std::string request) {
  std::promise<Result<std::string>> p;
  from.CallFrame(to, method, std::move(request),
                 [&p](Result<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

inline uint64_t InfoFigure(Engine& engine, const std::string& name) {
  std::string info;
  FramesInfoSection(engine, &info);
  const size_t at = info.find("\n" + name + ":");
  EXPECT_NE(at, std::string::npos) << info;
  return at == std::string::npos ? 0 : std::stoull(info.substr(at + name.size() + 2));
}

// A frame of `chunks` chunks and two columns (a real and an integer one), row-aligned.
inline frame::Frame ChunkedFrame(size_t chunks) {
  std::vector<std::shared_ptr<const std::string>> a, b;
  for (size_t k = 0; k < chunks; k++) {
    std::vector<double> x, y;
    for (size_t r = 0; r < 10 + k; r++) {
      x.push_back(static_cast<double>(k) + 0.25 * static_cast<double>(r));
      y.push_back(static_cast<double>(k * 1000 + r));
    }
    a.push_back(std::make_shared<const std::string>(frame::Compress(x)));
    b.push_back(std::make_shared<const std::string>(frame::Compress(y)));
  }
  Result<frame::Vec> va = frame::Vec::Make(frame::ColumnType::kReal, {}, std::move(a));
  Result<frame::Vec> vb = frame::Vec::Make(frame::ColumnType::kInteger, {}, std::move(b));
  EXPECT_TRUE(va.ok() && vb.ok());
  Result<frame::Frame> f = frame::Frame::Make({"a", "b"}, {std::move(*va), std::move(*vb)});
  EXPECT_TRUE(f.ok());
  return std::move(*f);
}

inline Status PutChunksOf(ClusterNode& node, std::shared_ptr<const frame::Frame> f, uint64_t id,
                          uint16_t group, uint16_t header_slot = 5) {
  std::promise<Status> p;
  node.PutFrameChunks(std::move(f), id, group, header_slot,
                      [&p](Status s) { p.set_value(std::move(s)); });
  return p.get_future().get();
}

// ---- Frames spread over a cluster (D4, D8) ----

// `chunks` chunks of varied sizes: "r" real (fractions and NA), "i" integer, "w" real with NA,
// an +inf and a -inf.
inline frame::Frame AnalyticsFrame(size_t chunks) {
  std::vector<std::shared_ptr<const std::string>> a, b, c;
  for (size_t k = 0; k < chunks; k++) {
    std::vector<double> r, i;
    for (size_t j = 0; j < 37 + (k * 13) % 50; j++) {
      const double v = static_cast<double>((k * 7919 + j * 104729) % 1000) / 7.0 - 60.0;
      r.push_back(j % 11 == 3 ? frame::kNA : v);
      i.push_back(static_cast<double>((k * 31 + j * 17) % 257));
    }
    std::vector<double> w = r;
    if (k == 1) w[0] = std::numeric_limits<double>::infinity();
    if (k + 1 == chunks) w[1] = -std::numeric_limits<double>::infinity();
    a.push_back(std::make_shared<const std::string>(frame::Compress(r)));
    b.push_back(std::make_shared<const std::string>(frame::Compress(i)));
    c.push_back(std::make_shared<const std::string>(frame::Compress(w)));
  }
  Result<frame::Vec> va = frame::Vec::Make(frame::ColumnType::kReal, {}, std::move(a));
  Result<frame::Vec> vb = frame::Vec::Make(frame::ColumnType::kInteger, {}, std::move(b));
  Result<frame::Vec> vc = frame::Vec::Make(frame::ColumnType::kReal, {}, std::move(c));
  EXPECT_TRUE(va.ok() && vb.ok() && vc.ok());
  Result<frame::Frame> f =
      frame::Frame::Make({"r", "i", "w"}, {std::move(*va), std::move(*vb), std::move(*vc)});
  EXPECT_TRUE(f.ok());
  return std::move(*f);
}

// f as cluster frame `name`, made through member `via` as D4 says: its chunks at their homes,
// then its header at the name's home (PUT_HEADER).
inline void PutClusterFrame(InProcessCluster& c, size_t via, const std::string& name,
                            std::shared_ptr<const frame::Frame> f, uint64_t* made = nullptr) {
  const uint16_t group = RandomChunkGroup();
  const uint64_t id = c.engine(via).NewFrameId();
  if (made != nullptr) *made = id;
  ASSERT_TRUE(PutChunksOf(c.node(via), f, id, group, cluster::KeySlot(name)).ok());
  const std::string header = EncodeFrameHeader(HeaderOf(*f, id, group));
  const PutHeaderRequest r{
      .map_version = c.node(via).map().version(), .key = name, .header = header};
  Result<std::string> put = CallFrame(c.node(via), c.node(via).Home(cluster::KeySlot(name)),
                                      kPutHeaderMethod, EncodePutHeader(r));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
}

// Lifts the refusal of FRAME.* in a cluster for one test (the production refusal stays).
struct FramesInCluster {
  FramesInCluster() { TEST_FramesInCluster().store(true); }
  ~FramesInCluster() { TEST_FramesInCluster().store(false); }
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_FRAME_TESTING_H_
