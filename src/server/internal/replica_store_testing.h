// Tests of the replica store (replica_store_test, replica_capture_test): a key's state as DUMP
// shows it, to compare a backup's copy with its owner's.

#ifndef FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_
#define FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_

#include <string>

#include "server/command_test.h"
#include "server/internal/command.h"
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

}  // namespace floe::server::internal

#endif  // FLOE_SERVER_INTERNAL_REPLICA_STORE_TESTING_H_
