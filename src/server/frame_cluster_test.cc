// Frames in a cluster (docs/frames_cluster.md): where a chunk lives (D1), the chunk store (D3,
// D4's put rules) and the frame RPC codecs (D12).

#include "server/internal/frame_cluster.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "cluster/cluster.h"
#include "frame/frame.h"
#include "server/internal/chunk_store.h"
#include "server/internal/cluster_testing.h"
#include "server/internal/command.h"
#include "server/internal/frame_rpc.h"
#include "server/internal/frame_value.h"
#include "server/server.h"
#include "store/internal/epoch.h"
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
namespace {

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
  static thread_local ThreadAllocations* current_;
  int64_t allocated_ = 0, held_ = 0;
};
thread_local ThreadAllocations* ThreadAllocations::current_ = nullptr;

cluster::SlotMap MapOf(int n) {
  std::string list;
  for (int i = 0; i < n; i++) {
    list += (i > 0 ? "," : "") + std::string("127.0.0.1:") + std::to_string(7000 + i);
  }
  Result<std::vector<cluster::Member>> members = cluster::ParseMembers(list);
  EXPECT_TRUE(members.ok());
  return cluster::SlotMap::Balanced(*members);
}

// Groups the tests try: the ends, powers of two and their neighbours, and a few others.
const std::vector<uint16_t> kGroups = {0, 1, 2, 5, 777, 4095, 4096, 8191, 12345, 16383};

// D1: from any group, the first G chunks of a frame split among the members in proportion to
// their slots, each member's count within log2 G + 1 of its share, for 1 to 64 members and every
// G up to 4,096.
TEST(ChunkSlotTest, SpreadsEveryPrefixInProportionToSlots) {
  for (int n = 1; n <= 64; n++) {
    const cluster::SlotMap map = MapOf(n);
    std::vector<double> share(static_cast<size_t>(n) + 1, 0);
    for (int s = 0; s < cluster::kSlots; s++) {
      share[map.Home(static_cast<uint16_t>(s))] += 1.0 / cluster::kSlots;
    }
    for (uint16_t group : kGroups) {
      std::vector<int> count(static_cast<size_t>(n) + 1, 0);
      for (uint64_t g = 1; g <= 4096; g++) {
        const net::NodeId home = map.Home(ChunkSlot(group, g - 1));
        ASSERT_GE(home, 1u);
        count[home]++;
        const double bound = std::log2(static_cast<double>(g)) + 1;
        for (int m = 1; m <= n; m++) {
          ASSERT_LE(std::fabs(count[static_cast<size_t>(m)] -
                              static_cast<double>(g) * share[static_cast<size_t>(m)]),
                    bound)
              << n << " members, group " << group << ", " << g << " chunks, member " << m;
        }
      }
    }
  }
  // The doc's example: a 20-chunk frame on 3 members is split 8/6/6 or 7/7/6, or 8/7/5 from
  // 342 of the 16,384 groups.
  const cluster::SlotMap three = MapOf(3);
  int eight_seven_five = 0;
  for (uint32_t group = 0; group < kChunkGroups; group++) {
    std::vector<int> c(4, 0);
    for (uint64_t k = 0; k < 20; k++) c[three.Home(ChunkSlot(static_cast<uint16_t>(group), k))]++;
    std::vector<int> sorted = {c[1], c[2], c[3]};
    std::sort(sorted.begin(), sorted.end());
    eight_seven_five += sorted == (std::vector<int>{5, 7, 8}) ? 1 : 0;
    ASSERT_TRUE(sorted == (std::vector<int>{6, 6, 8}) || sorted == (std::vector<int>{6, 7, 7}) ||
                sorted == (std::vector<int>{5, 7, 8}))
        << group << ": " << sorted[0] << "/" << sorted[1] << "/" << sorted[2];
  }
  EXPECT_EQ(eight_seven_five, 342);
}

TEST(ChunkSlotTest, IsABijectionOnSlots) {
  for (uint16_t group : kGroups) {
    std::set<uint16_t> seen;
    for (uint64_t k = 0; k < static_cast<uint64_t>(cluster::kSlots); k++) {
      const uint16_t s = ChunkSlot(group, k);
      ASSERT_LT(s, cluster::kSlots);
      seen.insert(s);
      // (g + k) mod 16,384, whatever the high bits.
      ASSERT_EQ(ChunkSlot(group, k + cluster::kSlots), s);
      ASSERT_EQ(ChunkSlot(group, k + (uint64_t{1} << 63)), s);
      ASSERT_EQ(ChunkSlot(0, group + k), s);
      // An involution: reversing twice gives (g + k) mod 16,384 back.
      ASSERT_EQ(ChunkSlot(0, s), (group + k) % cluster::kSlots);
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(cluster::kSlots)) << group;
  }
  EXPECT_EQ(ChunkSlot(0, 1), 8192);
  EXPECT_EQ(ChunkSlot(0, 2), 4096);
  EXPECT_EQ(ChunkSlot(0, 3), 12288);
  EXPECT_EQ(ChunkSlot(1, 2), 12288);
  // Random groups are groups.
  for (int i = 0; i < 1000; i++) ASSERT_LT(RandomChunkGroup(), kChunkGroups);
}

std::string Numbers(std::vector<double> v) { return frame::Compress(v); }

PutChunksRequest TwoChunks(const std::vector<std::string>& bytes) {
  PutChunksRequest r;
  r.map_version = 7;
  r.frame_id = (uint64_t{3} << 44) | 5;
  r.group = 3;
  r.header_slot = 1234;
  r.columns = 2;
  r.chunks.push_back({.index = 0, .columns = {bytes[0], bytes[1]}});
  r.chunks.push_back({.index = 9, .columns = {bytes[2], bytes[3]}});
  return r;
}

std::vector<std::string> SomeColumns() {
  return {Numbers({1, 2, 3}), Numbers({0.5, 1.5, 2.5}), Numbers({10, 11}), Numbers({-1, 7})};
}

TEST(FrameRpcTest, PutChunksRoundTripsAndRefusesEveryTruncation) {
  const std::vector<std::string> cols = SomeColumns();
  const PutChunksRequest r = TwoChunks(cols);
  const std::string enc = EncodePutChunks(r);
  Result<PutChunksRequest> d = DecodePutChunks(enc);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->map_version, 7u);
  EXPECT_EQ(d->frame_id, r.frame_id);
  EXPECT_EQ(d->header_slot, 1234);
  EXPECT_EQ(d->group, 3);
  ASSERT_EQ(d->chunks.size(), 2u);
  EXPECT_EQ(d->chunks[1].index, 9u);
  EXPECT_EQ(d->chunks[1].columns[1], cols[3]);
  for (size_t n = 0; n < enc.size(); n++) {
    EXPECT_FALSE(DecodePutChunks(enc.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodePutChunks(enc + "x").ok());
}

TEST(FrameRpcTest, PutChunksRefusesCountsBeyondItsBytes) {
  const std::vector<std::string> cols = SomeColumns();
  PutChunksRequest r = TwoChunks(cols);
  // A header slot outside 0-16383.
  r.header_slot = 16384;
  EXPECT_EQ(DecodePutChunks(EncodePutChunks(r)).status().code(), StatusCode::kCorruption);
  r.header_slot = 1;
  r.group = 16384;  // a group outside 0-16383
  EXPECT_EQ(DecodePutChunks(EncodePutChunks(r)).status().code(), StatusCode::kCorruption);
  r.group = 16383;
  EXPECT_TRUE(DecodePutChunks(EncodePutChunks(r)).ok());
  // No column, a chunk count of 2^60, a column count of 2^31, a column under a chunk header.
  auto with = [&](uint64_t columns, uint64_t chunks) {
    std::string out;
    wire::Writer w(&out);
    w.PutVarint64(1);
    w.PutVarint64(2);
    w.PutFixed16(0);
    w.PutFixed16(3);
    w.PutVarint64(columns);
    w.PutVarint64(chunks);
    w.PutVarint64(0);
    w.PutLengthPrefixed(cols[0]);
    return out;
  };
  EXPECT_TRUE(DecodePutChunks(with(1, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(0, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(1, 0)).ok());
  EXPECT_FALSE(DecodePutChunks(with(1, uint64_t{1} << 60)).ok());
  EXPECT_FALSE(DecodePutChunks(with(uint64_t{1} << 31, 1)).ok());
  EXPECT_FALSE(DecodePutChunks(with(2, 1)).ok());
  r.chunks[0].columns[0] = std::string_view(cols[0]).substr(0, frame::kChunkHeaderBytes - 1);
  EXPECT_FALSE(DecodePutChunks(EncodePutChunks(r)).ok());
}

TEST(FrameRpcTest, TheOtherMessagesRoundTripAndRefuseTruncations) {
  const GetChunkRequest g{.map_version = 2, .frame_id = 99, .group = 9, .index = 1u << 20};
  const std::string ge = EncodeGetChunk(g);
  Result<GetChunkRequest> gd = DecodeGetChunk(ge);
  ASSERT_TRUE(gd.ok());
  EXPECT_EQ(gd->index, g.index);
  EXPECT_EQ(gd->group, 9);
  for (size_t n = 0; n < ge.size(); n++) EXPECT_FALSE(DecodeGetChunk(ge.substr(0, n)).ok());
  EXPECT_FALSE(DecodeGetChunk(ge + "x").ok());

  const std::vector<std::string> cols = SomeColumns();
  const std::string ce = EncodeChunkColumns({cols[0], cols[1]});
  Result<std::vector<std::string_view>> cd = DecodeChunkColumns(ce);
  ASSERT_TRUE(cd.ok());
  EXPECT_EQ((*cd)[1], cols[1]);
  for (size_t n = 0; n < ce.size(); n++) EXPECT_FALSE(DecodeChunkColumns(ce.substr(0, n)).ok());
  EXPECT_FALSE(DecodeChunkColumns(EncodeChunkColumns({})).ok());

  const FrameIdsRequest f{.map_version = 4, .ids = {1, uint64_t{1} << 63, 5}};
  const std::string fe = EncodeFrameIds(f);
  Result<FrameIdsRequest> fd = DecodeFrameIds(fe);
  ASSERT_TRUE(fd.ok());
  EXPECT_EQ(fd->ids, f.ids);
  for (size_t n = 0; n < fe.size(); n++) EXPECT_FALSE(DecodeFrameIds(fe.substr(0, n)).ok());
  std::string huge;
  wire::Writer w(&huge);
  w.PutVarint64(1);
  w.PutVarint64(uint64_t{1} << 40);  // ids the bytes cannot hold: refused before sizing
  w.PutVarint64(1);
  EXPECT_FALSE(DecodeFrameIds(huge).ok());

  const std::vector<FrameIdState> st = {FrameIdState::kGone, FrameIdState::kLive,
                                        FrameIdState::kImporting};
  Result<std::vector<FrameIdState>> sd = DecodeFrameIdStates(EncodeFrameIdStates(st), 3);
  ASSERT_TRUE(sd.ok());
  EXPECT_EQ(*sd, st);
  EXPECT_FALSE(DecodeFrameIdStates(EncodeFrameIdStates(st), 2).ok());
  EXPECT_FALSE(DecodeFrameIdStates("\x03", 1).ok());
}

// D12: every count a peer gives is checked against an absolute cap (kMaxFrameIds,
// kMaxFrameColumns, kMaxFrameChunks, kMaxHeaderDomainValues) as well as against its bytes, and
// nothing is sized from a count: a small message claiming a huge count is Corruption having
// allocated next to nothing, and a message holding one more than a cap is refused.
TEST(FrameRpcTest, HugeCountsAreRefusedWithoutAllocating) {
  const std::string zeros(1 << 20, '\0');
  // Decodes `msg` with `decode`, expecting Corruption with at most `most` bytes allocated.
  auto refused = [](auto decode, const std::string& msg, int64_t most) {
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
  };
  auto message = [](const std::vector<uint64_t>& varints, std::string_view tail) {
    std::string out;
    wire::Writer w(&out);
    for (uint64_t v : varints) w.PutVarint64(v);
    out += tail;
    return out;
  };

  // DROP_CHUNKS / FRAME_IDS_LIVE: 2^31 ids in 16 bytes; 2^20 ids present (a byte each); one id
  // more than the cap; the cap itself is taken.
  EXPECT_TRUE(refused(DecodeFrameIds, message({1, uint64_t{1} << 31}, zeros.substr(0, 16)), 4096));
  EXPECT_TRUE(refused(DecodeFrameIds, message({1, uint64_t{1} << 20}, zeros), 4096));
  EXPECT_TRUE(refused(DecodeFrameIds,
                      message({1, kMaxFrameIds + 1}, zeros.substr(0, kMaxFrameIds + 1)), 4096));
  Result<FrameIdsRequest> ids =
      DecodeFrameIds(message({1, kMaxFrameIds}, zeros.substr(0, kMaxFrameIds)));
  ASSERT_TRUE(ids.ok()) << ids.status().ToString();
  EXPECT_EQ(ids->ids.size(), kMaxFrameIds);
  EXPECT_FALSE(DecodeFrameIdStates(std::string(kMaxFrameIds + 1, '\0'), kMaxFrameIds + 1).ok());

  // PUT_CHUNKS: one column more than the cap, each column a chunk header's bytes; 2^15 chunks
  // claimed in their smallest bytes, the second one bad (nothing sized from the count).
  const std::string column(frame::kChunkHeaderBytes, '\0');
  std::string wide = message({1, 2}, "");
  wide += std::string("\0\0\0\0", 4);  // group, header slot
  {
    wire::Writer w(&wide);
    w.PutVarint64(kMaxFrameColumns + 1);
    w.PutVarint64(1);
    w.PutVarint64(0);
    for (uint64_t c = 0; c <= kMaxFrameColumns; c++) w.PutLengthPrefixed(column);
  }
  EXPECT_TRUE(refused(DecodePutChunks, wide, 4096));
  std::string cut = message({1, 2}, std::string("\0\0\0\0", 4));
  {
    wire::Writer w(&cut);
    w.PutVarint64(1);
    w.PutVarint64(uint64_t{1} << 15);
    w.PutVarint64(0);
    w.PutVarint64(1000);  // a column longer than the message
  }
  cut += zeros.substr(0, (uint64_t{1} << 15) * 18);
  EXPECT_TRUE(refused(DecodePutChunks, cut, 4096));

  // GET_CHUNK's answer: one column more than the cap.
  std::string answer;
  {
    wire::Writer w(&answer);
    w.PutVarint64(kMaxFrameColumns + 1);
    for (uint64_t c = 0; c <= kMaxFrameColumns; c++) w.PutLengthPrefixed(column);
  }
  EXPECT_TRUE(refused(DecodeChunkColumns, answer, 4096));

  // A header: the cap's columns claimed in 1 MiB, the first of an unknown type; one column more
  // than the cap, all good; a domain of 2^20 values claimed, the second cut short; 2^18 chunks
  // claimed, the first too long.
  const std::string head = message({42}, std::string("\x07\0", 2));
  auto col = [](const std::string& name, uint8_t type, uint64_t domain) {
    std::string out;
    wire::Writer w(&out);
    w.PutLengthPrefixed(name);
    w.PutU8(type);
    w.PutVarint64(domain);
    return out;
  };
  const auto real = static_cast<uint8_t>(frame::ColumnType::kReal);
  const auto cat = static_cast<uint8_t>(frame::ColumnType::kCategorical);
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({kMaxFrameColumns}, col("a", 99, 0)) + zeros, 4096));
  std::string wide_header = head + message({kMaxFrameColumns + 1}, "");
  for (uint64_t c = 0; c <= kMaxFrameColumns; c++) {
    wide_header += col("c" + std::to_string(c), real, 0) + std::string(1, '\0');
  }
  wide_header += std::string(1, '\0');  // no chunk
  EXPECT_TRUE(refused(DecodeFrameHeader, wide_header, 4096));
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({1}, col("a", cat, uint64_t{1} << 20)) +
                          message({1, 'x', 0x7fffffff}, "") + zeros,
                      4096));
  EXPECT_TRUE(refused(DecodeFrameHeader,
                      head + message({1}, col("a", real, 0) + std::string(1, '\0')) +
                          message({uint64_t{1} << 18, uint64_t{frame::kMaxChunkRows} + 1}, "") +
                          zeros,
                      4096));
}

void SetMaxMemory(Engine& engine, int64_t bytes) {
  const std::string v = std::to_string(bytes);
  std::string failed;
  ASSERT_TRUE(engine.SetConfig({{"maxmemory", v}}, &failed).ok()) << failed;
}

const auto kOwnsAll = [](uint16_t) { return true; };

// D3/D4: an entry is kept once (the first put wins), charged to the engine's used memory and
// counted outside the keyspace; dropping it gives the charge back.
TEST(ChunkStoreTest, KeepsTheFirstPutAndChargesUsedMemory) {
  Engine engine(Config(), 1);
  const int64_t before = engine.UsedMemoryNow();
  const std::vector<std::string> cols = SomeColumns();
  {
    ChunkStore store(&engine);
    const PutChunksRequest r = TwoChunks(cols);
    ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
    const int64_t charge = ChunkStore::EntryCharge({cols[0], cols[1]}) +
                           ChunkStore::EntryCharge({cols[2], cols[3]}) + ChunkStore::kSetCharge;
    EXPECT_EQ(store.chunks(), 2);
    EXPECT_EQ(store.charge(), charge);
    EXPECT_EQ(engine.ChunkStoreBytes(), charge);
    EXPECT_EQ(engine.UsedMemoryNow(), before + charge);
    EXPECT_EQ(engine.frame_totals()->chunks.load(), 2);
    EXPECT_EQ(engine.store().Size(), 0u);

    // The same id and index again, with other bytes: the first stays.
    PutChunksRequest again = r;
    again.chunks.resize(1);
    again.chunks[0].columns = {cols[2], cols[3]};
    ASSERT_TRUE(store.Put(again, kOwnsAll).ok());
    Result<std::shared_ptr<const ChunkStore::Chunk>> c = store.Get(r.frame_id, 0);
    ASSERT_TRUE(c.ok());
    EXPECT_EQ((*c)->columns[0], cols[0]);
    EXPECT_EQ((*c)->rows, 3u);
    EXPECT_EQ(store.charge(), charge);
    EXPECT_EQ(store.Get(r.frame_id, 1).status().code(), StatusCode::kNotFound);
    EXPECT_EQ(store.Get(r.frame_id + 1, 0).status().code(), StatusCode::kNotFound);
    ASSERT_EQ(store.Sets().size(), 1u);
    EXPECT_EQ(store.Sets()[0].second, 1234);

    EXPECT_EQ(store.Drop({r.frame_id, 12345}), 1u);
    EXPECT_EQ(store.chunks(), 0);
    EXPECT_EQ(engine.ChunkStoreBytes(), 0);
    EXPECT_EQ(engine.UsedMemoryNow(), before);
    // A reader's chunk outlives the drop.
    EXPECT_EQ((*c)->columns[1], cols[1]);
    ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
  }
  // The store's end gives its charge back.
  EXPECT_EQ(engine.ChunkStoreBytes(), 0);
  EXPECT_EQ(engine.frame_totals()->chunks.load(), 0);
}

// D4: a chunk homed elsewhere, bytes ChunkView refuses, columns of different rows: the whole
// put is refused and nothing is kept.
TEST(ChunkStoreTest, RefusesAWrongHomeAndBadBytesKeepingNothing) {
  Engine engine(Config(), 1);
  ChunkStore store(&engine);
  const std::vector<std::string> cols = SomeColumns();
  const PutChunksRequest r = TwoChunks(cols);
  Status s = store.Put(r, [&r](uint16_t slot) { return slot != ChunkSlot(r.group, 9); });
  EXPECT_EQ(s.code(), StatusCode::kWrongHome) << s.ToString();
  EXPECT_NE(s.message().find("chunk 9"), std::string::npos) << s.ToString();

  std::string bad = cols[2];
  bad[0] = static_cast<char>(0xff);  // no such layout
  PutChunksRequest b = r;
  b.chunks[1].columns[0] = bad;
  s = store.Put(b, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();

  PutChunksRequest ragged = r;
  ragged.chunks[1].columns[1] = cols[0];  // 3 rows beside 2
  s = store.Put(ragged, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kCorruption) << s.ToString();

  EXPECT_EQ(store.chunks(), 0);
  EXPECT_TRUE(store.Sets().empty());
  EXPECT_EQ(engine.ChunkStoreBytes(), 0);
}

// D3: a put that does not fit under maxmemory is refused with the OOM text, keeping nothing and
// reserving nothing.
TEST(ChunkStoreTest, APutBeyondMaxmemoryIsRefusedWithTheOomText) {
  Engine engine(Config(), 1);
  ChunkStore store(&engine);
  std::vector<double> many(200000);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<double>(i) * 0.37;
  const std::string big = Numbers(many);
  PutChunksRequest r;
  r.frame_id = 1;
  r.columns = 1;
  r.chunks.push_back({.index = 0, .columns = {big}});
  SetMaxMemory(engine, engine.UsedMemoryNow() + static_cast<int64_t>(big.size()) / 2);
  const Status s = store.Put(r, kOwnsAll);
  EXPECT_EQ(s.code(), StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("OOM"), std::string::npos) << s.ToString();
  EXPECT_EQ(store.chunks(), 0);
  EXPECT_EQ(engine.reserved_memory(), 0);
  SetMaxMemory(engine, 0);
  EXPECT_TRUE(store.Put(r, kOwnsAll).ok());
  EXPECT_EQ(engine.reserved_memory(), 0);
}

// D3: what the chunk store charges is what its entries hold (measured at the allocator: at
// least that, and not half as much again), and it is the engine's used memory; a put that does
// not fit is refused before it copies a byte.
TEST(ChunkStoreTest, ChargesWhatItsEntriesHoldAndReservesBeforeCopying) {
  if (!ThreadAllocations::Available()) GTEST_SKIP() << "needs tcmalloc's hooks";
  Engine engine(Config(), 1);
  const int64_t before = engine.UsedMemoryNow();
  ChunkStore store(&engine);
  const std::vector<std::string> cols = SomeColumns();
  std::vector<PutChunksRequest> puts;
  for (uint64_t id = 1; id <= 50; id++) {
    PutChunksRequest r;
    r.frame_id = id;
    r.columns = 1;  // the smallest entries: a chunk of two rows
    for (uint64_t k = 0; k < 40; k++) r.chunks.push_back({.index = k, .columns = {cols[2]}});
    puts.push_back(std::move(r));
  }
  int64_t held = 0;
  {
    ThreadAllocations count;
    for (const PutChunksRequest& r : puts) ASSERT_TRUE(store.Put(r, kOwnsAll).ok());
    held = count.held();
  }
  EXPECT_EQ(store.chunks(), 2000);
  EXPECT_GE(store.charge(), held);
  EXPECT_LE(store.charge(), held + held / 2);
  EXPECT_EQ(engine.UsedMemoryNow() - before, store.charge());

  // 1 MiB that does not fit: refused having copied none of it.
  std::vector<double> many(200000);
  for (size_t i = 0; i < many.size(); i++) many[i] = static_cast<double>(i) * 0.37;
  const std::string big = Numbers(many);
  ASSERT_GT(big.size(), 1u << 20);
  PutChunksRequest r;
  r.frame_id = 99;
  r.columns = 1;
  r.chunks.push_back({.index = 0, .columns = {big}});
  SetMaxMemory(engine, engine.UsedMemoryNow() + static_cast<int64_t>(big.size()) / 2);
  int64_t allocated = 0;
  {
    ThreadAllocations count;
    EXPECT_EQ(store.Put(r, kOwnsAll).code(), StatusCode::kResourceExhausted);
    allocated = count.allocated();
  }
  EXPECT_LT(allocated, 64 << 10);
  EXPECT_EQ(engine.reserved_memory(), 0);
}

// D10: the dropper sends outside its lock: a drop asked while another caller's send is under
// way returns at once, its id queued and sent by that caller in one batch with every id queued
// meanwhile; after Stop nothing is sent.
TEST(ChunkDropperTest, SendsOutsideItsLockInBatches) {
  Mutex mu;
  std::vector<std::vector<uint64_t>> batches;
  std::promise<void> sending, release;
  std::shared_future<void> go = release.get_future().share();
  ChunkDropper dropper([&](const std::vector<uint64_t>& ids) {
    {
      MutexLock lock(&mu);
      batches.push_back(ids);
    }
    if (ids == std::vector<uint64_t>{1}) {
      sending.set_value();
      go.wait();
    }
  });
  std::thread first([&] { dropper.Drop(1); });
  sending.get_future().wait();
  auto others = std::async(std::launch::async, [&] {
    dropper.Drop(2);
    dropper.Drop(3);
  });
  // A drop that waited for the send under way would still be waiting (the send waits for us).
  const bool returned = others.wait_for(std::chrono::seconds(30)) == std::future_status::ready;
  EXPECT_TRUE(returned) << "a drop waited for another caller's send";
  release.set_value();
  first.join();
  others.wait();
  {
    MutexLock lock(&mu);
    EXPECT_EQ(batches, (std::vector<std::vector<uint64_t>>{{1}, {2, 3}}));
  }
  EXPECT_EQ(dropper.TEST_drops(), 3u);
  dropper.Stop();
  dropper.Drop(4);
  MutexLock lock(&mu);
  EXPECT_EQ(batches.size(), 2u);
}

// ---- On three members (in-process, loopback) ----

Result<std::string> CallFrame(ClusterNode& from, net::NodeId to, uint16_t method,
                              std::string request) {
  std::promise<Result<std::string>> p;
  from.CallFrame(to, method, std::move(request),
                 [&p](Result<std::string> r) { p.set_value(std::move(r)); });
  return p.get_future().get();
}

size_t IndexOf(InProcessCluster& c, net::NodeId id) {
  for (size_t i = 0; i < 3; i++) {
    if (c.node(i).self() == id) return i;
  }
  ADD_FAILURE() << "no member " << id;
  return 0;
}

uint64_t InfoFigure(Engine& engine, const std::string& name) {
  std::string info;
  FramesInfoSection(engine, &info);
  const size_t at = info.find("\n" + name + ":");
  EXPECT_NE(at, std::string::npos) << info;
  return at == std::string::npos ? 0 : std::stoull(info.substr(at + name.size() + 2));
}

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
    per[IndexOf(cluster_, home)]++;
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
  Engine& e = cluster_.engine(IndexOf(cluster_, home));
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

// D2: a frame id's low 44 bits count up from the member's start in 256 µs ticks of the wall
// clock since 1970 (they wrap in 2112), so a later life starts above an earlier one's ids.
TEST(FrameIdTest, CountsUpFromTheStartInTicksThatDoNotWrap) {
  constexpr uint64_t kLow = (uint64_t{1} << 44) - 1;
  const uint64_t before = WallMicros() / Engine::FrameTotals::kFrameIdTickUs;
  Engine first(Config(), 1);
  const uint64_t a = first.NewFrameId();
  EXPECT_EQ(first.NewFrameId(), a + 1);
  EXPECT_EQ(a >> 44, 0u);  // member 0 on one node
  EXPECT_GE(a & kLow, before);
  EXPECT_LE(a & kLow, WallMicros() / Engine::FrameTotals::kFrameIdTickUs);
  std::this_thread::sleep_for(std::chrono::milliseconds(1));
  Engine later(Config(), 1);
  EXPECT_GT(later.NewFrameId(), first.NewFrameId());
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

// A frame of `chunks` chunks and two columns (a real and an integer one), row-aligned.
frame::Frame ChunkedFrame(size_t chunks) {
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

Status PutChunksOf(ClusterNode& node, std::shared_ptr<const frame::Frame> f, uint64_t id,
                   uint16_t group, uint16_t header_slot = 5) {
  std::promise<Status> p;
  node.PutFrameChunks(std::move(f), id, group, header_slot,
                      [&p](Status s) { p.set_value(std::move(s)); });
  return p.get_future().get();
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

// D2, D12: a frame's header round-trips through its encoding, with every figure FRAME.INFO
// needs; every truncation and every inconsistent header is refused.
TEST(FrameHeaderTest, RoundTripsAndRefusesBadHeaders) {
  const frame::Frame f = ChunkedFrame(5);
  const FrameHeader h = HeaderOf(f, 42, 7);
  ASSERT_EQ(h.columns.size(), 2u);
  ASSERT_EQ(h.chunks.size(), 5u);
  EXPECT_EQ(h.rows(), f.rows());
  uint64_t compressed = 0, raw = 0;
  for (const FrameHeader::Chunk& c : h.chunks) {
    compressed += c.compressed_bytes;
    raw += c.raw_bytes;
  }
  EXPECT_EQ(compressed, f.compressed_bytes());
  EXPECT_EQ(raw, f.raw_bytes());
  const std::string enc = EncodeFrameHeader(h);
  Result<FrameHeader> d = DecodeFrameHeader(enc);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->id, 42u);
  EXPECT_EQ(d->group, 7);
  EXPECT_EQ(d->columns[1].name, "b");
  EXPECT_EQ(d->columns[1].type, static_cast<uint8_t>(frame::ColumnType::kInteger));
  EXPECT_EQ(d->chunks[4].rows, 14u);
  EXPECT_EQ(EncodeFrameHeader(*d), enc);
  for (size_t n = 0; n < enc.size(); n++) EXPECT_FALSE(DecodeFrameHeader(enc.substr(0, n)).ok());
  EXPECT_FALSE(DecodeFrameHeader(enc + "x").ok());

  auto refused = [](FrameHeader bad) {
    return DecodeFrameHeader(EncodeFrameHeader(bad)).status().code() == StatusCode::kCorruption;
  };
  FrameHeader bad = h;
  bad.columns[1].name = "a";  // repeated
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].name = "";
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].domain = {"x"};  // a domain on a real column
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].type = 5;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].na_count = h.rows() + 1;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.group = 16384;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[0].rows = frame::kMaxChunkRows + 1;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns.clear();
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.columns[0].type = static_cast<uint8_t>(frame::ColumnType::kCategorical);
  bad.columns[0].domain = {"x", "y"};
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader(bad)).ok());
  bad.columns[0].domain = {"", "y"};  // "" is a level when the NA tokens leave it out
  EXPECT_TRUE(DecodeFrameHeader(EncodeFrameHeader(bad)).ok());
  bad.columns[0].domain = {"x", "y", "x"};  // repeated
  EXPECT_TRUE(refused(bad));
  // Byte sums that would wrap, or pass kMaxFrameBytes.
  bad = h;
  bad.chunks[0].compressed_bytes = uint64_t{1} << 63;
  bad.chunks[1].compressed_bytes = uint64_t{1} << 63;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[2].raw_bytes = ~uint64_t{0};
  bad.chunks[3].raw_bytes = 2;
  EXPECT_TRUE(refused(bad));
  bad = h;
  bad.chunks[4].raw_bytes = kMaxFrameBytes;
  EXPECT_TRUE(refused(bad));

  const std::string p =
      EncodePutHeader({.map_version = 3, .key = "frame", .replace = true, .header = enc});
  Result<PutHeaderRequest> q = DecodePutHeader(p);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->key, "frame");
  EXPECT_TRUE(q->replace);
  EXPECT_EQ(q->header, enc);
  const size_t fixed = p.size() - enc.size();  // the part before the header's bytes
  for (size_t n = 0; n < fixed; n++) EXPECT_FALSE(DecodePutHeader(p.substr(0, n)).ok());
  EXPECT_FALSE(DecodePutHeader(EncodePutHeader({.key = ""})).ok());
  std::string two = p;
  two[fixed - 1] = 2;  // replace is 0 or 1
  EXPECT_FALSE(DecodePutHeader(two).ok());
}

// D2, D3: a header's charge is what it holds in memory (measured at the allocator as decoded and
// shared: at least that, and not half as much again), domains at their in-memory size, and the
// store's used memory grows by at least that when it is stored.
TEST(FrameHeaderTest, ChargesWhatItHolds) {
  if (!ThreadAllocations::Available()) GTEST_SKIP() << "needs tcmalloc's hooks";
  FrameHeader h = HeaderOf(ChunkedFrame(2000), 42, 7);
  h.columns.push_back({.name = "c", .type = static_cast<uint8_t>(frame::ColumnType::kCategorical)});
  for (int i = 0; i < 20000; i++) h.columns.back().domain.push_back("v" + std::to_string(i));
  for (int i = 0; i < 200; i++) {
    h.columns.back().domain.push_back(std::string(40, 'x') + std::to_string(i));
  }
  const std::string enc = EncodeFrameHeader(h);
  int64_t held = 0;
  size_t charge = 0;
  std::shared_ptr<const FrameHeader> shared;
  {
    ThreadAllocations count;
    Result<FrameHeader> d = DecodeFrameHeader(enc);
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    charge = HeaderCharge(*d);
    shared = std::make_shared<const FrameHeader>(std::move(*d));
    held = count.held();
  }
  EXPECT_GE(static_cast<int64_t>(charge), held);
  EXPECT_LE(static_cast<int64_t>(charge), held + held / 2);
  EXPECT_GT(charge, 20000 * sizeof(std::string)) << "every domain value at its in-memory size";

  Engine engine(Config(), 1);
  const size_t used = engine.store().MemoryUsed();
  Result<FrameHeader> d = DecodeFrameHeader(enc);
  ASSERT_TRUE(d.ok());
  ASSERT_TRUE(StoreFrameHeader(engine, "f", std::move(*d), false, nullptr).ok());
  EXPECT_GE(engine.store().MemoryUsed() - used, static_cast<size_t>(held));
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

// D7, D12: a chunk fetched from a peer becomes a one-chunk frame of the header's columns only
// when its bytes hold one column each of the header's rows, in a layout ChunkView takes.
TEST(FrameHeaderTest, AFetchedChunkIsCheckedAgainstItsHeader) {
  const frame::Frame f = ChunkedFrame(3);
  const FrameHeader h = HeaderOf(f, 42, 7);
  auto answer = [&](uint64_t k) {
    return EncodeChunkColumns({*f.vec(0).chunk_bytes(k), *f.vec(1).chunk_bytes(k)});
  };
  Result<frame::Frame> one = ChunkFrameOf(h, 2, answer(2));
  ASSERT_TRUE(one.ok()) << one.status().ToString();
  EXPECT_EQ(one->rows(), 12u);
  EXPECT_EQ(one->name(1), "b");
  EXPECT_EQ(one->vec(1).type(), frame::ColumnType::kInteger);
  EXPECT_EQ(one->vec(0).At(3), f.vec(0).At(10 + 11 + 3));
  // Chunk 1's bytes as chunk 2: its rows are not the header's.
  EXPECT_EQ(ChunkFrameOf(h, 2, answer(1)).status().code(), StatusCode::kCorruption);
  // One column short.
  EXPECT_EQ(ChunkFrameOf(h, 0, EncodeChunkColumns({*f.vec(0).chunk_bytes(0)})).status().code(),
            StatusCode::kCorruption);
  // Bytes of no layout.
  std::string bad = *f.vec(1).chunk_bytes(0);
  bad[0] = static_cast<char>(0xfe);
  EXPECT_EQ(ChunkFrameOf(h, 0, EncodeChunkColumns({*f.vec(0).chunk_bytes(0), bad})).status().code(),
            StatusCode::kCorruption);
  EXPECT_EQ(ChunkFrameOf(h, 0, "\x05").status().code(), StatusCode::kCorruption);
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

// ---- The frame commands in a cluster, the refusal lifted for the test ----

// Three members importing from one directory (as every member of a real cluster should see it,
// D5), with FRAME.* and JOB.* let through (TEST_FramesInCluster).
class FrameCommandsInClusterTest : public ::testing::Test {
 protected:
  static InProcessClusterOptions Options() {
    InProcessClusterOptions o;
    o.base.import_dir = "/tmp";
    o.base.export_dir = "/tmp";
    return o;
  }
  FrameCommandsInClusterTest() : cluster_(Options()) {}
  void SetUp() override {
    TEST_FramesInCluster().store(true);
    ASSERT_TRUE(cluster_.WaitFormed());
    char dir[] = "/tmp/floe_frames_cluster_XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    TEST_FramesInCluster().store(false);
    std::filesystem::remove_all(dir_);
  }
  // A directory of `files` CSV files of 40 rows each (x: the row's number, c: a level): each
  // file is at least one chunk.
  std::string WriteCsvDir(const std::string& name, int files) {
    const std::string path = dir_ + "/" + name;
    std::filesystem::create_directory(path);
    int row = 0;
    for (int f = 0; f < files; f++) {
      std::ofstream out(path + "/part" + std::to_string(10 + f) + ".csv");
      out << "x,c\n";
      for (int r = 0; r < 40; r++, row++) out << row << "," << (row % 3 == 0 ? "a" : "b") << "\n";
    }
    return path;
  }
  // The job's final state through client `via`: JOB.STATUS until it no longer runs.
  std::string WaitJob(size_t via, const std::string& reply) {
    EXPECT_TRUE(reply.starts_with(":")) << reply;
    const std::string id = reply.substr(1, reply.find('\r') - 1);
    Session& c = cluster_.client(via);
    std::string status;
    for (int i = 0; i < 4000; i++) {
      status = c.Run({"JOB.STATUS", id});
      if (status.find("\r\nrunning\r\n") == std::string::npos) return status;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    ADD_FAILURE() << "job " << id << " did not finish: " << status;
    return status;
  }
  int64_t ChunksEverywhere() {
    int64_t n = 0;
    for (size_t i = 0; i < 3; i++) n += cluster_.node(i).chunks().chunks();
    return n;
  }
  bool NoChunksEventually() {
    store::internal::EpochDomain::Global().Barrier();  // a removed header's cell is freed
    for (int t = 0; t < 5000; t++) {
      if (ChunksEverywhere() == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return false;
  }
  ClientCluster cluster_;
  std::string dir_;
};

std::string Bulk(const std::string& s) {
  return "$" + std::to_string(s.size()) + "\r\n" + s + "\r\n";
}

// An integer field of a RESP2 map reply (JOB.STATUS, FRAME.INFO): the one after `$n\r\nname\r\n`.
int64_t IntField(const std::string& reply, const std::string& name) {
  const std::string key = Bulk(name) + ":";
  const size_t at = reply.find(key);
  EXPECT_NE(at, std::string::npos) << name << " in " << reply;
  return at == std::string::npos ? -1 : std::stoll(reply.substr(at + key.size()));
}

// D5, D7, D10, D11: FRAME.IMPORT through any member runs at the name's home, whose job (its id
// naming that member) puts the chunks at their homes and then the header; JOB.STATUS follows it
// through any member; FRAME.INFO answers from the header, FRAME.LIST through any member finds it,
// FRAME.DROP drops the header and every chunk.
TEST_F(FrameCommandsInClusterTest, AnImportPutsItsChunksThenItsHeaderAtTheNamesHome) {
  const std::string name = cluster_.KeyAt(1, "imp");
  const std::string path = WriteCsvDir("six", 6);
  Session& c0 = cluster_.client(0);
  const std::string started = c0.Run({"FRAME.IMPORT", name, path});
  ASSERT_TRUE(started.starts_with(":")) << started;
  const uint64_t job_id = std::stoull(started.substr(1));
  EXPECT_EQ(job::Registry::MemberOf(job_id), cluster_.node(1).self());
  const std::string status = WaitJob(2, started);
  EXPECT_NE(status.find("\r\ndone\r\n"), std::string::npos) << status;
  EXPECT_NE(status.find("240 rows"), std::string::npos) << status;
  // Progress: the parse (the input's bytes), then the chunks put (the frame's compressed bytes).
  const std::string first_info = cluster_.client(1).Run({"FRAME.INFO", name});
  EXPECT_EQ(IntField(status, "bytes_total"), IntField(status, "bytes_done"));
  int64_t input = 0;
  for (const auto& e : std::filesystem::directory_iterator(path)) {
    input += static_cast<int64_t>(e.file_size());
  }
  EXPECT_EQ(IntField(status, "bytes_total"), input + IntField(first_info, "compressed_bytes"));

  // The chunks are spread over the members, none in a keyspace; the header is at the name.
  const int64_t chunks = ChunksEverywhere();
  EXPECT_GE(chunks, 6);
  for (size_t i = 0; i < 3; i++) EXPECT_GT(cluster_.node(i).chunks().chunks(), 0) << i;
  EXPECT_EQ(cluster_.client(2).Run({"KEYS", "*"}), "*1\r\n" + Bulk(name));
  for (size_t i = 0; i < 3; i++) {
    const std::string info = cluster_.client(i).Run({"FRAME.INFO", name});
    EXPECT_TRUE(info.starts_with(
        "*14\r\n$4\r\nname\r\n" + Bulk(name) + "$4\r\nrows\r\n:240\r\n" +
        "$7\r\ncolumns\r\n:2\r\n$6\r\nchunks\r\n:" + std::to_string(chunks) + "\r\n"))
        << i << ": " << info;
    EXPECT_NE(info.find("$4\r\ntype\r\n$11\r\ncategorical\r\n$2\r\nna\r\n:0\r\n$6\r\nlevels\r\n:2"),
              std::string::npos)
        << info;
    EXPECT_EQ(cluster_.client(i).Run({"FRAME.LIST"}), "*1\r\n" + Bulk(name)) << i;
  }
  // JOB.LIST through any member shows the job, which ran at member 1 only.
  for (size_t i = 0; i < 3; i++) {
    const std::string list = cluster_.client(i).Run({"JOB.LIST"});
    EXPECT_TRUE(list.starts_with("*1\r\n*5\r\n:" + std::to_string(job_id) + "\r\n")) << list;
  }

  // Again without REPLACE: refused at the home; with it, the old chunks go.
  EXPECT_EQ(c0.Run({"FRAME.IMPORT", name, path}), std::string("-") + kFrameTargetExists + "\r\n");
  const std::string again = WaitJob(0, c0.Run({"FRAME.IMPORT", name, path, "REPLACE"}));
  EXPECT_NE(again.find("\r\ndone\r\n"), std::string::npos) << again;
  store::internal::EpochDomain::Global().Barrier();  // the replaced header's cell is freed
  bool replaced = false;
  for (int t = 0; t < 5000 && !replaced; t++) {
    replaced = ChunksEverywhere() == chunks;
    if (!replaced) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(replaced) << ChunksEverywhere();
  EXPECT_EQ(InfoFigure(cluster_.engine(1), "frames"), 1u);

  EXPECT_EQ(cluster_.client(2).Run({"FRAME.DROP", name}), ":1\r\n");
  EXPECT_EQ(cluster_.client(2).Run({"FRAME.LIST"}), "*0\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"FRAME.INFO", name}), "-ERR no such frame\r\n");
  EXPECT_TRUE(NoChunksEventually());
}

// D9, D5: an import whose put meets a dead member fails the job with the reason, stores no
// header, and drops the chunks it put; the id's registration ends with it.
TEST_F(FrameCommandsInClusterTest, AnImportThatCannotPutFailsAndLeavesNothing) {
  const std::string name = cluster_.KeyAt(0, "imp");
  const std::string path = WriteCsvDir("twelve", 12);
  cluster_.Kill(2);
  Session& c1 = cluster_.client(1);
  const std::string status = WaitJob(1, c1.Run({"FRAME.IMPORT", name, path}));
  EXPECT_NE(status.find("\r\nfailed\r\n"), std::string::npos) << status;
  EXPECT_NE(status.find("import of '"), std::string::npos) << status;
  EXPECT_EQ(c1.Run({"EXISTS", name}), ":0\r\n");
  bool empty = false;
  for (int t = 0; t < 5000 && !empty; t++) {
    empty = cluster_.node(0).chunks().chunks() == 0 && cluster_.node(1).chunks().chunks() == 0;
    if (!empty) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(empty);
  MutexLock lock(&cluster_.engine(0).frame_totals()->ids_mu);
  EXPECT_TRUE(cluster_.engine(0).frame_totals()->importing_ids.empty());
}

// D7, D9: FRAME.EXPORT of a cluster frame through another member writes every chunk's rows in
// order, fetched from their homes; with a member holding chunks dead, the job fails with the
// unreachable member's error and leaves no file.
TEST_F(FrameCommandsInClusterTest, ExportFetchesTheChunksInOrder) {
  const std::string name = cluster_.KeyAt(1, "exp");
  const std::string path = WriteCsvDir("seven", 7);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  ASSERT_GT(cluster_.node(2).chunks().chunks(), 0);
  std::string expected = "x,c\r\n";  // text quoted, as CsvWriter writes it
  for (int row = 0; row < 7 * 40; row++) {
    expected += std::to_string(row) + "," + (row % 3 == 0 ? "\"a\"" : "\"b\"") + "\r\n";
  }
  const std::string out = dir_ + "/out.csv";
  // (Through members 0 and 1: a client of member 2 would outlive its engine, killed below.)
  const std::string exported = WaitJob(1, cluster_.client(0).Run({"FRAME.EXPORT", name, out}));
  EXPECT_NE(exported.find("\r\ndone\r\n"), std::string::npos) << exported;
  EXPECT_NE(exported.find("280 rows, 2 columns"), std::string::npos) << exported;
  std::string written;
  if (FILE* in = std::fopen(out.c_str(), "rb"); in != nullptr) {
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof(buf), in)) > 0;) written.append(buf, n);
    std::fclose(in);
  }
  EXPECT_EQ(written, expected);

  cluster_.Kill(2);
  const std::string failed =
      WaitJob(0, cluster_.client(0).Run({"FRAME.EXPORT", name, dir_ + "/lost.csv"}));
  EXPECT_NE(failed.find("\r\nfailed\r\n"), std::string::npos) << failed;
  EXPECT_NE(failed.find("CLUSTERDOWN The node 127.0.0.1:" +
                        std::to_string(cluster_.cluster_port(2)) + " is unreachable"),
            std::string::npos)
      << failed;
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_)) files += e.is_regular_file();
  EXPECT_EQ(files, 1u);  // out.csv alone: no lost.csv, no temporary file
}

// D7: FRAME.HEAD of a cluster frame through any member (at the home: on the analytics pool, or
// in the proxy session of another member's client) fetches the first chunks from their homes.
TEST_F(FrameCommandsInClusterTest, HeadFetchesTheFirstChunks) {
  const std::string name = cluster_.KeyAt(1, "head");
  const std::string path = WriteCsvDir("three", 3);
  const std::string imported = WaitJob(0, cluster_.client(0).Run({"FRAME.IMPORT", name, path}));
  ASSERT_NE(imported.find("\r\ndone\r\n"), std::string::npos) << imported;
  auto head = [](int rows) {
    std::string out = "*" + std::to_string(rows + 1) + "\r\n*2\r\n" + Bulk("x") + Bulk("c");
    for (int row = 0; row < rows; row++) {
      out += "*2\r\n" + Bulk(std::to_string(row)) + Bulk(row % 3 == 0 ? "a" : "b");
    }
    return out;
  };
  for (size_t i = 0; i < 3; i++) {
    Session& c = cluster_.client(i);
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "50"}), head(50)) << i;  // two chunks of 40 rows
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "0"}), head(0)) << i;
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "1000"}), head(120)) << i;
    EXPECT_EQ(c.Run({"FRAME.HEAD", name, "1001"}), "-ERR n must be between 0 and 1000\r\n");
  }
}

// D11: JOB.STATUS and JOB.CANCEL run at the member the id names, through any member; an id
// naming no member is looked up here.
TEST_F(FrameCommandsInClusterTest, JobsAreFollowedThroughAnyMember) {
  std::atomic<bool> release{false};
  Result<uint64_t> id =
      cluster_.engine(2).jobs().Start("test", "waits", [&release](job::Context& j) {
        while (!release.load() && !j.cancelled())
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return j.cancelled() ? Status::Cancelled("cancelled by JOB.CANCEL") : Status::OK();
      });
  ASSERT_TRUE(id.ok());
  const std::string sid = std::to_string(*id);
  for (size_t i = 0; i < 3; i++) {
    const std::string st = cluster_.client(i).Run({"JOB.STATUS", sid});
    EXPECT_TRUE(st.starts_with("*26\r\n$2\r\nid\r\n:" + sid + "\r\n")) << i << ": " << st;
    EXPECT_NE(st.find("\r\nrunning\r\n"), std::string::npos) << st;
  }
  EXPECT_EQ(cluster_.client(0).Run({"JOB.CANCEL", sid}), "+OK\r\n");
  const std::string st = WaitJob(1, ":" + sid + "\r\n");
  EXPECT_NE(st.find("\r\ncancelled\r\n"), std::string::npos) << st;
  EXPECT_EQ(cluster_.client(1).Run({"JOB.CANCEL", sid}),
            "-ERR job " + sid + " already finished\r\n");
  // Another id of member 2's, and an id naming no member: no such job.
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", std::to_string(*id + 1)}),
            "-ERR no such job\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", std::to_string((uint64_t{999} << 32) + 1)}),
            "-ERR no such job\r\n");
  EXPECT_EQ(cluster_.client(0).Run({"JOB.STATUS", "x"}), "-ERR a job id is a positive integer\r\n");

  // JOB.LIST joins every member's jobs in the client's protocol: RESP3's doubles stay doubles.
  Result<uint64_t> other =
      cluster_.engine(0).jobs().Start("test", "", [](job::Context&) { return Status::OK(); });
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(cluster_.engine(0).jobs().TEST_Wait(*other).ok());
  Session& c = cluster_.client(1);
  c.Run({"HELLO", "3"});
  const std::string list = c.Run({"JOB.LIST"});
  size_t used = 0;
  Result<resp::Reply> r = resp::ParseReply(list, &used);
  ASSERT_TRUE(r.ok()) << list;
  EXPECT_EQ(used, list.size());
  ASSERT_EQ(r->elements.size(), 2u) << list;
  std::set<int64_t> ids;
  for (const resp::Reply& j : r->elements) {
    ASSERT_EQ(j.elements.size(), 5u) << list;
    ids.insert(j.elements[0].integer);
    EXPECT_EQ(j.elements[3].type, resp::Reply::Type::kDouble) << list;
  }
  EXPECT_EQ(ids, (std::set<int64_t>{static_cast<int64_t>(*id), static_cast<int64_t>(*other)}));
}

}  // namespace
}  // namespace floe::server::internal
