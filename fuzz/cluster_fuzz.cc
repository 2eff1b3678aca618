// libFuzzer target for the cluster's HELLO decoder and the agreed table's decoders (docs/wire.md,
// "Cluster HELLO"): any input either fails with a Status or decodes to a HELLO that encodes back to
// the same bytes' meaning (decoding the re-encoding gives the same fields), and explaining how it
// differs from our own view, forming or formed with an id and founder tokens (rule M5 (7)),
// never crashes, either way round.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/base.h"
#include "cluster/cluster.h"
#include "cluster/internal/hello.h"

namespace {

using floe::cluster::internal::Hello;

const Hello& Ours() {
  static const Hello ours = [] {
    floe::cluster::Options o;
    o.members = floe::cluster::ParseMembers("127.0.0.1:7100,127.0.0.2:7100,[::1]:7100").value();
    o.self = 2;
    return floe::cluster::internal::MakeHello(o, floe::cluster::SlotMap::Balanced(o.members),
                                              false);
  }();
  return ours;
}

// A member that formed and holds the cluster's id, with the start tokens of the processes it
// counted: the view a late founder's HELLO is compared with (rule M5 (7)).
const Hello& OursFormed() {
  static const Hello ours = [] {
    Hello h = Ours();
    h.formed = true;
    h.cluster_id_hi = 1;
    h.cluster_id_lo = 2;
    h.holds_log = true;
    h.start_token = 0x1111222233334444;
    h.founder_tokens = {0x5555, h.start_token, 0x5557};
    return h;
  }();
  return ours;
}

}  // namespace

// The agreed table's decoders (docs/membership.md): a change or a table read from a log entry or
// a snapshot either fails with a Status or encodes back to the same bytes, and a table that
// decodes keeps its invariants.
static void CheckTableDecoders(std::string_view in) {
  floe::Result<floe::cluster::Change> c = floe::cluster::DecodeChange(in);
  if (c.ok()) {
    floe::Result<floe::cluster::Change> back =
        floe::cluster::DecodeChange(floe::cluster::EncodeChange(*c));
    FLOE_CHECK(back.ok() && *back == *c);
  }
  floe::Result<floe::cluster::Table> t = floe::cluster::Table::Decode(in);
  if (t.ok()) {
    FLOE_CHECK(t->Check().ok());
    floe::Result<floe::cluster::Table> back = floe::cluster::Table::Decode(t->Encode());
    FLOE_CHECK(back.ok() && *back == *t);
  }
}

// The JOIN request and answer (docs/wire.md, "Joining"): either a Status or bytes that encode
// back the same; the leader's decision on any request that decodes never crashes.
static void CheckJoinDecoders(std::string_view in) {
  floe::Result<floe::cluster::JoinRequest> r = floe::cluster::DecodeJoinRequest(in);
  if (r.ok() && r->complete) {
    const std::string bytes = floe::cluster::EncodeJoinRequest(*r);
    floe::Result<floe::cluster::JoinRequest> back = floe::cluster::DecodeJoinRequest(bytes);
    FLOE_CHECK(back.ok() && floe::cluster::EncodeJoinRequest(*back) == bytes);
    static const floe::cluster::Table table = [] {
      floe::cluster::Change init;
      init.kind = floe::cluster::Change::Kind::kInitialize;
      init.cluster_id = {1, 2};
      init.members = {floe::cluster::TableMember{
          .id = 1, .host = "127.0.0.1", .port = 7100, .raft_port = 7101}};
      floe::cluster::Table t;
      FLOE_CHECK(t.Apply(init).ok());
      // A member added by a join, so a request naming its address, token or id reaches the
      // branches that answer a retry or refuse another's.
      floe::cluster::Change joined;
      joined.kind = floe::cluster::Change::Kind::kAddMember;
      joined.member = floe::cluster::TableMember{
          .host = "127.0.0.2", .port = 7100, .raft_port = 7101, .join_token = 77};
      FLOE_CHECK(t.Apply(joined).ok());
      return t;
    }();
    const floe::cluster::JoinPolicy policy{.cluster_name = "floe", .secret = "s"};
    (void)floe::cluster::DecideJoin(table, *r, policy);
    // Signed with the secret, so the checks past the proof run too.
    floe::cluster::JoinRequest signed_request = *r;
    floe::cluster::SignJoinRequest(&signed_request, policy.secret);
    (void)floe::cluster::DecideJoin(table, signed_request, policy);
  }
  floe::Result<floe::cluster::JoinAnswer> a = floe::cluster::DecodeJoinAnswer(in);
  if (a.ok()) {
    const std::string bytes = floe::cluster::EncodeJoinAnswer(*a);
    floe::Result<floe::cluster::JoinAnswer> back = floe::cluster::DecodeJoinAnswer(bytes);
    FLOE_CHECK(back.ok() && back->id == a->id && back->members == a->members &&
               floe::cluster::EncodeJoinAnswer(*back) == bytes);
    // The answer's MAC: what the secret signs for a request verifies, and only for it.
    floe::cluster::JoinRequest asked;
    asked.token = 7;
    floe::cluster::JoinAnswer signed_answer = *a;
    floe::cluster::SignJoinAnswer(&signed_answer, asked, "s");
    FLOE_CHECK(floe::cluster::JoinAnswerMatches(signed_answer, asked, "s"));
    asked.token = 8;
    FLOE_CHECK(!floe::cluster::JoinAnswerMatches(signed_answer, asked, "s"));
  }
  // A refusal opens only under its MAC: any input as a refusal, and signed.
  {
    floe::cluster::JoinRequest asked;
    asked.token = 7;
    (void)floe::cluster::OpenJoinRefusal(in, asked, "s");
    const std::string refusal = floe::cluster::SignJoinRefusal(in, asked, "s");
    const std::optional<std::string> reason = floe::cluster::OpenJoinRefusal(refusal, asked, "s");
    FLOE_CHECK(reason.has_value() && *reason == in);
  }
  // What a member's endpoint asks of a stranger's bytes (rpc::Options::stranger_check).
  if (r.ok() && floe::cluster::StrangersJoinIsProven(in, "s", r->time)) {
    FLOE_CHECK(r->complete && !r->forwarded);
    FLOE_CHECK(!floe::cluster::StrangersJoinIsProven(
        in, "s", r->time + floe::cluster::kJoinFreshSeconds + 1));
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  CheckTableDecoders(in);
  CheckJoinDecoders(in);
  floe::Result<Hello> h = floe::cluster::internal::DecodeHello(in);
  if (!h.ok()) return 0;
  const Hello& ours = Ours();
  const floe::cluster::Member expected{.id = 1, .host = "127.0.0.1", .port = 7100};
  (void)floe::cluster::internal::Disagreement(ours, *h, expected);
  const floe::cluster::Member self{.id = 2, .host = "127.0.0.2", .port = 7100};
  for (const Hello* view : {&ours, &OursFormed()}) {
    (void)floe::cluster::internal::Disagreement(*view, *h, expected);
    (void)floe::cluster::internal::Disagreement(*h, *view, self);
    (void)floe::cluster::internal::CountedAsFounder(*view, *h);
    (void)floe::cluster::internal::CountedAsFounder(*h, *view);
  }
  if (!h->complete) return 0;
  floe::Result<Hello> back =
      floe::cluster::internal::DecodeHello(floe::cluster::internal::EncodeHello(*h));
  FLOE_CHECK(back.ok() && back->complete);
  FLOE_CHECK(back->cluster_name == h->cluster_name && back->members == h->members &&
             back->self == h->self && back->self_id == h->self_id &&
             back->fingerprint == h->fingerprint && back->slots == h->slots &&
             back->map_version == h->map_version && back->formed == h->formed &&
             back->cluster_id_hi == h->cluster_id_hi && back->cluster_id_lo == h->cluster_id_lo &&
             back->holds_log == h->holds_log && back->start_token == h->start_token &&
             back->founder_tokens == h->founder_tokens);
  return 0;
}
