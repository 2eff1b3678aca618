// /metrics: INFO's numbers in Prometheus's text exposition format 0.0.4. Built from INFO's own
// text (taken through the scraping connection's session), so the two can never disagree about
// what a number means; docs/api.md lists the families.

#include <cstdio>
#include <cstdlib>
#include <set>

#include "http/http.h"

namespace floe::http {

namespace {

enum class Kind : uint8_t { kGauge, kCounter };

// One INFO field as a metric family of one series.
struct Field {
  std::string_view section;
  std::string_view info;    // INFO's name
  std::string_view metric;  // floe_<name>
  Kind kind;
  std::string_view help;
};

// clang-format off
constexpr Field kFields[] = {
    {"server", "uptime_in_seconds", "floe_uptime_seconds", Kind::kGauge, "Seconds since the node started"},
    {"server", "io_threads_active", "floe_io_threads", Kind::kGauge, "I/O threads serving clients"},
    {"clients", "connected_clients", "floe_connected_clients", Kind::kGauge, "Clients connected (RESP and HTTP)"},
    {"clients", "maxclients", "floe_maxclients", Kind::kGauge, "Most simultaneous clients (maxclients)"},
    {"memory", "used_memory", "floe_memory_used_bytes", Kind::kGauge, "Bytes used by data and client buffers (what maxmemory limits)"},
    {"memory", "used_memory_rss", "floe_memory_rss_bytes", Kind::kGauge, "Resident set size of the process"},
    {"memory", "maxmemory", "floe_maxmemory_bytes", Kind::kGauge, "The maxmemory setting; 0 = no limit"},
    {"stats", "total_connections_received", "floe_connections_received_total", Kind::kCounter, "Connections accepted"},
    {"stats", "total_commands_processed", "floe_commands_processed_total", Kind::kCounter, "Commands run"},
    {"stats", "total_net_input_bytes", "floe_net_input_bytes_total", Kind::kCounter, "Bytes read from RESP clients"},
    {"stats", "total_net_output_bytes", "floe_net_output_bytes_total", Kind::kCounter, "Bytes written to RESP clients"},
    {"stats", "rejected_connections", "floe_rejected_connections_total", Kind::kCounter, "Connections refused at maxclients"},
    {"stats", "expired_keys", "floe_expired_keys_total", Kind::kCounter, "Keys removed because their TTL passed"},
    {"stats", "keyspace_hits", "floe_keyspace_hits_total", Kind::kCounter, "Key lookups that found the key"},
    {"stats", "keyspace_misses", "floe_keyspace_misses_total", Kind::kCounter, "Key lookups that did not"},
    {"stats", "total_error_replies", "floe_error_replies_total", Kind::kCounter, "Error replies sent"},
    {"stats", "errors_internal", "floe_internal_errors_total", Kind::kCounter, "Handler exceptions turned into error replies (a bug if not 0)"},
};
// clang-format on

// Cluster fields (INFO cluster) that are levels, not counts.
const std::set<std::string_view> kClusterGauges = {
    "cluster_enabled",     "cluster_formed",         "cluster_map_version", "cluster_self_id",
    "cluster_slots_owned", "cluster_proxy_sessions", "cluster_home_ready",  "cache_keys",
    "cache_bytes",         "cluster_formation_ms"};

bool IsNumber(std::string_view text) {
  if (text.empty()) return false;
  std::string copy(text);
  char* end = nullptr;
  std::strtod(copy.c_str(), &end);
  return end == copy.c_str() + copy.size();
}

bool IsMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); i++) {
    const char c = name[i];
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
                    (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// A label value: backslash, double quote and newline escaped (the format's rule).
std::string LabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Header(std::string* out, std::string_view name, Kind kind, std::string_view help) {
  out->append("# HELP ").append(name).append(" ").append(help).append("\n");
  out->append("# TYPE ").append(name).append(kind == Kind::kGauge ? " gauge\n" : " counter\n");
}

const std::string* Find(const InfoSections& info, std::string_view section, std::string_view name) {
  auto it = info.find(std::string(section));
  if (it == info.end()) return nullptr;
  for (const auto& [k, v] : it->second) {
    if (k == name) return &v;
  }
  return nullptr;
}

// "a=1,b=2" -> the value of `key`, or empty.
std::string_view SubField(std::string_view list, std::string_view key) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    const std::string_view part = list.substr(0, comma);
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
    const size_t eq = part.find('=');
    if (eq != std::string_view::npos && part.substr(0, eq) == key) return part.substr(eq + 1);
  }
  return {};
}

}  // namespace

std::string PrometheusText(const InfoSections& info) {
  std::string out;
  for (const Field& f : kFields) {
    const std::string* v = Find(info, f.section, f.info);
    if (v == nullptr || !IsNumber(*v)) continue;
    Header(&out, f.metric, f.kind, f.help);
    out.append(f.metric).append(" ").append(*v).append("\n");
  }
  // Keys: INFO keyspace has a db0 line only when there are keys.
  std::string keys = "0", expires = "0";
  if (const std::string* db0 = Find(info, "keyspace", "db0")) {
    const std::string_view k = SubField(*db0, "keys"), e = SubField(*db0, "expires");
    if (IsNumber(k)) keys = std::string(k);
    if (IsNumber(e)) expires = std::string(e);
  }
  Header(&out, "floe_keys", Kind::kGauge, "Keys stored on this node");
  out.append("floe_keys ").append(keys).append("\n");
  Header(&out, "floe_keys_expiring", Kind::kGauge, "Keys with a TTL");
  out.append("floe_keys_expiring ").append(expires).append("\n");

  if (auto cpu = info.find("cpu"); cpu != info.end()) {
    Header(&out, "floe_cpu_seconds_total", Kind::kCounter, "CPU time used by the node");
    for (const auto& [k, v] : cpu->second) {
      if (k == "used_cpu_sys" && IsNumber(v))
        out.append("floe_cpu_seconds_total{mode=\"system\"} " + v + "\n");
      if (k == "used_cpu_user" && IsNumber(v))
        out.append("floe_cpu_seconds_total{mode=\"user\"} " + v + "\n");
    }
  }

  // Per command family (INFO commandstats: cmdstat_<name>:calls=..,usec=..,failed_calls=..).
  if (auto cs = info.find("commandstats"); cs != info.end() && !cs->second.empty()) {
    std::string calls, seconds, failed;
    for (const auto& [k, v] : cs->second) {
      if (!k.starts_with("cmdstat_")) continue;
      const std::string label = "{command=\"" + LabelValue(k.substr(8)) + "\"} ";
      const std::string_view c = SubField(v, "calls"), u = SubField(v, "usec"),
                             f = SubField(v, "failed_calls");
      if (IsNumber(c)) calls += "floe_command_calls_total" + label + std::string(c) + "\n";
      if (IsNumber(u)) {
        const double s = std::strtod(std::string(u).c_str(), nullptr) / 1e6;
        seconds += "floe_command_seconds_total" + label + std::to_string(s) + "\n";
      }
      if (IsNumber(f)) failed += "floe_command_failed_calls_total" + label + std::string(f) + "\n";
    }
    Header(&out, "floe_command_calls_total", Kind::kCounter, "Calls per command");
    out += calls;
    Header(&out, "floe_command_seconds_total", Kind::kCounter, "Time spent running each command");
    out += seconds;
    Header(&out, "floe_command_failed_calls_total", Kind::kCounter,
           "Calls per command that failed");
    out += failed;
  }
  if (auto es = info.find("errorstats"); es != info.end() && !es->second.empty()) {
    Header(&out, "floe_errors_total", Kind::kCounter, "Error replies by their code word");
    for (const auto& [k, v] : es->second) {
      const std::string_view n = SubField(v, "count");
      if (!k.starts_with("errorstat_") || !IsNumber(n)) continue;
      out +=
          "floe_errors_total{code=\"" + LabelValue(k.substr(10)) + "\"} " + std::string(n) + "\n";
    }
  }
  // Cluster, cache, invalidation and RPC counters (INFO cluster), when they are numbers.
  if (auto cl = info.find("cluster"); cl != info.end()) {
    for (const auto& [k, v] : cl->second) {
      if (!IsNumber(v)) continue;
      const std::string base = k.starts_with("cluster_") ? "floe_" + k : "floe_cluster_" + k;
      if (!IsMetricName(base)) continue;
      const bool gauge = kClusterGauges.contains(k);
      const std::string name = gauge ? base : base + "_total";
      Header(&out, name, gauge ? Kind::kGauge : Kind::kCounter, "INFO cluster " + k);
      out.append(name).append(" ").append(v).append("\n");
    }
  }
  return out;
}

std::string PrometheusLatency(std::span<const server::CommandLatency> latencies) {
  // The histogram's power-of-two boundaries (server/latency.cc): bucket 4k+3 ends at
  // 2^(k+2) ns. Below 256 ns the first boundary takes all; the last bucket holds everything
  // longer than its start, so it is +Inf's alone.
  constexpr size_t kFirst = 4 * 6 + 3;  // ends at 2^8 ns
  auto seconds = [](double s) {
    char buf[48];
    std::snprintf(buf, sizeof(buf), "%.9f", s);
    std::string text = buf;
    while (text.ends_with('0')) text.pop_back();
    if (text.ends_with('.')) text.pop_back();
    return text;
  };
  std::string out;
  if (latencies.empty()) return out;
  out += "# HELP floe_command_latency_seconds Time each call of a command took to run\n";
  out += "# TYPE floe_command_latency_seconds histogram\n";
  for (const server::CommandLatency& c : latencies) {
    const std::string command = "command=\"" + LabelValue(c.name) + "\"";
    uint64_t cumulative = 0;
    size_t b = 0;
    for (size_t end = kFirst; end + 1 < c.buckets.size(); end += 4) {
      for (; b <= end; b++) cumulative += c.buckets[b];
      const double le = static_cast<double>(server::LatencyBucketEndNs(end)) / 1e9;
      out += "floe_command_latency_seconds_bucket{" + command + ",le=\"" + seconds(le) + "\"} " +
             std::to_string(cumulative) + "\n";
    }
    out += "floe_command_latency_seconds_bucket{" + command + ",le=\"+Inf\"} " +
           std::to_string(c.count) + "\n";
    out += "floe_command_latency_seconds_sum{" + command + "} " + seconds(c.sum_seconds) + "\n";
    out += "floe_command_latency_seconds_count{" + command + "} " + std::to_string(c.count) + "\n";
  }
  return out;
}

}  // namespace floe::http
