// Tests of replication (replica_store_test, replica_capture_test, replica_stream_test,
// held_reply_test): a key's state as DUMP shows it, to compare a backup's copy with its owner's;
// a field of INFO; the backups a new cluster's slots get while a test runs.

#ifndef FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_
#define FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_

#include <string>

#include "server/command_test.h"
#include "server/internal/command.h"
#include "server/internal/replica_store.h"
#include "store/store.h"

namespace floe::server::internal {

// "type@expire_at_ms:body" of the live value at `key`, "(absent)" if there is none.
inline std::string DumpState(store::Store& s, const std::string& key) {
  store::ValuePtr v = s.Get(key);
  if (Live(v.get(), NowMs()) == nullptr) return "(absent)";
  Result<std::string> body = DumpBody(*v);
  return std::to_string(v->type()) + "@" + std::to_string(v->expire_at_ms()) + ":" +
         (body.ok() ? *body : body.status().ToString());
}

// The value of `field` in INFO everything, "(none)" if it is not there.
inline std::string InfoField(Session& s, const std::string& field) {
  const std::string all = CommandTest::Decode(s.Run({"INFO", "everything"})).str;
  const size_t at = all.find("\r\n" + field + ":");
  if (at == std::string::npos) return "(none)";
  const size_t from = at + 2 + field.size() + 1;
  return all.substr(from, all.find("\r\n", from) - from);
}

// A new cluster's first table gives every slot this many backups while it lives.
struct ReplicasAtFounding {
  explicit ReplicasAtFounding(uint32_t n) { TEST_ReplicasAtFounding().store(n); }
  ~ReplicasAtFounding() { TEST_ReplicasAtFounding().store(0); }
  ReplicasAtFounding(const ReplicasAtFounding&) = delete;
  ReplicasAtFounding& operator=(const ReplicasAtFounding&) = delete;
};

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_
