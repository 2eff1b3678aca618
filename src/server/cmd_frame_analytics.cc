// FRAME.SUMMARY, FRAME.QUANTILE, FRAME.GROUPBY: argument checks and replies around the map/reduce
// analytics of src/mr. The I/O thread checks the arguments and loads the frame; the analytics
// run on the analytics pool, on every core, and the reply is deferred until they are done
// (internal/analytics_pool.h; docs/frame.md, "Analytics off the I/O thread").

#include <atomic>
#include <cmath>
#include <future>
#include <limits>

#include "mr/mr.h"
#include "server/internal/analytics_pool.h"
#include "server/internal/cluster_node.h"
#include "server/internal/engine_budget.h"
#include "server/internal/frame_cluster.h"
#include "server/internal/frame_value.h"
#include "server/internal/sketch_cell.h"

namespace floe::server::internal {

using frame::Frame;

static_assert(kMaxMapGroupKeys == kMaxGroupByKeys && kMaxMapAggregates == kMaxGroupByAggregates);

// ---- shared by the frame commands (internal/frame_value.h) ----

Result<size_t> FindColumn(const Frame& f, std::string_view col) {
  if (std::optional<size_t> at = f.Find(col)) return *at;
  int64_t i = 0;
  if (ParseInt64(col, &i) && i >= 0 && static_cast<uint64_t>(i) < f.columns()) {
    return static_cast<size_t>(i);
  }
  return ClientError("ERR no such column '" + std::string(col.substr(0, 64)) + "'");
}

Status TaskError(const Status& s) {
  if (s.message().starts_with("OOM ")) return s;  // the budget's refusal: Redis's text as it is
  if (s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kResourceExhausted) {
    return ClientError("ERR " + std::string(s.message()));
  }
  return s;
}

std::function<void(CommandContext&)> StoreMadeFrame(std::shared_ptr<EngineBudget> budget,
                                                    Result<Frame> made, bool replace) {
  if (made.ok()) {
    const uint64_t need = FrameHolder::ChargeOf(*made);
    if (need > budget->held()) {
      if (Status s = budget->Reserve(need - budget->held()); !s.ok()) made = s;
    }
  }
  auto result = std::make_shared<Result<Frame>>(std::move(made));
  return [result, budget = std::move(budget), replace](CommandContext& c) mutable {
    budget.reset();  // StoreFrame charges it now
    if (!result->ok()) return c.Error(TaskError(result->status()));
    const auto rows = static_cast<int64_t>((*result)->rows());
    if (Status s = StoreFrame(c.engine, c.args[2], std::move(*result).value(), replace); !s.ok()) {
      return c.Error(s);
    }
    c.out.Integer(rows);
  };
}

// A column of a cluster frame's header by name, or by index as FindColumn takes one.
Result<size_t> FindHeaderColumn(const FrameHeader& h, std::string_view col) {
  for (size_t i = 0; i < h.columns.size(); i++) {
    if (h.columns[i].name == col) return i;
  }
  int64_t i = 0;
  if (ParseInt64(col, &i) && i >= 0 && static_cast<uint64_t>(i) < h.columns.size()) {
    return static_cast<size_t>(i);
  }
  return ClientError("ERR no such column '" + std::string(col.substr(0, 64)) + "'");
}

namespace {

void WriteSummary(CommandContext& ctx, const std::string& name, std::string_view type,
                  const mr::Summary& s) {
  const mr::Moments& m = s.moments;
  ctx.out.MapHeader(11);
  ctx.out.Bulk("column");
  ctx.out.Bulk(name);
  ctx.out.Bulk("type");
  ctx.out.Bulk(type);
  ctx.out.Bulk("count");
  ctx.out.Integer(static_cast<int64_t>(m.count));
  ctx.out.Bulk("na");
  ctx.out.Integer(static_cast<int64_t>(m.na));
  auto number = [&](bool present, double v) {
    if (present) {
      ctx.out.Double(v);
    } else {
      ctx.out.Null();
    }
  };
  ctx.out.Bulk("min");
  number(m.count > 0, m.min);
  ctx.out.Bulk("max");
  number(m.count > 0, m.max);
  ctx.out.Bulk("mean");
  number(m.count > 0, m.Mean());
  ctx.out.Bulk("sd");
  number(m.count > 1 && !std::isnan(m.sd()), m.sd());
  ctx.out.Bulk("cardinality");
  ctx.out.Integer(static_cast<int64_t>(s.cardinality));
  ctx.out.Bulk("histogram");
  ctx.out.ArrayHeader(s.histogram.size());
  for (uint64_t c : s.histogram) ctx.out.Integer(static_cast<int64_t>(c));
  ctx.out.Bulk("bin_starts");
  ctx.out.ArrayHeader(s.bin_starts.size());
  for (double b : s.bin_starts) ctx.out.Double(b);
}

// FRAME.QUANTILE's reply: one value per probability, nil where the column has no value.
void WriteQuantiles(CommandContext& c, const std::vector<std::optional<double>>& q) {
  c.out.ArrayHeader(q.size());
  for (const std::optional<double>& v : q) {
    if (v.has_value()) {
      c.out.Double(*v);
    } else {
      c.out.Null();
    }
  }
}

// A map task's failure as the client sees it: D9's text as it is (CLUSTERDOWN is no code
// ErrorReplyText knows), anything else as Error(Status) writes it.
void TaskFailure(CommandContext& c, const Status& s) {
  const std::string_view why = s.message();
  if (why.starts_with("CLUSTERDOWN ")) return c.Error(why);
  c.Error(s);
}

// FRAME.SUMMARY of a cluster frame (docs/frames_cluster.md, D8): its two passes as map tasks
// over the members (ClusterNode::MapFrame), the histogram's over the first's range, on the
// analytics pool.
void SummaryInCluster(CommandContext& ctx, std::shared_ptr<const FrameHeader> header,
                      uint32_t bins) {
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr) {
    return ctx.Error("ERR frame " + std::string(ctx.args[1]) + " lives in a cluster");
  }
  Result<size_t> col = FindHeaderColumn(*header, ctx.args[2]);
  if (!col.ok()) return ctx.Error(col.status());
  const auto type = static_cast<frame::ColumnType>(header->columns[*col].type);
  if (type == frame::ColumnType::kString) {
    return ctx.Error("ERR a string column has no summary");
  }
  RunAnalytics(
      ctx,
      [node, header = std::move(header), name = std::string(ctx.args[1]),
       col = static_cast<uint32_t>(*col), bins,
       type](const std::atomic<bool>* cancel) -> AnalyticsReply {
        Result<MapTaskAnswer> first = node->MapFrame(
            *header, name, {.op = MapOp::kSummaryMoments, .column = col, .bins = bins}, cancel);
        Result<mr::Summary> s = first.status();
        if (first.ok()) {
          const mr::SummaryMoments& m = first->moments;
          if (m.lo <= m.hi) {
            Result<MapTaskAnswer> second = node->MapFrame(*header, name,
                                                          {.op = MapOp::kSummaryHistogram,
                                                           .column = col,
                                                           .bins = bins,
                                                           .lo = m.lo,
                                                           .hi = m.hi},
                                                          cancel);
            s = second.ok()
                    ? Result<mr::Summary>(mr::FinishSummary(m, std::move(second->histogram), bins))
                    : Result<mr::Summary>(second.status());
          } else {
            s = mr::FinishSummary(m, {}, bins);
          }
        }
        return [column = header->columns[col].name, type, s = std::move(s)](CommandContext& c) {
          if (!s.ok()) return TaskFailure(c, s.status());
          WriteSummary(c, column, frame::ColumnTypeName(type), *s);
        };
      },
      AnalyticsWaits::kForMembers);
}

// FRAME.QUANTILE of a cluster frame (docs/frames_cluster.md, D8): the non-NA count (the
// summary's first pass), then each refinement pass of mr::QuantilesByPasses as a map task over
// the members, on the analytics pool.
void QuantileInCluster(CommandContext& ctx, std::shared_ptr<const FrameHeader> header,
                       std::vector<double> ps) {
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr) {
    return ctx.Error("ERR frame " + std::string(ctx.args[1]) + " lives in a cluster");
  }
  Result<size_t> col = FindHeaderColumn(*header, ctx.args[2]);
  if (!col.ok()) return ctx.Error(col.status());
  if (static_cast<frame::ColumnType>(header->columns[*col].type) == frame::ColumnType::kString) {
    return ctx.Error("ERR a string column has no quantiles");
  }
  RunAnalytics(
      ctx,
      [node, header = std::move(header), name = std::string(ctx.args[1]),
       col = static_cast<uint32_t>(*col),
       ps = std::move(ps)](const std::atomic<bool>* cancel) -> AnalyticsReply {
        Result<std::vector<std::optional<double>>> q = Status::Internal("not run");
        Result<MapTaskAnswer> count =
            node->MapFrame(*header, name, {.op = MapOp::kSummaryMoments, .column = col}, cancel);
        if (!count.ok()) {
          q = count.status();
        } else {
          q = mr::QuantilesByPasses(
              count->moments.m.count, ps,
              [&](int pass, const std::vector<uint64_t>& wanted) -> Result<std::vector<uint64_t>> {
                FLOE_ASSIGN_OR_RETURN(MapTaskAnswer a,
                                      node->MapFrame(*header, name,
                                                     {.op = MapOp::kQuantileRadix,
                                                      .column = col,
                                                      .pass = static_cast<uint32_t>(pass),
                                                      .prefixes = wanted},
                                                     cancel));
                return std::move(a.histogram);
              });
        }
        return [q = std::move(q)](CommandContext& c) {
          if (!q.ok()) return TaskFailure(c, q.status());
          WriteQuantiles(c, *q);
        };
      },
      AnalyticsWaits::kForMembers);
}

// FRAME.GROUPBY of a cluster frame (docs/frames_cluster.md, D6, D8), on the analytics pool: a
// kGroupBy map task gives the members' partial tables merged up the tree (each member and each
// merge held to one node's group limit); the result is built here as one node builds it, then
// made a frame as an import makes one (D4: a new id and group, its chunks put at their homes,
// then its header stored at the destination's home by PUT_HEADER, D14). A failed put or a
// refused header drops the chunks put (D10). Replies the number of groups.
void GroupByInCluster(CommandContext& ctx, std::shared_ptr<const FrameHeader> header,
                      const std::vector<std::string_view>& key_names,
                      const std::vector<std::pair<mr::AggFn, std::string_view>>& agg_names,
                      bool replace) {
  ClusterNode* node = ctx.engine.cluster();
  if (node == nullptr) {
    return ctx.Error("ERR frame " + std::string(ctx.args[1]) + " lives in a cluster");
  }
  const FrameHeader& h = *header;
  MapTaskRequest task{.op = MapOp::kGroupBy};
  for (std::string_view k : key_names) {
    Result<size_t> col = FindHeaderColumn(h, k);
    if (!col.ok()) return ctx.Error(col.status());
    task.group_keys.push_back(static_cast<uint32_t>(*col));
  }
  for (const auto& [fn, name] : agg_names) {
    Result<size_t> col = FindHeaderColumn(h, name);
    if (!col.ok()) return ctx.Error(col.status());
    task.aggregates.push_back({.fn = fn, .col = *col});
  }
  // mr::GroupBy's checks, with its texts, before any member is asked.
  auto type = [&h](size_t c) { return static_cast<frame::ColumnType>(h.columns[c].type); };
  for (size_t i = 0; i < task.group_keys.size(); i++) {
    if (type(task.group_keys[i]) == frame::ColumnType::kString) {
      return ctx.Error("ERR a string column cannot be a key");
    }
    for (size_t j = 0; j < i; j++) {
      if (task.group_keys[i] == task.group_keys[j]) {
        return ctx.Error("ERR a key column given twice");
      }
    }
  }
  for (const mr::Aggregate& agg : task.aggregates) {
    const frame::ColumnType t = type(agg.col);
    if (agg.fn != mr::AggFn::kCount && agg.fn != mr::AggFn::kDistinct &&
        (t == frame::ColumnType::kString || t == frame::ColumnType::kCategorical)) {
      return ctx.Error("ERR only count and distinct apply to a string or categorical column");
    }
  }
  RunAnalytics(
      ctx,
      [node, header = std::move(header), name = std::string(ctx.args[1]),
       dst = std::string(ctx.args[2]), task = std::move(task), replace,
       &engine = ctx.engine](const std::atomic<bool>* cancel) mutable -> AnalyticsReply {
        const std::vector<uint32_t> keys = task.group_keys;
        const std::vector<mr::Aggregate> aggs = task.aggregates;
        Result<int64_t> out = [&]() -> Result<int64_t> {
          FLOE_ASSIGN_OR_RETURN(MapTaskAnswer a,
                                node->MapFrame(*header, name, std::move(task), cancel));
          std::vector<mr::GroupColumn> key_columns, agg_columns;
          for (uint32_t k : keys) {
            const FrameHeader::Column& c = header->columns[k];
            key_columns.push_back({.name = c.name,
                                   .type = static_cast<frame::ColumnType>(c.type),
                                   .domain = &c.domain});
          }
          for (const mr::Aggregate& agg : aggs) {
            const FrameHeader::Column& c = header->columns[agg.col];
            agg_columns.push_back({.name = c.name, .type = static_cast<frame::ColumnType>(c.type)});
          }
          EngineBudget budget(engine);
          FLOE_ASSIGN_OR_RETURN(frame::Frame made,
                                mr::FinishGroupBy(a.groups, key_columns, agg_columns, aggs,
                                                  {.cancel = cancel, .memory = &budget}));
          const auto groups = static_cast<int64_t>(made.rows());
          // D4: a frame made from nothing, as an import makes one.
          const uint64_t id = engine.NewFrameId();
          const uint16_t group = RandomChunkGroup();
          const std::string encoded = EncodeFrameHeader(HeaderOf(made, id, group));
          std::promise<Status> put;
          node->PutFrameChunks(std::make_shared<const frame::Frame>(std::move(made)), id, group,
                               cluster::KeySlot(dst),
                               [&put](Status s) { put.set_value(std::move(s)); });
          if (Status s = put.get_future().get(); !s.ok()) {
            node->DropFrameChunks(id);
            return s;
          }
          bool unknown = false;
          if (Status s = node->PutHeader(dst, replace, encoded, nullptr, &unknown); !s.ok()) {
            // No answer: the header may have landed; the sweep judges the chunks (D10).
            if (!unknown) node->DropFrameChunks(id);
            return s;
          }
          return groups;
        }();
        return [out = std::move(out)](CommandContext& c) {
          if (!out.ok()) {
            // D9's text as it is (CLUSTERDOWN is no code ErrorReplyText knows), and a member's
            // error (a group limit passed there) as it came.
            const std::string_view why = out.status().message();
            if (why.starts_with("CLUSTERDOWN ") || why.starts_with("TRYAGAIN ") ||
                why.starts_with("ERR ")) {
              return c.Error(why);
            }
            return c.Error(TaskError(out.status()));
          }
          c.out.Integer(*out);
        };
      },
      AnalyticsWaits::kForMembers);
}

}  // namespace

// FRAME.SUMMARY name col [BINS n]
void CmdFrameSummary(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  int64_t bins = mr::kDefaultBins;
  if (ctx.args.size() == 5 && EqualsIgnoreCase(ctx.args[3], "BINS")) {
    if (!ParseInt64(ctx.args[4], &bins)) return ctx.NotInteger();
    if (bins < 1 || bins > mr::kMaxBins) return ctx.Error("ERR BINS must be between 1 and 10000");
  } else if (ctx.args.size() != 3) {
    return ctx.SyntaxError();
  }
  Result<LoadedFrame> loaded = LoadFrameOrHeader(ctx, ctx.args[1]);
  if (!loaded.ok()) return ctx.Error(loaded.status());
  if (loaded->frame == nullptr) {
    return SummaryInCluster(ctx, loaded->header, static_cast<uint32_t>(bins));
  }
  std::shared_ptr<const Frame> f = std::move(loaded->frame);
  Result<size_t> col = FindColumn(*f, ctx.args[2]);
  if (!col.ok()) return ctx.Error(col.status());
  RunAnalytics(ctx, [f = std::move(f), col = *col, bins](const std::atomic<bool>* cancel) {
    Result<mr::Summary> s = mr::Summarize(*f, col, static_cast<uint32_t>(bins), {.cancel = cancel});
    return AnalyticsReply([name = std::string(f->name(col)),
                           type = frame::ColumnTypeName(f->vec(col).type()),
                           s = std::move(s)](CommandContext& c) {
      if (!s.ok()) return c.Error(TaskError(s.status()));
      WriteSummary(c, name, type, *s);
    });
  });
}

// FRAME.QUANTILE name col p [p ...]
void CmdFrameQuantile(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  if (ctx.args.size() - 3 > mr::kMaxProbabilities) {
    return ctx.Error("ERR at most 100 probabilities");
  }
  std::vector<double> ps;
  for (size_t i = 3; i < ctx.args.size(); i++) {
    double p = 0;
    if (!ParseRedisDouble(ctx.args[i], &p) || !(p >= 0 && p <= 1)) {
      return ctx.Error("ERR a probability must be a number in [0, 1]");
    }
    ps.push_back(p);
  }
  Result<LoadedFrame> loaded = LoadFrameOrHeader(ctx, ctx.args[1]);
  if (!loaded.ok()) return ctx.Error(loaded.status());
  if (loaded->frame == nullptr) return QuantileInCluster(ctx, loaded->header, std::move(ps));
  std::shared_ptr<const Frame> f = std::move(loaded->frame);
  Result<size_t> col = FindColumn(*f, ctx.args[2]);
  if (!col.ok()) return ctx.Error(col.status());
  RunAnalytics(ctx, [f = std::move(f), col = *col, ps = std::move(ps),
                     &engine = ctx.engine](const std::atomic<bool>* cancel) {
    EngineBudget budget(engine);
    Result<std::vector<std::optional<double>>> q =
        mr::Quantiles(*f, col, ps, {.cancel = cancel, .memory = &budget});
    return AnalyticsReply([q = std::move(q)](CommandContext& c) {
      if (!q.ok()) return c.Error(TaskError(q.status()));
      WriteQuantiles(c, *q);
    });
  });
}

// FRAME.GROUPBY src dst KEYS col [col ...] AGG fn col [fn col ...] [REPLACE]
void CmdFrameGroupBy(CommandContext& ctx) {
  if (FinishAnalytics(ctx) || RefusedInCluster(ctx)) return;
  const auto& a = ctx.args;
  if (Status s = CheckFrameName(a[2]); !s.ok()) return ctx.Error(s);
  if (!EqualsIgnoreCase(a[3], "KEYS")) return ctx.SyntaxError();
  size_t i = 4;
  std::vector<std::string_view> key_names;
  while (i < a.size() && !EqualsIgnoreCase(a[i], "AGG")) key_names.push_back(a[i++]);
  if (key_names.empty() || i == a.size()) return ctx.SyntaxError();
  i++;  // AGG
  bool replace = false;
  std::vector<std::pair<mr::AggFn, std::string_view>> agg_names;
  while (i < a.size()) {
    if (i + 1 == a.size() && EqualsIgnoreCase(a[i], "REPLACE")) {
      replace = true;
      break;
    }
    std::optional<mr::AggFn> fn = mr::ParseAggFn(a[i]);
    if (!fn) {
      return ctx.Error("ERR unknown aggregate '" + std::string(a[i].substr(0, 32)) +
                       "' (count, sum, mean, min, max, sd, distinct)");
    }
    if (i + 1 == a.size()) return ctx.SyntaxError();
    agg_names.emplace_back(*fn, a[i + 1]);
    i += 2;
  }
  if (agg_names.empty()) return ctx.SyntaxError();
  if (key_names.size() > kMaxGroupByKeys || agg_names.size() > kMaxGroupByAggregates) {
    return ctx.Error(kGroupByLimitsError);
  }
  Result<LoadedFrame> loaded = LoadFrameOrHeader(ctx, a[1]);
  if (!loaded.ok()) return ctx.Error(loaded.status());
  // In a cluster the destination is stored by PUT_HEADER at its home (D14), which refuses it
  // there if it exists without REPLACE; a one-node source stores it here.
  ClusterNode* node = ctx.engine.cluster();
  const bool dst_here = node == nullptr || node->Home(cluster::KeySlot(a[2])) == node->self();
  if (loaded->frame == nullptr) {
    if (!replace && dst_here && Lookup(ctx, a[2], false)) return ctx.Error(kFrameTargetExists);
    return GroupByInCluster(ctx, std::move(loaded->header), key_names, agg_names, replace);
  }
  if (!dst_here) {
    return ctx.Error(
        "ERR the source is a one-node frame and the destination is homed at another member");
  }
  std::shared_ptr<const Frame> f = std::move(loaded->frame);
  std::vector<size_t> keys;
  for (std::string_view k : key_names) {
    Result<size_t> col = FindColumn(*f, k);
    if (!col.ok()) return ctx.Error(col.status());
    keys.push_back(*col);
  }
  std::vector<mr::Aggregate> aggs;
  for (const auto& [fn, name] : agg_names) {
    Result<size_t> col = FindColumn(*f, name);
    if (!col.ok()) return ctx.Error(col.status());
    aggs.push_back({.fn = fn, .col = *col});
  }
  if (!replace && Lookup(ctx, a[2], false)) {
    return ctx.Error(kFrameTargetExists);
  }
  RunAnalytics(ctx, [f = std::move(f), keys = std::move(keys), aggs = std::move(aggs), replace,
                     &engine = ctx.engine](const std::atomic<bool>* cancel) {
    auto budget = std::make_shared<EngineBudget>(engine);
    Result<Frame> g = mr::GroupBy(*f, keys, aggs, {.cancel = cancel, .memory = budget.get()});
    return AnalyticsReply(StoreMadeFrame(std::move(budget), std::move(g), replace));
  });
}

}  // namespace floe::server::internal
