// `floe import`: imports a CSV file (or a directory of them) into a frame on a running node,
// with a progress bar, through FRAME.IMPORT and JOB.STATUS (docs/frame.md).

#ifndef FLOE_APP_IMPORT_H_
#define FLOE_APP_IMPORT_H_

#include <string>

namespace floe::app {

struct ImportOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string password;  // AUTH first when not empty
  std::string name;      // the frame's key
  std::string path;      // as the node sees it: under its --import-dir
  std::string sep;       // FRAME.IMPORT's options, passed when given
  std::string header;
  std::string types;
  std::string na;
  bool replace = false;
  bool quiet = false;          // no progress, only the result
  int timeout_ms = 10'000;     // for each command's reply
  int poll_interval_ms = 200;  // between JOB.STATUS calls
};

// Returns the process exit code: 0 when the frame was stored, 1 when the import failed or was
// cancelled (Ctrl-C cancels the job), 2 when the node could not be reached or refused it.
int RunImport(const ImportOptions& options);

}  // namespace floe::app

#endif  // FLOE_APP_IMPORT_H_
