#include "import.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "client.h"

namespace floe::app {

namespace {

volatile std::sig_atomic_t interrupted = 0;

void OnInterrupt(int) { interrupted = 1; }

std::string Megabytes(int64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return buf;
}

int64_t IntegerField(const resp::Reply& status, std::string_view name) {
  const resp::Reply* f = Field(status, name);
  return f != nullptr && f->type == resp::Reply::Type::kInteger ? f->integer : 0;
}

std::string TextField(const resp::Reply& status, std::string_view name) {
  const resp::Reply* f = Field(status, name);
  return f != nullptr ? f->str : std::string();
}

double PercentField(const resp::Reply& status) {
  const resp::Reply* f = Field(status, "percent");
  if (f == nullptr) return 0;
  if (f->type == resp::Reply::Type::kDouble) return f->dbl;
  return std::strtod(f->str.c_str(), nullptr);  // RESP2 sends doubles as bulk strings
}

// One line that redraws itself on a terminal, or a line per tenth of the work elsewhere.
class Progress {
 public:
  explicit Progress(bool quiet) : quiet_(quiet), tty_(::isatty(STDERR_FILENO) != 0) {}

  void Show(const resp::Reply& status) {
    if (quiet_) return;
    const double percent = PercentField(status);
    const int64_t done = IntegerField(status, "bytes_done");
    const int64_t total = IntegerField(status, "bytes_total");
    const int64_t rows = IntegerField(status, "rows");
    const double seconds = static_cast<double>(IntegerField(status, "elapsed_ms")) / 1e3;
    const double rate = seconds > 0 ? static_cast<double>(done) / seconds : 0;
    char eta[32] = "";
    if (rate > 0 && total > done) {
      std::snprintf(eta, sizeof(eta), "  ETA %.0f s", static_cast<double>(total - done) / rate);
    }
    if (tty_) {
      constexpr int kWidth = 30;
      const int filled = static_cast<int>(percent / 100.0 * kWidth);
      std::string bar(static_cast<size_t>(std::clamp(filled, 0, kWidth)), '#');
      bar.resize(kWidth, '-');
      std::fprintf(stderr, "\r  [%s] %5.1f%%  %s of %s  %lld rows  %.1f MB/s%s\x1b[K", bar.c_str(),
                   percent, Megabytes(done).c_str(), Megabytes(total).c_str(),
                   static_cast<long long>(rows), rate / 1e6, eta);
      drawn_ = true;
    } else if (static_cast<int>(percent) / 10 > last_tenth_) {
      last_tenth_ = static_cast<int>(percent) / 10;
      std::fprintf(stderr, "  %3.0f%%  %s of %s  %lld rows\n", percent, Megabytes(done).c_str(),
                   Megabytes(total).c_str(), static_cast<long long>(rows));
    }
  }

  void End() {
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  bool quiet_;
  bool tty_;
  bool drawn_ = false;
  int last_tenth_ = -1;
};

int Fail(const std::string& what) {
  std::fprintf(stderr, "floe import: %s\n", what.c_str());
  return 2;
}

}  // namespace

int RunImport(const ImportOptions& o) {
  Client client;
  if (Status s = client.Connect(o.host, o.port, o.timeout_ms); !s.ok()) {
    return Fail(std::string(s.message()));
  }
  auto call = [&](const std::vector<std::string>& args, resp::Reply* reply) -> bool {
    Result<resp::Reply> r = client.Call(args);
    if (!r.ok()) {
      Fail(args[0] + ": " + std::string(r.status().message()));
      return false;
    }
    *reply = std::move(*r);
    if (reply->type == resp::Reply::Type::kError) {
      Fail(reply->str);
      return false;
    }
    return true;
  };
  resp::Reply reply;
  if (!o.password.empty() && !call({"AUTH", o.password}, &reply)) return 2;
  std::vector<std::string> args = {"FRAME.IMPORT", o.name, o.path};
  if (!o.sep.empty()) args.insert(args.end(), {"SEP", o.sep});
  if (!o.header.empty()) args.insert(args.end(), {"HEADER", o.header});
  if (!o.types.empty()) args.insert(args.end(), {"TYPES", o.types});
  if (!o.na.empty()) args.insert(args.end(), {"NA", o.na});
  if (o.replace) args.push_back("REPLACE");
  if (!call(args, &reply)) return 2;
  if (reply.type != resp::Reply::Type::kInteger) return Fail("FRAME.IMPORT: not a job id");
  const std::string id = std::to_string(reply.integer);

  // Ctrl-C cancels the job, then waits for it to say so.
  struct sigaction action {};
  action.sa_handler = OnInterrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  bool cancel_sent = false;
  Progress progress(o.quiet);
  std::string state;
  for (;;) {
    if (interrupted && !cancel_sent) {
      cancel_sent = true;
      progress.End();
      std::fprintf(stderr, "floe import: cancelling job %s\n", id.c_str());
      if (!call({"JOB.CANCEL", id}, &reply)) return 2;
    }
    if (!call({"JOB.STATUS", id}, &reply)) return 2;
    state = TextField(reply, "state");
    if (state != "running") break;
    progress.Show(reply);
    std::this_thread::sleep_for(std::chrono::milliseconds(o.poll_interval_ms));
  }
  if (state == "done") progress.Show(reply);
  progress.End();
  const double seconds = static_cast<double>(IntegerField(reply, "elapsed_ms")) / 1e3;
  if (state == "done") {
    std::printf("%s: %s in %.1f s\n", o.name.c_str(), TextField(reply, "result").c_str(), seconds);
    return 0;
  }
  std::fprintf(stderr, "floe import: job %s %s after %.1f s%s%s\n", id.c_str(), state.c_str(),
               seconds, TextField(reply, "error").empty() ? "" : ": ",
               TextField(reply, "error").c_str());
  return 1;
}

}  // namespace floe::app
