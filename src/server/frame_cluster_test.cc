// Frames in a cluster (docs/frames_cluster.md): where a chunk lives (D1), the chunk store (D3,
// D4's put rules) and the frame RPC codecs (D12).

#include "server/internal/frame_cluster.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <future>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "cluster/cluster.h"
#include "dkv/dkv.h"
#include "frame/frame.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_testing.h"
#include "server/internal/frame_value.h"
#include "server/server.h"
#include "store/internal/epoch.h"
#include "wire/wire.h"

namespace floe::server::internal {
namespace {

// ---- On three members (in-process, loopback) ----

class FrameClusterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(cluster_.WaitFormed()); }
  // A one-chunk PUT_CHUNKS of frame `id`, chunk `k`, under member 0's map version.
  std::string PutOne(uint64_t id, uint64_t k, std::string_view bytes) {
    PutChunksRequest r;
    r.map_version = cluster_.node(0).map().version();
    r.frame_id = id;
    r.header_slot = 77;
    r.columns = 1;
    r.chunks.push_back({.index = k, .columns = {bytes}});
    return EncodePutChunks(r);
  }
  // Chunk k's home in a frame of `group`.
  net::NodeId HomeOfChunk(uint64_t k, uint16_t group = 0) {
    return cluster_.node(0).map().Home(ChunkSlot(group, k));
  }
  uint64_t version() { return cluster_.node(0).map().version(); }
  ClientCluster cluster_;
};

// D3: chunks put at their homes live in each home's chunk store, charged to its used memory and
// shown by INFO, while KEYS, SCAN, DBSIZE and RANDOMKEY see none of them; DROP_CHUNKS gives the
// charge back.
TEST_F(FrameClusterTest, ChunksAreChargedAndInvisibleToTheKeyspace) {
  const std::string bytes = Numbers({1, 2, 3, 4.5});
  const uint64_t id = 0xabc;
  std::vector<int64_t> per(3, 0);
  for (uint64_t k = 0; k < 12; k++) {
    const net::NodeId home = HomeOfChunk(k);
    Result<std::string> r =
        CallFrame(cluster_.node(0), home, kPutChunksMethod, PutOne(id, k, bytes));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    per[cluster_.IndexOf(home)]++;
  }
  for (size_t i = 0; i < 3; i++) {
    EXPECT_GT(per[i], 0) << "12 chunks reach every member of 3 (D1)";
    Engine& e = cluster_.engine(i);
    const int64_t charge = per[i] * ChunkStore::EntryCharge({bytes}) + ChunkStore::kSetCharge;
    EXPECT_EQ(cluster_.node(i).chunks().chunks(), per[i]);
    EXPECT_EQ(e.ChunkStoreBytes(), charge);
    EXPECT_GE(e.UsedMemoryNow(), charge);
    EXPECT_EQ(InfoFigure(e, "frame_chunks"), static_cast<uint64_t>(per[i]));
    EXPECT_EQ(InfoFigure(e, "frame_chunk_bytes"), static_cast<uint64_t>(charge));
    Session& s = cluster_.client(i);
    EXPECT_EQ(s.Run({"DBSIZE"}), ":0\r\n");
    EXPECT_EQ(e.store().Size(), 0u);
  }
  // Through any member the keyspace is empty: KEYS and SCAN ask every member.
  Session& c = cluster_.client(1);
  EXPECT_EQ(c.Run({"KEYS", "*"}), "*0\r\n");
  EXPECT_EQ(c.Run({"RANDOMKEY"}), "$-1\r\n");
  // A chunk read back from its home.
  GetChunkRequest g{.map_version = version(), .frame_id = id, .index = 5};
  Result<std::string> got =
      CallFrame(cluster_.node(2), HomeOfChunk(5), kGetChunkMethod, EncodeGetChunk(g));
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  Result<std::vector<std::string_view>> cols = DecodeChunkColumns(*got);
  ASSERT_TRUE(cols.ok());
  ASSERT_EQ(cols->size(), 1u);
  EXPECT_EQ((*cols)[0], bytes);
  g.index = 12;  // never put
  EXPECT_EQ(CallFrame(cluster_.node(2), HomeOfChunk(12), kGetChunkMethod, EncodeGetChunk(g))
                .status()
                .code(),
            StatusCode::kNotFound);
  // DROP_CHUNKS at every member.
  for (size_t i = 0; i < 3; i++) {
    Result<std::string> d = CallFrame(cluster_.node(0), cluster_.node(i).self(), kDropChunksMethod,
                                      EncodeFrameIds({.map_version = version(), .ids = {id, 1}}));
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    EXPECT_EQ(*d, std::string(1, '\x01'));
    EXPECT_EQ(cluster_.engine(i).ChunkStoreBytes(), 0);
    EXPECT_EQ(InfoFigure(cluster_.engine(i), "frame_chunks"), 0u);
  }
}

// D3: a put that does not fit under the home's maxmemory is refused with the OOM text.
TEST_F(FrameClusterTest, APutPastMaxmemoryIsRefusedWithTheOomText) {
  std::vector<double> many(100000);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<double>(i) * 0.37;
  const std::string big = Numbers(many);
  const net::NodeId home = HomeOfChunk(3);
  Engine& e = cluster_.engine(cluster_.IndexOf(home));
  SetMaxMemory(e, e.UsedMemoryNow() + static_cast<int64_t>(big.size()) / 2);
  Result<std::string> r = CallFrame(cluster_.node(0), home, kPutChunksMethod, PutOne(9, 3, big));
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("OOM"), std::string::npos) << r.status().ToString();
  EXPECT_EQ(e.ChunkStoreBytes(), 0);
}

// D4, D12: a member refuses a chunk it does not home (WrongHome), bytes ChunkView refuses
// (Corruption), a request of another slot map version (WrongHome, naming both) and bytes that
// do not decode; none leaves a chunk behind.
TEST_F(FrameClusterTest, PutChunksRefusesAWrongHomeAndBadBytes) {
  const std::string bytes = Numbers({1, 2, 3});
  const net::NodeId home = HomeOfChunk(0);
  const net::NodeId other =
      home == cluster_.node(0).self() ? cluster_.node(1).self() : cluster_.node(0).self();
  Result<std::string> r = CallFrame(cluster_.node(0), other, kPutChunksMethod, PutOne(5, 0, bytes));
  EXPECT_EQ(r.status().code(), StatusCode::kWrongHome) << r.status().ToString();

  std::string bad = bytes;
  bad[0] = static_cast<char>(0xfe);
  r = CallFrame(cluster_.node(0), home, kPutChunksMethod, PutOne(5, 0, bad));
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();

  PutChunksRequest v;
  v.map_version = version() + 1;
  v.frame_id = 5;
  v.columns = 1;
  v.chunks.push_back({.index = 0, .columns = {bytes}});
  r = CallFrame(cluster_.node(0), home, kPutChunksMethod, EncodePutChunks(v));
  EXPECT_EQ(r.status().code(), StatusCode::kWrongHome) << r.status().ToString();
  EXPECT_NE(r.status().message().find("ours: " + std::to_string(version())), std::string::npos)
      << r.status().ToString();

  r = CallFrame(cluster_.node(0), home, kPutChunksMethod, "\x01\x02");
  EXPECT_EQ(r.status().code(), StatusCode::kCorruption) << r.status().ToString();

  for (size_t i = 0; i < 3; i++) EXPECT_EQ(cluster_.node(i).chunks().chunks(), 0);
  // The right home takes it.
  EXPECT_TRUE(CallFrame(cluster_.node(2), home, kPutChunksMethod, PutOne(5, 0, bytes)).ok());
}

// D2, D10: FRAME_IDS_LIVE answers live for the id of a frame stored at the member, importing
// for an import registered there, gone for any other id.
TEST_F(FrameClusterTest, FrameIdsLiveAnswersFromTheFramesAndImportsThere) {
  Engine& e = cluster_.engine(0);
  Result<frame::Vec> vec = frame::Vec::Make(frame::ColumnType::kReal, {},
                                            {std::make_shared<const std::string>(Numbers({1, 2}))});
  ASSERT_TRUE(vec.ok());
  Result<frame::Frame> f = frame::Frame::Make({"x"}, {std::move(*vec)});
  ASSERT_TRUE(f.ok());
  const std::string name = cluster_.KeyAt(0, "f");  // homed at member 0
  ASSERT_TRUE(StoreFrame(e, name, std::move(*f), false).ok());
  uint64_t live = 0;
  {
    MutexLock lock(&e.frame_totals()->ids_mu);
    ASSERT_EQ(e.frame_totals()->live_ids.size(), 1u);
    live = e.frame_totals()->live_ids.begin()->first;
    e.frame_totals()->importing_ids[live + 1] = 1;
  }
  // The creating member's id in the top 20 bits.
  EXPECT_EQ(live >> 44, cluster_.node(0).self());
  const FrameIdsRequest q{.map_version = version(), .ids = {live + 2, live, live + 1}};
  Result<std::string> r =
      CallFrame(cluster_.node(1), cluster_.node(0).self(), kFrameIdsLiveMethod, EncodeFrameIds(q));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Result<std::vector<FrameIdState>> st = DecodeFrameIdStates(*r, 3);
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(*st, (std::vector<FrameIdState>{FrameIdState::kGone, FrameIdState::kLive,
                                            FrameIdState::kImporting}));
  // Dropped: gone.
  ASSERT_TRUE(e.store()
                  .Update(name,
                          [](const store::Value*) -> Result<store::Mutation> {
                            return store::Mutation::Remove();
                          })
                  .ok());
  // A removed value's cell is freed by the store's epoch reclamation: its id goes with it.
  store::internal::EpochDomain::Global().Barrier();
  {
    MutexLock lock(&e.frame_totals()->ids_mu);
    EXPECT_TRUE(e.frame_totals()->live_ids.empty());
  }
  r = CallFrame(cluster_.node(1), cluster_.node(0).self(), kFrameIdsLiveMethod,
                EncodeFrameIds({.map_version = version(), .ids = {live}}));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, std::string(1, static_cast<char>(FrameIdState::kGone)));
}

uint64_t Sweep(ClusterNode& node) {
  std::promise<uint64_t> p;
  node.SweepChunks([&p](uint64_t dropped) { p.set_value(dropped); });
  return p.get_future().get();
}

// D10: the orphan sweep drops a chunk set whose id the home of its header slot answers gone
// twice in a row, and never the chunks of a live frame or of an import under way there (it
// registered its id before its first chunk); once the import ends without a header, they go.
TEST_F(FrameClusterTest, ASweepNeverDropsAnImportUnderWay) {
  const std::string name = cluster_.KeyAt(1, "f");  // the headers' home: member 1
  const auto header_slot = cluster::KeySlot(name);
  Engine& e = cluster_.engine(1);
  Result<frame::Vec> vec = frame::Vec::Make(frame::ColumnType::kReal, {},
                                            {std::make_shared<const std::string>(Numbers({1, 2}))});
  ASSERT_TRUE(vec.ok());
  Result<frame::Frame> f = frame::Frame::Make({"x"}, {std::move(*vec)});
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(StoreFrame(e, name, std::move(*f), false).ok());
  uint64_t live = 0;
  {
    MutexLock lock(&e.frame_totals()->ids_mu);
    live = e.frame_totals()->live_ids.begin()->first;
  }
  auto importing = std::make_unique<ImportingId>(e.frame_totals(), e.NewFrameId());
  const uint64_t import_id = importing->id();
  const uint64_t orphan = e.NewFrameId();
  const std::string bytes = Numbers({4, 5, 6});
  for (uint64_t id : {live, import_id, orphan}) {
    for (uint64_t k = 0; k < 6; k++) {
      PutChunksRequest r;
      r.map_version = version();
      r.frame_id = id;
      r.header_slot = header_slot;
      r.columns = 1;
      r.chunks.push_back({.index = k, .columns = {bytes}});
      ASSERT_TRUE(
          CallFrame(cluster_.node(2), HomeOfChunk(k), kPutChunksMethod, EncodePutChunks(r)).ok());
    }
  }
  auto ids_at = [&](size_t i) {
    std::set<uint64_t> ids;
    for (const auto& [id, slot] : cluster_.node(i).chunks().Sets()) {
      EXPECT_EQ(slot, header_slot);
      ids.insert(id);
    }
    return ids;
  };
  auto sweep_all = [&] {
    uint64_t dropped = 0;
    for (size_t i = 0; i < 3; i++) dropped += Sweep(cluster_.node(i));
    return dropped;
  };
  // Six chunks on three members: every member holds a chunk of each (D1: 2/2/2).
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(ids_at(i), (std::set<uint64_t>{live, import_id, orphan})) << i;
  }
  EXPECT_EQ(sweep_all(), 0u);  // the orphan's first "gone"
  EXPECT_EQ(sweep_all(), 3u);  // its second: dropped at every member
  for (size_t i = 0; i < 3; i++) {
    EXPECT_EQ(ids_at(i), (std::set<uint64_t>{live, import_id})) << i;
  }
  EXPECT_EQ(sweep_all(), 0u);
  EXPECT_EQ(sweep_all(), 0u);
  // The import ends without storing a header: its chunks are orphans now.
  importing.reset();
  EXPECT_EQ(sweep_all(), 0u);
  EXPECT_EQ(sweep_all(), 3u);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(ids_at(i), (std::set<uint64_t>{live})) << i;
}

// D11: a member's job ids carry its member id above 32 bits.
TEST_F(FrameClusterTest, JobIdsNameTheirMember) {
  for (size_t i = 0; i < 3; i++) {
    Result<uint64_t> id =
        cluster_.engine(i).jobs().Start("test", "", [](job::Context&) { return Status::OK(); });
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(job::Registry::MemberOf(*id), cluster_.node(i).self());
    EXPECT_EQ(*id & 0xffffffffu, 1u);
    ASSERT_TRUE(cluster_.engine(i).jobs().TEST_Wait(*id).ok());
  }
}

// D1, D4, D5: a frame's chunks go to their homes in batches per home (at most 8 MiB each) and
// read back at their homes byte for byte; a 20-chunk frame on 3 members is split as D1 says.
TEST_F(FrameClusterTest, AFramesChunksArePutAtTheirHomes) {
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  const cluster::SlotMap& map = cluster_.node(0).map();
  const uint16_t group = RandomChunkGroup();
  EXPECT_EQ(PlanChunkPuts(*f, 1, group, 5, map).size(), 3u);      // one request a home
  EXPECT_EQ(PlanChunkPuts(*f, 1, group, 5, map, 1).size(), 20u);  // one a chunk: past the bound
  const uint64_t id = cluster_.engine(1).NewFrameId();
  ASSERT_TRUE(PutChunksOf(cluster_.node(1), f, id, group).ok());
  std::vector<int64_t> counts;
  for (size_t i = 0; i < 3; i++) counts.push_back(cluster_.node(i).chunks().chunks());
  std::sort(counts.begin(), counts.end());
  EXPECT_TRUE(counts == (std::vector<int64_t>{6, 6, 8}) ||
              counts == (std::vector<int64_t>{6, 7, 7}) ||
              counts == (std::vector<int64_t>{5, 7, 8}))
      << "group " << group;
  for (uint64_t k = 0; k < 20; k++) {
    GetChunkRequest g{.map_version = version(), .frame_id = id, .group = group, .index = k};
    Result<std::string> got =
        CallFrame(cluster_.node(2), HomeOfChunk(k, group), kGetChunkMethod, EncodeGetChunk(g));
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    Result<std::vector<std::string_view>> cols = DecodeChunkColumns(*got);
    ASSERT_TRUE(cols.ok());
    ASSERT_EQ(cols->size(), 2u);
    EXPECT_EQ((*cols)[0], *f->vec(0).chunk_bytes(k)) << k;
    EXPECT_EQ((*cols)[1], *f->vec(1).chunk_bytes(k)) << k;
  }
}

// D5: puts answered at once (this member's own chunks, its handler run on the caller's thread)
// do not nest: a frame of 60,000 one-row chunks put one a request on a member of one (every put
// its own) neither recurses 60,000 calls deep nor loses a chunk.
TEST(FramePutTest, PutsAnsweredAtOnceDoNotNest) {
  InProcessCluster one({.members = 1});
  ASSERT_TRUE(one.WaitFormed());
  constexpr size_t kChunks = 60000;
  std::vector<std::shared_ptr<const std::string>> chunks;
  for (size_t k = 0; k < kChunks; k++) {
    chunks.push_back(std::make_shared<const std::string>(Numbers({static_cast<double>(k)})));
  }
  Result<frame::Vec> v = frame::Vec::Make(frame::ColumnType::kReal, {}, std::move(chunks));
  ASSERT_TRUE(v.ok());
  Result<frame::Frame> f = frame::Frame::Make({"x"}, {std::move(*v)});
  ASSERT_TRUE(f.ok());
  std::promise<Status> p;
  one.node(0).PutFrameChunks(std::make_shared<const frame::Frame>(std::move(*f)),
                             one.engine(0).NewFrameId(), 0, 5,
                             [&p](Status s) { p.set_value(std::move(s)); },
                             {.sent = nullptr, .cancel = nullptr, .batch_bytes = 1});
  const Status s = p.get_future().get();
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(one.node(0).chunks().chunks(), static_cast<int64_t>(kChunks));
}

// D9: a put whose member is down fails, and the chunks the others took are dropped again.
TEST_F(FrameClusterTest, APutToADeadMemberFailsAndDropsWhatWasPut) {
  cluster_.Kill(2);
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  const uint64_t id = cluster_.engine(0).NewFrameId();
  const Status s = PutChunksOf(cluster_.node(0), f, id, RandomChunkGroup());
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kTimeout)
      << s.ToString();
  // DROP_CHUNKS is sent as the put fails; it reaches member 1 a moment later.
  for (size_t i = 0; i < 2; i++) {
    bool empty = false;
    for (int t = 0; t < 5000 && !empty; t++) {
      empty = cluster_.node(i).chunks().Sets().empty();
      if (!empty) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE(empty) << i;
  }
}

// D4: a frame's chunks put at their homes are no frame yet: through every member its name does
// not exist (EXISTS, TYPE, KEYS, DBSIZE) and its id is gone at the name's home; the header
// stored there by PUT_HEADER makes it a frame everywhere at once, with the header's figures.
TEST_F(FrameClusterTest, AFrameAppearsOnlyWithItsHeader) {
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  const std::string name = cluster_.KeyAt(2, "af");
  const uint16_t group = RandomChunkGroup();
  const uint64_t id = cluster_.engine(1).NewFrameId();
  ASSERT_TRUE(PutChunksOf(cluster_.node(1), f, id, group, cluster::KeySlot(name)).ok());
  int64_t chunks = 0;
  for (size_t i = 0; i < 3; i++) chunks += cluster_.node(i).chunks().chunks();
  EXPECT_EQ(chunks, 20);
  auto live_at_home = [&] {
    Result<std::string> r =
        CallFrame(cluster_.node(0), cluster_.node(2).self(), kFrameIdsLiveMethod,
                  EncodeFrameIds({.map_version = version(), .ids = {id}}));
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Result<std::vector<FrameIdState>> st = DecodeFrameIdStates(r.ok() ? *r : "", 1);
    return st.ok() ? (*st)[0] : FrameIdState::kGone;
  };
  for (size_t i = 0; i < 3; i++) {
    Session& c = cluster_.client(i);
    EXPECT_EQ(c.Run({"EXISTS", name}), ":0\r\n") << i;
    EXPECT_EQ(c.Run({"TYPE", name}), "+none\r\n") << i;
    EXPECT_EQ(c.Run({"KEYS", "*"}), "*0\r\n") << i;
    EXPECT_EQ(c.Run({"DBSIZE"}), ":0\r\n") << i;
    EXPECT_EQ(InfoFigure(cluster_.engine(i), "frames"), 0u) << i;
  }
  EXPECT_EQ(live_at_home(), FrameIdState::kGone);

  const FrameHeader header = HeaderOf(*f, id, group);
  Result<std::string> put = CallFrame(cluster_.node(0), cluster_.node(2).self(), kPutHeaderMethod,
                                      EncodePutHeader({.map_version = version(),
                                                       .key = name,
                                                       .replace = false,
                                                       .header = EncodeFrameHeader(header)}));
  ASSERT_TRUE(put.ok()) << put.status().ToString();
  for (size_t i = 0; i < 3; i++) {
    Session& c = cluster_.client(i);
    EXPECT_EQ(c.Run({"EXISTS", name}), ":1\r\n") << i;
    EXPECT_EQ(c.Run({"TYPE", name}), "+frame\r\n") << i;
    EXPECT_EQ(c.Run({"KEYS", "*"}),
              "*1\r\n$" + std::to_string(name.size()) + "\r\n" + name + "\r\n")
        << i;
  }
  EXPECT_EQ(live_at_home(), FrameIdState::kLive);
  EXPECT_EQ(InfoFigure(cluster_.engine(2), "frames"), 1u);
  EXPECT_EQ(InfoFigure(cluster_.engine(2), "frames_compressed_bytes"), f->compressed_bytes());
  EXPECT_EQ(InfoFigure(cluster_.engine(2), "frames_raw_bytes"), f->raw_bytes());
  // The value at the name is the header, every figure of it, and no frame.
  store::ValuePtr v = cluster_.engine(2).store().Get(name);
  ASSERT_TRUE(v);
  Result<const Cell<FrameHolder>*> cell = CellOf<FrameHolder>(*v);
  ASSERT_TRUE(cell.ok());
  const auto [made, stored, stored_id] = (*cell)->Read(
      [](const FrameHolder& h) { return std::make_tuple(h.frame, h.header, h.id()); });
  EXPECT_EQ(made, nullptr);
  ASSERT_NE(stored, nullptr);
  EXPECT_EQ(EncodeFrameHeader(*stored), EncodeFrameHeader(header));
  EXPECT_EQ(stored_id, id);
  // The chunks are where they were put: storing the header moved none.
  chunks = 0;
  for (size_t i = 0; i < 3; i++) chunks += cluster_.node(i).chunks().chunks();
  EXPECT_EQ(chunks, 20);
}

// D5: a put whose cancel flag is set (JOB.CANCEL of its import) sends nothing more, fails
// Cancelled and leaves no chunk; a put reports the column bytes put as its batches land.
TEST_F(FrameClusterTest, ACancelledPutFailsAndLeavesNoChunk) {
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  std::atomic<bool> cancel{true};
  std::promise<Status> p;
  cluster_.node(0).PutFrameChunks(f, cluster_.engine(0).NewFrameId(), RandomChunkGroup(), 5,
                                  [&p](Status s) { p.set_value(std::move(s)); },
                                  {.sent = nullptr, .cancel = &cancel});
  EXPECT_EQ(p.get_future().get().code(), StatusCode::kCancelled);
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(cluster_.node(i).chunks().chunks(), 0) << i;

  cancel = false;
  std::promise<Status> q;
  std::atomic<uint64_t> last{0};
  cluster_.node(0).PutFrameChunks(
      f, cluster_.engine(0).NewFrameId(), RandomChunkGroup(), 5,
      [&q](Status s) { q.set_value(std::move(s)); },
      {.sent = [&last](uint64_t bytes) { last = bytes; }, .cancel = &cancel});
  EXPECT_TRUE(q.get_future().get().ok());
  EXPECT_EQ(last.load(), f->compressed_bytes());
}

// D2, D4, D10: a frame made in a cluster (its chunks put, then its header at the name's home by
// PUT_HEADER) is a frame value there, and the sweep keeps its chunks while the header lives.
// When the header goes, DROP_CHUNKS drops every chunk at once; when that message is lost, two
// sweeps do.
TEST_F(FrameClusterTest, DroppedFramesLeaveNoChunks) {
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  const std::string name = cluster_.KeyAt(1, "hf");
  auto make = [&] {
    const uint16_t group = RandomChunkGroup();
    const uint64_t id = cluster_.engine(0).NewFrameId();
    EXPECT_TRUE(PutChunksOf(cluster_.node(0), f, id, group, cluster::KeySlot(name)).ok());
    return EncodeFrameHeader(HeaderOf(*f, id, group));
  };
  auto put_header = [&](size_t at, const std::string& header, bool replace) {
    return CallFrame(
        cluster_.node(0), cluster_.node(at).self(), kPutHeaderMethod,
        EncodePutHeader(
            {.map_version = version(), .key = name, .replace = replace, .header = header}));
  };
  auto remove = [&] {
    ASSERT_TRUE(cluster_.engine(1)
                    .store()
                    .Update(name,
                            [](const store::Value*) -> Result<store::Mutation> {
                              return store::Mutation::Remove();
                            })
                    .ok());
    store::internal::EpochDomain::Global().Barrier();  // the header's cell is freed
  };
  auto sweep_all = [&] {
    uint64_t dropped = 0;
    for (size_t i = 0; i < 3; i++) dropped += Sweep(cluster_.node(i));
    return dropped;
  };
  auto no_chunks_anywhere = [&] {
    for (size_t i = 0; i < 3; i++) {
      if (!cluster_.node(i).chunks().Sets().empty()) return false;
    }
    return true;
  };

  const std::string header = make();
  EXPECT_EQ(put_header(2, header, false).status().code(), StatusCode::kWrongHome);
  ASSERT_TRUE(put_header(1, header, false).ok());
  const Result<std::string> again = put_header(1, header, false);
  EXPECT_EQ(again.status().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(again.status().message(), kFrameTargetExists);
  Session& c = cluster_.client(0);
  EXPECT_EQ(c.Run({"TYPE", name}), "+frame\r\n");
  EXPECT_EQ(c.Run({"EXISTS", name}), ":1\r\n");
  EXPECT_EQ(InfoFigure(cluster_.engine(1), "frames"), 1u);
  EXPECT_EQ(InfoFigure(cluster_.engine(1), "frames_compressed_bytes"), f->compressed_bytes());
  EXPECT_EQ(sweep_all() + sweep_all(), 0u);  // live: kept

  // The header goes: DROP_CHUNKS reaches every member.
  remove();
  bool gone = false;
  for (int t = 0; t < 5000 && !gone; t++) {
    gone = no_chunks_anywhere();
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(gone);

  // Again with DROP_CHUNKS lost: the sweep finds the orphans.
  cluster_.node(1).TEST_dropper().TEST_Lose(true);
  ASSERT_TRUE(put_header(1, make(), false).ok());
  remove();
  EXPECT_FALSE(no_chunks_anywhere());
  EXPECT_EQ(sweep_all(), 0u);
  EXPECT_EQ(sweep_all(), 3u);
  EXPECT_TRUE(no_chunks_anywhere());
  for (size_t i = 0; i < 3; i++) EXPECT_EQ(cluster_.engine(i).ChunkStoreBytes(), 0) << i;
}

// D2, D10: a header refused at the home (the key exists without REPLACE, OOM, a key too long, the
// id live under another key) drops nothing, nor does a REPLACE by a header of the same id: the
// chunks stay while a header of their id lives, and go when the last one does.
TEST_F(FrameClusterTest, ARefusedOrSameIdHeaderKeepsTheChunks) {
  auto f = std::make_shared<const frame::Frame>(ChunkedFrame(20));
  const std::string name = cluster_.KeyAt(1, "kf");
  const uint16_t group = RandomChunkGroup();
  const uint64_t id = cluster_.engine(0).NewFrameId();
  ASSERT_TRUE(PutChunksOf(cluster_.node(0), f, id, group, cluster::KeySlot(name)).ok());
  const std::string header = EncodeFrameHeader(HeaderOf(*f, id, group));
  ChunkDropper& dropper = cluster_.node(1).TEST_dropper();
  // As PUT_HEADER's handler stores it, on this thread: a value it replaces is retired here, and
  // freed by the barrier.
  auto put_header = [&](const std::string& key, bool replace) {
    Result<FrameHeader> h = DecodeFrameHeader(header);
    EXPECT_TRUE(h.ok());
    Status r = StoreFrameHeader(cluster_.engine(1), key, std::move(*h), replace,
                                std::shared_ptr<ChunkDropper>(&dropper, [](ChunkDropper*) {}));
    store::internal::EpochDomain::Global().Barrier();
    return r;
  };
  auto chunks = [&] {
    int64_t n = 0;
    for (size_t i = 0; i < 3; i++) n += cluster_.node(i).chunks().chunks();
    return n;
  };
  ASSERT_TRUE(
      CallFrame(cluster_.node(0), cluster_.node(1).self(), kPutHeaderMethod,
                EncodePutHeader(
                    {.map_version = version(), .key = name, .replace = false, .header = header}))
          .ok());
  const uint64_t drops = dropper.TEST_drops();

  // The key exists.
  EXPECT_EQ(put_header(name, false).code(), StatusCode::kAlreadyExists);
  // Past maxmemory.
  Engine& home = cluster_.engine(1);
  SetMaxMemory(home, home.UsedMemoryNow() + 16);
  const Status oom = put_header(cluster_.KeyAt(1, "other"), true);
  EXPECT_EQ(oom.code(), StatusCode::kResourceExhausted) << oom.ToString();
  SetMaxMemory(home, 0);
  // A key too long for the store.
  const std::string long_key = cluster_.KeyAt(1, std::string(store::kMaxKeyBytes, 'k'));
  EXPECT_FALSE(put_header(long_key, true).ok());
  // The same id under another key.
  const Status twice = put_header(cluster_.KeyAt(1, "again"), false);
  EXPECT_EQ(twice.code(), StatusCode::kAlreadyExists) << twice.ToString();
  EXPECT_NE(twice.message().find("live under another key"), std::string::npos);
  EXPECT_EQ(cluster_.client(0).Run({"EXISTS", cluster_.KeyAt(1, "again")}), ":0\r\n");
  // A REPLACE by the same id.
  ASSERT_TRUE(put_header(name, true).ok());

  EXPECT_EQ(dropper.TEST_drops(), drops) << "no DROP_CHUNKS while a header of the id lives";
  EXPECT_EQ(chunks(), 20);
  EXPECT_EQ(Sweep(cluster_.node(0)) + Sweep(cluster_.node(2)), 0u);
  EXPECT_EQ(Sweep(cluster_.node(0)) + Sweep(cluster_.node(2)), 0u);
  EXPECT_EQ(chunks(), 20);
  EXPECT_EQ(cluster_.client(2).Run({"TYPE", name}), "+frame\r\n");

  // The last header goes: its chunks go.
  ASSERT_TRUE(home.store()
                  .Update(name,
                          [](const store::Value*) -> Result<store::Mutation> {
                            return store::Mutation::Remove();
                          })
                  .ok());
  store::internal::EpochDomain::Global().Barrier();
  EXPECT_EQ(dropper.TEST_drops(), drops + 1);
  bool gone = false;
  for (int t = 0; t < 5000 && !gone; t++) {
    gone = chunks() == 0;
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(gone);
}

// D10, D12: a member holding more chunk sets than one FRAME_IDS_LIVE may name asks in batches
// of kMaxFrameIds, and the sweep still drops every orphan; a request naming more is refused.
TEST_F(FrameClusterTest, ASweepAsksInBatchesOfTheCap) {
  const std::string bytes = Numbers({1});
  const uint16_t header_slot = cluster::KeySlot(cluster_.KeyAt(1, "f"));
  ChunkStore& store = cluster_.node(0).chunks();
  const uint64_t sets = kMaxFrameIds + 10;
  for (uint64_t id = 1; id <= sets; id++) {
    PutChunksRequest r;
    r.frame_id = id;
    r.header_slot = header_slot;
    r.columns = 1;
    r.chunks.push_back({.index = 0, .columns = {bytes}});
    ASSERT_TRUE(store.Put(r, [](uint16_t) { return true; }).ok());
  }
  EXPECT_EQ(Sweep(cluster_.node(0)), 0u);
  EXPECT_EQ(Sweep(cluster_.node(0)), sets);
  EXPECT_TRUE(store.Sets().empty());

  FrameIdsRequest q{.map_version = version(), .ids = {}};
  for (uint64_t id = 1; id <= kMaxFrameIds + 1; id++) q.ids.push_back(id);
  for (uint16_t method : {kFrameIdsLiveMethod, kDropChunksMethod}) {
    EXPECT_EQ(CallFrame(cluster_.node(0), cluster_.node(1).self(), method, EncodeFrameIds(q))
                  .status()
                  .code(),
              StatusCode::kCorruption);
  }
}

// ---- Map/reduce as a tree (D8) ----

// The lines of a RESP2 reply that carry values (bulk headers and array headers left out).
std::vector<std::string> ReplyValues(const std::string& reply) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < reply.size()) {
    const size_t end = reply.find("\r\n", at);
    if (end == std::string::npos) break;
    std::string line = reply.substr(at, end - at);
    at = end + 2;
    if (line.starts_with("*")) {
      out.push_back(line);  // an array's length: compared exactly
      continue;
    }
    if (line.starts_with("$")) {
      if (line == "$-1") out.push_back(line);
      continue;
    }
    out.push_back(line);
  }
  return out;
}

// A summary reply as one node's: every value exact but mean and sd, within 1e-12 relative (D8:
// the members' sums are added in another order).
void ExpectSameSummary(const std::string& cluster, const std::string& one) {
  const std::vector<std::string> a = ReplyValues(cluster), b = ReplyValues(one);
  ASSERT_EQ(a.size(), b.size()) << cluster << "\n" << one;
  ASSERT_FALSE(one.starts_with("-")) << one;
  for (size_t i = 0; i < a.size(); i++) {
    if (i > 0 && (b[i - 1] == "mean" || b[i - 1] == "sd") && b[i] != "$-1" && a[i] != b[i]) {
      const double x = std::stod(a[i]), y = std::stod(b[i]);
      EXPECT_NEAR(x, y, 1e-12 * std::abs(y)) << b[i - 1];
    } else {
      EXPECT_EQ(a[i], b[i]) << "value " << i << " after " << (i > 0 ? b[i - 1] : "");
    }
  }
}

// D8: FRAME.SUMMARY of a frame spread over 3 members, through each of them (at the name's home
// on the analytics pool, elsewhere forwarded to it), equals one node's on the same frame: counts,
// min, max, cardinality, histogram and bins exactly, mean and sd within 1e-12 relative.
TEST_F(FrameClusterTest, AnalyticsEqualOneNodesOnTheSameData) {
  FramesInCluster lifted;
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(23));
  const std::string name = cluster_.KeyAt(1, "an");
  PutClusterFrame(cluster_, 0, name, f);
  Engine one(Config(), 1);
  ASSERT_TRUE(StoreFrame(one, name, *f, false).ok());
  Session local(&one, 0);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"FRAME.SUMMARY", name, "r"},
                                             {"FRAME.SUMMARY", name, "i"},
                                             {"FRAME.SUMMARY", name, "0", "BINS", "7"},
                                             {"FRAME.SUMMARY", name, "i", "BINS", "1"},
                                             {"FRAME.SUMMARY", name, "w", "BINS", "3"}}) {
    const std::string expected = local.Run(args);
    for (size_t via = 0; via < 3; via++) {
      SCOPED_TRACE(args[2] + " through member " + std::to_string(via));
      ExpectSameSummary(cluster_.client(via).Run(args), expected);
    }
  }
  EXPECT_EQ(cluster_.client(0).Run({"FRAME.SUMMARY", name, "nope"}),
            local.Run({"FRAME.SUMMARY", name, "nope"}));
  // Quantiles are exact: the same bytes as one node's.
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"FRAME.QUANTILE", name, "r", "0", "0.25", "0.5", "0.999", "1"},
           {"FRAME.QUANTILE", name, "i", "0.1", "0.5", "0.5"},
           {"FRAME.QUANTILE", name, "w", "0", "0.01", "0.5", "0.99", "1"}}) {
    const std::string expected = local.Run(args);
    ASSERT_TRUE(expected.starts_with("*")) << expected;
    for (size_t via = 0; via < 3; via++) {
      EXPECT_EQ(cluster_.client(via).Run(args), expected) << args[2] << " through " << via;
    }
  }
  EXPECT_EQ(cluster_.client(2).Run({"FRAME.QUANTILE", name, "nope", "0.5"}),
            local.Run({"FRAME.QUANTILE", name, "nope", "0.5"}));
  // D6: FRAME.FILTER and FRAME.SELECT through each member make a frame (its chunks where the
  // source's are, its header at the destination's home) that reads back as one node's: the
  // reply, the rows, every column's summary and quantiles. One filter keeps no row, one keeps
  // rows of a few chunks only (the others' output chunks empty).
  // The destination homed at another member than the source (its header put there), or at the
  // source's.
  const std::string src = cluster_.KeyAt(1, "dsrc");
  PutClusterFrame(cluster_, 2, src, f);
  ASSERT_TRUE(StoreFrame(one, src, *f, false).ok());
  for (const std::string& dst : {cluster_.KeyAt(2, "ddst"), cluster_.KeyAt(1, "ddst")}) {
    const std::vector<std::vector<std::string>> derive = {
        {"FRAME.FILTER", src, dst, "WHERE", "r", ">", "0", "AND", "i", "<", "200", "REPLACE"},
        {"FRAME.FILTER", src, dst, "WHERE", "r", "ISNA", "REPLACE"},
        {"FRAME.FILTER", src, dst, "WHERE", "i", "=", "5", "REPLACE"},
        {"FRAME.FILTER", src, dst, "WHERE", "r", ">", "1e9", "REPLACE"},
        {"FRAME.SELECT", src, dst, "COLS", "w", "0", "REPLACE"},
        {"FRAME.SELECT", src, dst, "COLS", "i", "REPLACE"}};
    for (const std::vector<std::string>& args : derive) {
      const std::string expected = local.Run(args);
      ASSERT_TRUE(expected.starts_with(":")) << expected;
      for (size_t via = 0; via < 3; via++) {
        SCOPED_TRACE(args[0] + " " + args[4] + " " + args[5] + " through member " +
                     std::to_string(via));
        ASSERT_EQ(cluster_.client(via).Run(args), expected);
        EXPECT_EQ(cluster_.client(via).Run({"FRAME.HEAD", dst, "1000"}),
                  local.Run({"FRAME.HEAD", dst, "1000"}));
        const std::string info = local.Run({"FRAME.INFO", dst});
        const std::vector<std::string> cols = {"r", "i", "w"};
        for (const std::string& col : cols) {
          const std::string one_summary = local.Run({"FRAME.SUMMARY", dst, col});
          if (one_summary.starts_with("-")) {
            EXPECT_EQ(cluster_.client(via).Run({"FRAME.SUMMARY", dst, col}), one_summary);
            continue;
          }
          ExpectSameSummary(cluster_.client(via).Run({"FRAME.SUMMARY", dst, col}), one_summary);
          EXPECT_EQ(cluster_.client(via).Run({"FRAME.QUANTILE", dst, col, "0", "0.3", "0.5", "1"}),
                    local.Run({"FRAME.QUANTILE", dst, col, "0", "0.3", "0.5", "1"}));
        }
      }
    }
    // Refused as one node refuses: the destination exists, a column unknown or given twice.
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"FRAME.FILTER", src, dst, "WHERE", "r", ">", "0"},
             {"FRAME.SELECT", src, dst, "COLS", "r"},
             {"FRAME.SELECT", src, dst + "2", "COLS", "r", "0"},
             {"FRAME.FILTER", src, dst + "2", "WHERE", "nope", ">", "0"},
             {"FRAME.FILTER", src, dst + "2", "WHERE", "r", ">", "x"}}) {
      const std::string expected = local.Run(args);
      ASSERT_TRUE(expected.starts_with("-")) << expected;
      EXPECT_EQ(cluster_.client(0).Run(args), expected);
    }
  }
}

// D6, D10: a derived frame whose source has chunks on a member that does not answer fails with
// D9's CLUSTERDOWN, stores no header, and leaves no chunk of the output on the other members.
TEST_F(FrameClusterTest, ADerivedFrameOfASilentMemberStoresNothing) {
  FramesInCluster lifted;
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(12));
  const std::string src = cluster_.KeyAt(0, "s"), dst = cluster_.KeyAt(1, "t");
  PutClusterFrame(cluster_, 0, src, f);
  // Made once while every member answers: the output's chunks are put, then dropped with it.
  const int64_t before0 = cluster_.node(0).chunks().chunks();
  const int64_t before1 = cluster_.node(1).chunks().chunks();
  const int64_t before2 = cluster_.node(2).chunks().chunks();
  ASSERT_EQ(cluster_.client(1).Run({"FRAME.SELECT", src, dst, "COLS", "r"}), ":1\r\n");
  EXPECT_GT(cluster_.node(0).chunks().chunks(), before0);
  ASSERT_EQ(cluster_.client(0).Run({"FRAME.DROP", dst}), ":1\r\n");
  auto settled = [&] {
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (std::chrono::steady_clock::now() < until) {
      if (cluster_.node(0).chunks().chunks() == before0 &&
          cluster_.node(1).chunks().chunks() == before1) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(settled());
  while (cluster_.node(2).chunks().chunks() != before2) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  cluster_.Kill(2);
  // The member's death seen by a summary first (CLUSTERDOWN), then the derived frames.
  ASSERT_TRUE(cluster_.client(0)
                  .Run({"FRAME.SUMMARY", src, "r"})
                  .starts_with("-CLUSTERDOWN The node 127.0.0.1:" +
                               std::to_string(cluster_.cluster_port(2))));
  for (size_t via : {0, 1}) {
    for (const std::vector<std::string>& args :
         std::vector<std::vector<std::string>>{{"FRAME.FILTER", src, dst, "WHERE", "r", ">", "0"},
                                               {"FRAME.SELECT", src, dst, "COLS", "i", "w"}}) {
      const std::string down = cluster_.client(via).Run(args);
      EXPECT_TRUE(down.starts_with("-CLUSTERDOWN The node 127.0.0.1:" +
                                   std::to_string(cluster_.cluster_port(2)) + " is unreachable"))
          << via << ": " << down;
      EXPECT_EQ(cluster_.client(via).Run({"EXISTS", dst}), ":0\r\n");
      // The chunks members 0 and 1 made are dropped (D10).
      EXPECT_TRUE(settled()) << cluster_.node(0).chunks().chunks() << " " << before0 << ", "
                             << cluster_.node(1).chunks().chunks() << " " << before1;
    }
  }
}

// D13's last guard: a map task started on a thread inside Dkv::ApplyIfFree (its stripe locks
// held, which the loop's sweep takes) fails at once instead of waiting for the members.
TEST_F(FrameClusterTest, AMapTaskRefusesToStartInsideApplyIfFree) {
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(6));
  const std::string name = cluster_.KeyAt(0, "g");
  const FrameHeader h = HeaderOf(*f, 1, 0);
  Result<MapTaskAnswer> a = Status::Internal("not run");
  EXPECT_FALSE(dkv::Dkv::InApply());
  ASSERT_TRUE(cluster_.node(0).dkv().ApplyIfFree({name}, [&] {
    EXPECT_TRUE(dkv::Dkv::InApply());
    a = cluster_.node(0).MapFrame(h, name, {.op = MapOp::kSummaryMoments, .column = 0});
  }));
  EXPECT_FALSE(dkv::Dkv::InApply());
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.status().message(), "ERR a map task of frame " + name +
                                      " would wait for other members under the DKV's locks");
}

// D13: inside MULTI/EXEC a command on a cluster frame that waits for other members is refused
// (EXEC runs it under its writes' stripe locks and the exclusive section); the transaction's
// other commands run.
TEST_F(FrameClusterTest, ClusterFrameCommandsThatWaitAreRefusedInATransaction) {
  FramesInCluster lifted;
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(6));
  // One slot for the transaction's keys (a frame's name takes no hash tag).
  const std::string src = cluster_.KeyAt(0, "s"), other = "{" + src + "}x";
  std::string dst;
  for (int n = 0; dst.empty(); n++) {
    if (cluster::KeySlot("d" + std::to_string(n)) == cluster::KeySlot(src)) {
      dst = "d" + std::to_string(n);
    }
  }
  PutClusterFrame(cluster_, 0, src, f);
  Session& s = cluster_.client(0);
  for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
           {"FRAME.SELECT", src, dst, "COLS", "i"}, {"FRAME.HEAD", src, "3"}}) {
    ASSERT_EQ(s.Run({"MULTI"}), "+OK\r\n");
    ASSERT_EQ(s.Run({"SET", other, "1"}), "+QUEUED\r\n");
    ASSERT_EQ(s.Run(args), "+QUEUED\r\n");
    ASSERT_EQ(s.Run({"INCR", other}), "+QUEUED\r\n");
    EXPECT_EQ(s.Run({"EXEC"}), "*3\r\n+OK\r\n-ERR " + args[0] +
                                   " of a cluster frame is not allowed in a transaction (it waits "
                                   "for other members)\r\n:2\r\n");
    EXPECT_EQ(s.Run({"EXISTS", dst}), ":0\r\n");
  }
  // Outside a transaction both run.
  EXPECT_EQ(s.Run({"FRAME.SELECT", src, dst, "COLS", "i"}), ":1\r\n");
}

// D8: the task reaches every member once a pass (two passes: moments, then the histogram), on
// 1 to 9 members, and the result is one node's. (Each size on a cluster of its own; the
// fixture's three members stay idle.)
TEST_F(FrameClusterTest, TheTreeReachesEveryMemberOnce) {
  FramesInCluster lifted;
  for (int n = 1; n <= 9; n++) {
    SCOPED_TRACE(std::to_string(n) + " members");
    ClientCluster c(n);
    ASSERT_TRUE(c.WaitFormed());
    auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(static_cast<size_t>(3 * n + 2)));
    const std::string name = c.KeyAt(static_cast<size_t>(n - 1), "tree");
    PutClusterFrame(c, 0, name, f);
    Engine one(Config(), 1);
    ASSERT_TRUE(StoreFrame(one, name, *f, false).ok());
    std::vector<uint64_t> before;
    for (int i = 0; i < n; i++) before.push_back(c.node(static_cast<size_t>(i)).TEST_map_tasks());
    ExpectSameSummary(c.client(0).Run({"FRAME.SUMMARY", name, "r"}),
                      Session(&one, 0).Run({"FRAME.SUMMARY", name, "r"}));
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(c.node(static_cast<size_t>(i)).TEST_map_tasks() - before[static_cast<size_t>(i)],
                2u)
          << "member " << i;
    }
    // A quantile: the count, then 8 refinement passes.
    EXPECT_EQ(c.client(0).Run({"FRAME.QUANTILE", name, "r", "0.3", "0.7"}),
              Session(&one, 0).Run({"FRAME.QUANTILE", name, "r", "0.3", "0.7"}));
    for (int i = 0; i < n; i++) {
      EXPECT_EQ(c.node(static_cast<size_t>(i)).TEST_map_tasks() - before[static_cast<size_t>(i)],
                11u)
          << "member " << i;
    }
  }
}

// D8: a chunk missing at its home fails the task, naming it, never a partial answer; D9: a
// member that does not answer fails it with the CLUSTERDOWN text.
TEST_F(FrameClusterTest, AMissingChunkOrASilentMemberFailsTheTask) {
  FramesInCluster lifted;
  auto f = std::make_shared<const frame::Frame>(AnalyticsFrame(12));
  const std::string name = cluster_.KeyAt(0, "gone");
  uint64_t id = 0;
  PutClusterFrame(cluster_, 0, name, f, &id);
  // Drop every chunk at member 2 (as a lost store would): the first missing one is named.
  ASSERT_GT(cluster_.node(2).chunks().chunks(), 0);
  FrameIdsRequest drop{.map_version = version()};
  drop.ids = {id};
  ASSERT_TRUE(
      CallFrame(cluster_.node(0), cluster_.node(2).self(), kDropChunksMethod, EncodeFrameIds(drop))
          .ok());
  const std::string missing = cluster_.client(1).Run({"FRAME.SUMMARY", name, "r"});
  EXPECT_TRUE(missing.starts_with("-ERR frame " + name + " is missing chunk ")) << missing;
  EXPECT_NE(missing.find(" at member " + std::to_string(cluster_.node(2).self())),
            std::string::npos)
      << missing;
  EXPECT_EQ(cluster_.client(1).Run({"FRAME.QUANTILE", name, "r", "0.5"}), missing);
  cluster_.Kill(2);
  // At the coordinator, and through another member (whose node waits for the coordinator
  // cluster-node-timeout: the coordinator gives up on the silent member before that).
  for (size_t via : {0, 1}) {
    for (const std::vector<std::string>& args : std::vector<std::vector<std::string>>{
             {"FRAME.SUMMARY", name, "r"}, {"FRAME.QUANTILE", name, "r", "0.5"}}) {
      const std::string down = cluster_.client(via).Run(args);
      EXPECT_TRUE(down.starts_with("-CLUSTERDOWN The node 127.0.0.1:" +
                                   std::to_string(cluster_.cluster_port(2)) + " is unreachable"))
          << via << ": " << down;
    }
  }
}

}  // namespace
}  // namespace floe::server::internal
