// JOB.STATUS, JOB.CANCEL, JOB.LIST: the node's job registry (src/job) as commands.

#include "server/internal/frame_value.h"

namespace floe::server::internal {

namespace {

bool ParseJobId(CommandContext& ctx, uint64_t* id) {
  int64_t v = 0;
  if (!ParseInt64(ctx.args[1], &v) || v < 1) {
    ctx.Error("ERR a job id is a positive integer");
    return false;
  }
  *id = static_cast<uint64_t>(v);
  return true;
}

}  // namespace

// JOB.STATUS id: a map of the job's fields.
void CmdJobStatus(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  uint64_t id = 0;
  if (!ParseJobId(ctx, &id)) return;
  Result<job::Info> info = ctx.engine.jobs().Get(id);
  if (!info.ok()) return ctx.Error("ERR no such job");
  const int64_t end = info->end_ms != 0 ? info->end_ms : ctx.now_ms;
  ctx.out.MapHeader(13);
  ctx.out.Bulk("id");
  ctx.out.Integer(static_cast<int64_t>(info->id));
  ctx.out.Bulk("kind");
  ctx.out.Bulk(info->kind);
  ctx.out.Bulk("description");
  ctx.out.Bulk(info->description);
  ctx.out.Bulk("state");
  ctx.out.Bulk(job::StateName(info->state));
  ctx.out.Bulk("rows");
  ctx.out.Integer(static_cast<int64_t>(info->rows));
  ctx.out.Bulk("bytes_done");
  ctx.out.Integer(static_cast<int64_t>(info->bytes_done));
  ctx.out.Bulk("bytes_total");
  ctx.out.Integer(static_cast<int64_t>(info->bytes_total));
  ctx.out.Bulk("percent");
  ctx.out.Double(info->percent);
  ctx.out.Bulk("error");
  // The job's error is a reason, not a reply: without the RESP code word a message may carry.
  std::string_view error = info->error;
  if (error.starts_with("ERR ")) error.remove_prefix(4);
  ctx.out.Bulk(error);
  ctx.out.Bulk("result");
  ctx.out.Bulk(info->result);
  ctx.out.Bulk("start_ms");
  ctx.out.Integer(info->start_ms);
  ctx.out.Bulk("end_ms");
  ctx.out.Integer(info->end_ms);
  ctx.out.Bulk("elapsed_ms");
  ctx.out.Integer(std::max<int64_t>(0, end - info->start_ms));
}

void CmdJobCancel(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  uint64_t id = 0;
  if (!ParseJobId(ctx, &id)) return;
  Status s = ctx.engine.jobs().Cancel(id);
  if (s.code() == StatusCode::kNotFound) return ctx.Error("ERR no such job");
  if (!s.ok()) return ctx.Error("ERR job " + std::to_string(id) + " already finished");
  ctx.out.Ok();
}

// JOB.LIST: one array per kept job: id, kind, state, percent, description.
void CmdJobList(CommandContext& ctx) {
  if (RefusedInCluster(ctx)) return;
  const std::vector<job::Info> jobs = ctx.engine.jobs().List();
  ctx.out.ArrayHeader(jobs.size());
  for (const job::Info& j : jobs) {
    ctx.out.ArrayHeader(5);
    ctx.out.Integer(static_cast<int64_t>(j.id));
    ctx.out.Bulk(j.kind);
    ctx.out.Bulk(job::StateName(j.state));
    ctx.out.Double(j.percent);
    ctx.out.Bulk(j.description);
  }
}

}  // namespace floe::server::internal
