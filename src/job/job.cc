// The job registry (job.h). One thread per running job: jobs are few (max_running) and long,
// and each parallelizes inside itself (the parser starts its own workers), so a pool would only
// add a queue whose length someone must bound.

#include "job/job.h"

#include <algorithm>
#include <exception>
#include <new>

namespace floe::job {

std::string_view StateName(State state) {
  switch (state) {
    case State::kRunning:
      return "running";
    case State::kDone:
      return "done";
    case State::kFailed:
      return "failed";
    case State::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

void Context::SetResult(std::string text) {
  MutexLock lock(&mu_);
  result_ = std::move(text);
}

Registry::Registry(RegistryOptions options) : options_(options) {}

Registry::~Registry() {
  std::vector<std::thread> threads;
  {
    MutexLock lock(&mu_);
    for (auto& job : jobs_) {
      job->ctx.cancel_.store(true, std::memory_order_relaxed);
      if (job->thread.joinable()) threads.push_back(std::move(job->thread));
    }
    for (auto& t : finished_threads_) threads.push_back(std::move(t));
    finished_threads_.clear();
  }
  // Outside the lock: a job's thread takes it once more to record its end.
  for (auto& t : threads) t.join();
}

void Registry::SetMember(uint32_t member) {
  MutexLock lock(&mu_);
  id_base_ = uint64_t{member} << kMemberShift;
}

Result<uint64_t> Registry::Start(std::string kind, std::string description, Work work) {
  MutexLock lock(&mu_);
  Trim();
  if (counters_.running >= options_.max_running) {
    counters_.refused++;
    return Status::ResourceExhausted("too many jobs running (at most " +
                                     std::to_string(options_.max_running) + ")");
  }
  if (id_base_ != 0 && next_id_ >= (uint64_t{1} << kMemberShift)) {
    counters_.refused++;
    return Status::ResourceExhausted("this member has run 2^32 - 1 jobs: its job ids are spent");
  }
  auto job = std::make_shared<Job>();
  job->id = id_base_ + next_id_++;
  job->kind = std::move(kind);
  job->description = std::move(description);
  job->start_ms = static_cast<int64_t>(WallMicros() / 1000);
  Job* raw = job.get();
  jobs_.push_back(job);
  counters_.started++;
  counters_.running++;
  // The thread holds a reference: a job forgotten by Trim is never forgotten while running
  // (Trim keeps running jobs), but the reference makes that independent of Trim's rule.
  Result<std::thread> thread = StartThread([this, job, work = std::move(work)]() mutable {
    // An exception (an allocation that failed) fails the job instead of ending the process.
    Status s;
    try {
      s = work(job->ctx);
    } catch (const std::bad_alloc&) {
      s = Status::ResourceExhausted("out of memory");
    } catch (const std::exception& e) {
      s = Status::Internal(std::string("internal error: ") + e.what());
    }
    Finish(job.get(), s);
  });
  if (!thread.ok()) {
    // Never started: forgotten, so no job stays "running" with nothing to run it.
    jobs_.pop_back();
    counters_.started--;
    counters_.running--;
    counters_.refused++;
    return Status::ResourceExhausted("cannot start the job: " +
                                     std::string(thread.status().message()));
  }
  job->thread = std::move(*thread);
  return raw->id;
}

void Registry::Finish(Job* job, const Status& status) {
  MutexLock lock(&mu_);
  State state = State::kDone;
  if (status.code() == StatusCode::kCancelled) {
    state = State::kCancelled;
    job->error = status.message().empty() ? "cancelled" : std::string(status.message());
    counters_.cancelled++;
  } else if (!status.ok()) {
    state = State::kFailed;
    job->error = std::string(status.message());
    counters_.failed++;
  } else {
    counters_.done++;
  }
  counters_.running--;
  job->end_ms.store(static_cast<int64_t>(WallMicros() / 1000), std::memory_order_relaxed);
  // release: a reader that sees the final state sees the error written above (readers also
  // hold mu_, but Snapshot's callers may read the state alone).
  job->state.store(state, std::memory_order_release);
  finished_.notify_all();
}

void Registry::Trim() {
  size_t finished = 0;
  for (const auto& job : jobs_) {
    if (job->state.load(std::memory_order_acquire) != State::kRunning) finished++;
  }
  for (auto it = jobs_.begin(); it != jobs_.end() && finished > options_.max_kept;) {
    if ((*it)->state.load(std::memory_order_acquire) == State::kRunning) {
      ++it;
      continue;
    }
    if ((*it)->thread.joinable()) finished_threads_.push_back(std::move((*it)->thread));
    it = jobs_.erase(it);
    finished--;
  }
  // A finished job's thread has recorded its end and only returns: joining it is short, and it
  // needs no lock, so joining here (under mu_) cannot deadlock.
  for (auto& t : finished_threads_) t.join();
  finished_threads_.clear();
}

Info Registry::Snapshot(const Job& job) {
  Info info;
  info.id = job.id;
  info.kind = job.kind;
  info.description = job.description;
  info.state = job.state.load(std::memory_order_acquire);
  info.rows = job.ctx.rows_.load(std::memory_order_relaxed);
  info.bytes_done = job.ctx.bytes_done_.load(std::memory_order_relaxed);
  info.bytes_total = job.ctx.bytes_total_.load(std::memory_order_relaxed);
  if (info.state == State::kDone) {
    info.percent = 100;
  } else if (info.bytes_total > 0) {
    info.percent = std::min(100.0, 100.0 * static_cast<double>(info.bytes_done) /
                                       static_cast<double>(info.bytes_total));
  }
  if (info.state != State::kRunning) info.error = job.error;
  {
    MutexLock lock(&job.ctx.mu_);
    info.result = job.ctx.result_;
  }
  info.start_ms = job.start_ms;
  info.end_ms = job.end_ms.load(std::memory_order_relaxed);
  return info;
}

Result<Info> Registry::Get(uint64_t id) const {
  MutexLock lock(&mu_);
  for (const auto& job : jobs_) {
    if (job->id == id) return Snapshot(*job);
  }
  return Status::NotFound("no such job");
}

Status Registry::Cancel(uint64_t id) {
  MutexLock lock(&mu_);
  for (const auto& job : jobs_) {
    if (job->id != id) continue;
    if (job->state.load(std::memory_order_acquire) != State::kRunning) {
      return Status::FailedPrecondition("job already finished");
    }
    job->ctx.cancel_.store(true, std::memory_order_relaxed);
    return Status::OK();
  }
  return Status::NotFound("no such job");
}

std::vector<Info> Registry::List() const {
  MutexLock lock(&mu_);
  std::vector<Info> out;
  out.reserve(jobs_.size());
  for (const auto& job : jobs_) out.push_back(Snapshot(*job));
  return out;
}

Counters Registry::counters() const {
  MutexLock lock(&mu_);
  return counters_;
}

Result<Info> Registry::TEST_Wait(uint64_t id) {
  MutexLock lock(&mu_);
  for (;;) {
    std::shared_ptr<Job> found;
    for (const auto& job : jobs_) {
      if (job->id == id) found = job;
    }
    if (found == nullptr) return Status::NotFound("no such job");
    if (found->state.load(std::memory_order_acquire) != State::kRunning) return Snapshot(*found);
    finished_.wait(mu_);
  }
}

}  // namespace floe::job
