#include "job/job.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace floe::job {
namespace {

// Work that runs until cancelled, publishing progress.
Status UntilCancelled(Context& ctx) {
  uint64_t rows = 0;
  while (!ctx.cancelled()) {
    ctx.SetProgress(++rows, 50, 100);
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return Status::Cancelled("cancelled by JOB.CANCEL");
}

TEST(JobTest, DoneJobKeepsItsResultAndTimes) {
  Registry r;
  Result<uint64_t> id = r.Start("import", "t <- x.csv", [](Context& ctx) {
    ctx.SetProgress(10, 100, 100);
    ctx.SetResult("frame t");
    return Status::OK();
  });
  ASSERT_TRUE(id.ok());
  EXPECT_EQ(*id, 1u);
  Result<Info> info = r.TEST_Wait(*id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, State::kDone);
  EXPECT_EQ(info->rows, 10u);
  EXPECT_EQ(info->percent, 100);
  EXPECT_EQ(info->result, "frame t");
  EXPECT_EQ(info->kind, "import");
  EXPECT_GT(info->start_ms, 0);
  EXPECT_GE(info->end_ms, info->start_ms);
  EXPECT_EQ(r.counters().done, 1u);
  EXPECT_EQ(r.counters().running, 0u);
}

// docs/frames_cluster.md, D11: in a cluster a job id is member x 2^32 + n, naming its member.
TEST(JobTest, AMembersJobIdsNameIt) {
  Registry r;
  auto quick = [](Context&) { return Status::OK(); };
  Result<uint64_t> one = r.Start("import", "a", quick);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, 1u);
  EXPECT_EQ(Registry::MemberOf(*one), 0u);
  r.SetMember((1u << 20) - 1);
  Result<uint64_t> two = r.Start("import", "b", quick);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(*two, (uint64_t{(1u << 20) - 1} << 32) + 2);
  EXPECT_EQ(Registry::MemberOf(*two), (1u << 20) - 1);
  ASSERT_TRUE(r.TEST_Wait(*two).ok());
  EXPECT_TRUE(r.Get(*two).ok());
  EXPECT_EQ(r.Get(2).status().code(), StatusCode::kNotFound);
}

TEST(JobTest, FailedJobShowsItsError) {
  Registry r;
  uint64_t id = *r.Start("import", "", [](Context&) { return Status::NotFound("no file x"); });
  Result<Info> info = r.TEST_Wait(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, State::kFailed);
  EXPECT_EQ(info->error, "no file x");
  EXPECT_EQ(r.counters().failed, 1u);
}

TEST(JobTest, CancelStopsARunningJobAndRefusesAFinishedOne) {
  Registry r;
  uint64_t id = *r.Start("import", "", UntilCancelled);
  Result<Info> running = r.Get(id);
  ASSERT_TRUE(running.ok());
  EXPECT_EQ(running->state, State::kRunning);
  EXPECT_EQ(running->end_ms, 0);
  ASSERT_TRUE(r.Cancel(id).ok());
  Result<Info> info = r.TEST_Wait(id);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->state, State::kCancelled);
  EXPECT_EQ(r.Cancel(id).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(r.Cancel(999).code(), StatusCode::kNotFound);
  EXPECT_EQ(r.Get(999).status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.counters().cancelled, 1u);
}

TEST(JobTest, AJobWithoutAThreadIsRefusedAndForgotten) {
  Registry r;
  floe::internal::FailNextThreadStarts(1);
  Result<uint64_t> refused = r.Start("import", "", [](Context&) { return Status::OK(); });
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.counters().running, 0u);
  EXPECT_EQ(r.counters().refused, 1u);
  EXPECT_TRUE(r.List().empty());
  // The next one starts as usual.
  Result<uint64_t> id = r.Start("import", "", [](Context&) { return Status::OK(); });
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(r.TEST_Wait(*id).ok());
  EXPECT_EQ(r.counters().done, 1u);
}

TEST(JobTest, RunningJobsAreBounded) {
  Registry r({.max_running = 2, .max_kept = 10});
  uint64_t a = *r.Start("a", "", UntilCancelled);
  uint64_t b = *r.Start("b", "", UntilCancelled);
  Result<uint64_t> c = r.Start("c", "", UntilCancelled);
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(r.counters().refused, 1u);
  ASSERT_TRUE(r.Cancel(a).ok());
  ASSERT_TRUE(r.TEST_Wait(a).ok());
  Result<uint64_t> d = r.Start("d", "", UntilCancelled);
  EXPECT_TRUE(d.ok());
  ASSERT_TRUE(r.Cancel(b).ok());
  // The destructor cancels d and joins it.
}

TEST(JobTest, OldestFinishedJobsAreForgottenBeyondTheLimit) {
  Registry r({.max_running = 4, .max_kept = 3});
  uint64_t running = *r.Start("slow", "", UntilCancelled);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 6; i++) {
    ids.push_back(*r.Start("quick", "", [](Context&) { return Status::OK(); }));
    ASSERT_TRUE(r.TEST_Wait(ids.back()).ok());
  }
  // The next Start trims: three finished kept, plus the running one.
  uint64_t last = *r.Start("quick", "", [](Context&) { return Status::OK(); });
  ASSERT_TRUE(r.TEST_Wait(last).ok());
  std::vector<Info> list = r.List();
  ASSERT_EQ(list.size(), 5u);  // 1 running + 3 kept + the last (trimmed on the next Start)
  EXPECT_EQ(list[0].id, running);
  EXPECT_EQ(r.Get(ids[0]).status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(r.Get(ids[5]).ok());
  for (size_t i = 1; i < list.size(); i++) EXPECT_LT(list[i - 1].id, list[i].id);
}

TEST(JobTest, ProgressIsVisibleWhileRunning) {
  Registry r;
  uint64_t id = *r.Start("import", "", UntilCancelled);
  Result<Info> info = r.Get(id);
  for (int i = 0; i < 2000 && info.ok() && info->rows == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    info = r.Get(id);
  }
  ASSERT_TRUE(info.ok());
  EXPECT_GT(info->rows, 0u);
  EXPECT_EQ(info->percent, 50);
  ASSERT_TRUE(r.Cancel(id).ok());
}

}  // namespace
}  // namespace floe::job
