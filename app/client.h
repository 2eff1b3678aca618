// A blocking RESP client for the `floe` tools that talk to a running node (`floe import`).
// One connection, one command at a time; every wait is bounded by the timeout.

#ifndef FLOE_APP_CLIENT_H_
#define FLOE_APP_CLIENT_H_

#include <string>
#include <string_view>
#include <vector>

#include "base/base.h"
#include "resp/resp.h"

namespace floe::app {

class Client {
 public:
  Client() = default;
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Connects to host:port (a name or an IPv4/IPv6 address) within timeout_ms.
  Status Connect(const std::string& host, int port, int timeout_ms);
  // Sends one command and returns its reply (an error reply is a Reply, not a Status; a
  // Status is a broken connection, a timeout or a reply that does not decode).
  Result<resp::Reply> Call(const std::vector<std::string>& args);

 private:
  Status WaitFor(short events);

  int fd_ = -1;
  int timeout_ms_ = 0;
  std::string in_;  // bytes received and not decoded yet
};

// Field `name` of a map reply (RESP3) or of a flat key/value array (RESP2), or nullptr.
const resp::Reply* Field(const resp::Reply& map, std::string_view name);

}  // namespace floe::app

#endif  // FLOE_APP_CLIENT_H_
