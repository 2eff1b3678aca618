// Contract C9 (docs/consensus.md) on raft's in-memory fixture: the same fsm adapter as the
// Log's, with a virtual clock and a network that only the test drives, so a partition is exact
// and the run is the same every time.

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "consensus/consensus.h"
#include "consensus/internal/fsm.h"
#include "consensus/internal/recorder_testing.h"

extern "C" {
#include <raft/fixture.h>
}

namespace floe::consensus {
namespace {

using internal::Recorder;

struct FixtureApply {
  struct raft_apply req {};
  bool done = false;
  int status = -1;
};

// Proposes `entry` on the fixture's server `i`, framed as Log frames it; raft's return code.
int FixturePropose(struct raft_fixture* f, unsigned i, std::string_view entry, FixtureApply* a) {
  struct raft_buffer buf;
  buf.len = internal::FramedSize(entry.size());
  buf.base = raft_malloc(buf.len);
  internal::Frame(entry, static_cast<char*>(buf.base));
  a->req.data = a;
  const int rv = raft_apply(raft_fixture_get(f, i), &a->req, &buf, 1,
                            [](struct raft_apply* req, int status, void*) {
                              auto* self = static_cast<FixtureApply*>(req->data);
                              self->done = true;
                              self->status = status;
                            });
  if (rv != 0) raft_free(buf.base);
  return rv;
}

// A leader cut off from the majority commits nothing and steps down; the majority elects
// another and goes on; healed, the old leader ends with exactly the majority's history.
TEST(ConsensusFixtureTest, AnIsolatedLeaderCommitsNothingAndRejoinsTheMajority) {
  auto f = std::make_unique<struct raft_fixture>();
  ASSERT_EQ(raft_fixture_initialize(f.get()), 0);
  Recorder machines[3];
  std::vector<std::unique_ptr<internal::FsmAdapter>> adapters;
  for (unsigned i = 0; i < 3; i++) {
    adapters.push_back(std::make_unique<internal::FsmAdapter>(&machines[i], i + 1));
    ASSERT_EQ(raft_fixture_grow(f.get(), adapters[i]->fsm()), 0);
    adapters[i]->set_raft(raft_fixture_get(f.get(), i));
  }
  struct raft_configuration conf;
  ASSERT_EQ(raft_fixture_configuration(f.get(), 3, &conf), 0);
  ASSERT_EQ(raft_fixture_bootstrap(f.get(), &conf), 0);
  raft_configuration_close(&conf);
  ASSERT_EQ(raft_fixture_start(f.get()), 0);
  ASSERT_TRUE(raft_fixture_step_until_has_leader(f.get(), 10'000));
  const unsigned old_leader = raft_fixture_leader_index(f.get());

  FixtureApply a;
  ASSERT_EQ(FixturePropose(f.get(), old_leader, "a", &a), 0);
  ASSERT_TRUE(raft_fixture_step_until_applied(f.get(), 3, a.req.index, 10'000));
  EXPECT_TRUE(a.done && a.status == 0);
  for (Recorder& m : machines) {
    EXPECT_EQ(m.Applied(), (std::vector<std::pair<uint64_t, std::string>>{{a.req.index, "a"}}));
  }

  for (unsigned j = 0; j < 3; j++) {
    if (j == old_leader) continue;
    raft_fixture_saturate(f.get(), old_leader, j);
    raft_fixture_saturate(f.get(), j, old_leader);
  }
  FixtureApply lost;
  ASSERT_EQ(FixturePropose(f.get(), old_leader, "lost", &lost), 0);
  raft_fixture_step_until_elapsed(f.get(), 5'000);
  EXPECT_TRUE(lost.done);
  EXPECT_NE(lost.status, 0);
  EXPECT_NE(raft_state(raft_fixture_get(f.get(), old_leader)), RAFT_LEADER);
  unsigned new_leader = 3;
  for (unsigned j = 0; j < 3; j++) {
    if (j != old_leader && raft_state(raft_fixture_get(f.get(), j)) == RAFT_LEADER) new_leader = j;
  }
  ASSERT_NE(new_leader, 3u);

  FixtureApply b;
  ASSERT_EQ(FixturePropose(f.get(), new_leader, "b", &b), 0);
  for (unsigned j = 0; j < 3; j++) {
    if (j == old_leader) continue;
    ASSERT_TRUE(raft_fixture_step_until_applied(f.get(), j, b.req.index, 10'000));
  }
  EXPECT_EQ(machines[old_leader].Entries(), std::vector<std::string>{"a"});

  for (unsigned j = 0; j < 3; j++) {
    if (j == old_leader) continue;
    raft_fixture_desaturate(f.get(), old_leader, j);
    raft_fixture_desaturate(f.get(), j, old_leader);
  }
  ASSERT_TRUE(raft_fixture_step_until_applied(f.get(), old_leader, b.req.index, 10'000));
  for (Recorder& m : machines) EXPECT_EQ(m.Entries(), (std::vector<std::string>{"a", "b"}));
  raft_fixture_close(f.get());
}

}  // namespace
}  // namespace floe::consensus
