// Joining (docs/membership.md, rule J1): the leader's decision on a join request, its proofs
// of the cluster's secret, and the request's and answer's codecs.

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "cluster/cluster.h"
#include "cluster/table_testing.h"
#include "wire/wire.h"

namespace floe::cluster {
namespace {

using namespace table_testing;  // NOLINT(build/namespaces): its helpers

// ---- Joining (docs/membership.md, rule J1) ----

// A running three-member cluster's table, as its log's first entry builds it.
Table Running() {
  Table t;
  const Change init = ThreeMemberInit(0);
  EXPECT_TRUE(t.Apply(init).ok());
  return t;
}

JoinRequest Request(std::string_view secret = "s3cret") {
  JoinRequest r;
  r.complete = true;
  r.cluster_name = "floe";
  r.host = "127.0.0.4";
  r.port = 7100;
  r.raft_port = 7101;
  r.client_port = 6379;
  r.token = 0x1234567890abcdefULL;
  SignJoinRequest(&r, secret);
  return r;
}

JoinPolicy Ours() { return JoinPolicy{.cluster_name = "floe", .secret = "s3cret"}; }

std::string Refusal(const Table& t, const JoinRequest& r, const JoinPolicy& p = Ours()) {
  Result<JoinDecision> d = DecideJoin(t, r, p);
  if (d.ok()) return "accepted";
  EXPECT_EQ(d.status().code(), StatusCode::kFailedPrecondition) << d.status().ToString();
  return std::string(d.status().message());
}

TEST(JoinTest, TheLeaderNamesEachMismatch) {
  const Table t = Running();
  Result<JoinDecision> ok = DecideJoin(t, Request(), Ours());
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  ASSERT_TRUE(ok->propose.has_value());
  EXPECT_EQ(ok->joined, 0u);
  EXPECT_EQ(ok->propose->kind, Kind::kAddMember);
  EXPECT_EQ(ok->propose->member.host, "127.0.0.4");
  EXPECT_EQ(ok->propose->member.client_port, 6379);

  JoinRequest r = Request();
  r.cluster_name = "other";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "cluster-name 'other', ours 'floe'");
  r = Request();
  r.slots = 8192;
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "8192 slots, ours 16384");
  r = Request();
  r.protocol_version = 1;
  EXPECT_EQ(Refusal(t, r), "protocol version 1, ours 2");
  r = Request();
  r.cluster_id = ClusterId::Random();
  SignJoinRequest(&r, "s3cret");
  EXPECT_NE(Refusal(t, r).find("cluster id " + r.cluster_id.ToString() + ", ours " +
                               t.cluster_id().ToString()),
            std::string::npos);
  // Its own cluster's id is no mismatch.
  r.cluster_id = t.cluster_id();
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
  // The secret: another one, none at all, and a proof of another request.
  EXPECT_EQ(Refusal(t, Request("wrong")), "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request("")), "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request(), JoinPolicy{.cluster_name = "floe"}),
            "cluster secret differs (--cluster-secret)");
  EXPECT_EQ(Refusal(t, Request(""), JoinPolicy{.cluster_name = "floe"}), "accepted");
  r = Request();
  r.client_port = 6380;  // changed after signing
  EXPECT_EQ(Refusal(t, r), "cluster secret differs (--cluster-secret)");
  // The member that forwards it sets `forwarded`, which the proof does not cover.
  r = Request();
  r.forwarded = true;
  EXPECT_EQ(Refusal(t, r), "accepted");
  // An address a member holds, and ports that overlap a member's on its host.
  r = Request();
  r.host = "127.0.0.2";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "127.0.0.2:7100 is already member 2");
  r.port = 7099;
  r.raft_port = 7100;
  SignJoinRequest(&r, "s3cret");
  EXPECT_NE(Refusal(t, r).find("overlap member 2"), std::string::npos);
  r.port = 7102;
  r.raft_port = 7103;
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
  // A table not initialized yet: try again later, not a refusal.
  Result<JoinDecision> early = DecideJoin(Table(), Request(), Ours());
  EXPECT_EQ(early.status().code(), StatusCode::kUnavailable);
}

TEST(JoinTest, ARetriedJoinIsAnsweredWithTheSameId) {
  Table t = Running();
  const JoinRequest r = Request();
  Result<JoinDecision> first = DecideJoin(t, r, Ours());
  ASSERT_TRUE(first.ok() && first->propose);
  // The proposal committed twice (an outcome the leader could not know, then the retry's): the
  // second is refused by the table and changes nothing.
  ASSERT_TRUE(t.Apply(*first->propose).ok());
  const Table once = t;
  EXPECT_FALSE(t.Apply(*first->propose).ok());
  EXPECT_EQ(t, once);
  ASSERT_EQ(t.members().size(), 4u);
  const net::NodeId id = t.members().back().id;
  EXPECT_EQ(id, 4u);
  // The retry (same token, even through another member or a new leader) is answered as joined.
  JoinRequest retry = r;
  retry.forwarded = true;
  Result<JoinDecision> again = DecideJoin(t, retry, Ours());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->joined, id);
  EXPECT_FALSE(again->propose.has_value());
  // Another run at that address (another token) is not this join.
  JoinRequest other = r;
  other.token++;
  SignJoinRequest(&other, "s3cret");
  EXPECT_EQ(Refusal(t, other), "127.0.0.4:7100 is already member 4");
  // The answer lists every member, the joiner included, and round-trips.
  const JoinAnswer a = MakeJoinAnswer(t, id);
  Result<JoinAnswer> back = DecodeJoinAnswer(EncodeJoinAnswer(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->id, id);
  EXPECT_EQ(back->cluster_id, t.cluster_id());
  ASSERT_EQ(back->members.size(), 4u);
  EXPECT_EQ(back->members[3].host, "127.0.0.4");
  EXPECT_EQ(back->members[3].client_port, 6379);
}

// A request whose directory records a member id (it joined before) is answered only as that
// member's own join: its token's member at its address must be that id. A member removed since,
// or a recorded id its token does not map to, is refused, never given a new id (its start would
// refuse that id against its directory once committed).
TEST(JoinTest, ARecordedMemberIdIsAnsweredOnlyAsItself) {
  Table t = Running();
  JoinRequest r = Request();
  Result<JoinDecision> first = DecideJoin(t, r, Ours());
  ASSERT_TRUE(first.ok() && first->propose);
  ASSERT_TRUE(t.Apply(*first->propose).ok());
  ASSERT_EQ(t.members().back().id, 4u);
  // Its restart, its directory recording member 4: answered as joined.
  r.member = 4;
  SignJoinRequest(&r, "s3cret");
  Result<JoinDecision> again = DecideJoin(t, r, Ours());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->joined, 4u);
  EXPECT_FALSE(again->propose.has_value());
  // A recorded id its token does not map to.
  JoinRequest other = r;
  other.member = 5;
  SignJoinRequest(&other, "s3cret");
  EXPECT_EQ(Refusal(t, other),
            "this node's directory records member 5, which the cluster does not list with its "
            "join token (removed, or its directory copied): remove the directory to join anew");
  // Removed: the same request is refused rather than added under id 5.
  Change remove;
  remove.kind = Change::Kind::kRemoveMember;
  remove.node = 4;
  ASSERT_TRUE(t.Apply(remove).ok());
  EXPECT_EQ(Refusal(t, r),
            "this node's directory records member 4, which the cluster does not list with its "
            "join token (removed, or its directory copied): remove the directory to join anew");
  // A new directory (no recorded id) at that address joins anew.
  r.member = 0;
  SignJoinRequest(&r, "s3cret");
  Result<JoinDecision> anew = DecideJoin(t, r, Ours());
  ASSERT_TRUE(anew.ok() && anew->propose) << anew.status().ToString();
}

// The join token has its own field (rule J1), not the member's life (rule O7): the joined
// member starts with no life, its first start records one whatever the token, a retry is still
// found by the token after that, and the token survives the table's and the change's encoding
// (a member without one is written as before the field existed).
TEST(JoinTest, TheJoinTokenIsNotTheMembersLife) {
  Table t = Running();
  JoinRequest r = Request();
  r.token = ~uint64_t{0} - 5;  // above any incarnation (a start time in microseconds)
  SignJoinRequest(&r, "s3cret");
  Result<JoinDecision> first = DecideJoin(t, r, Ours());
  ASSERT_TRUE(first.ok() && first->propose);
  Result<Change> change = DecodeChange(EncodeChange(*first->propose));
  ASSERT_TRUE(change.ok()) << change.status().ToString();
  EXPECT_EQ(change->member.join_token, r.token);
  ASSERT_TRUE(t.Apply(*change).ok());
  const TableMember joined = t.members().back();
  EXPECT_EQ(joined.join_token, r.token);
  EXPECT_EQ(joined.life, 0u);
  Change started = ForNode(Kind::kRestarted, joined.id);
  started.member.life = 1'700'000'000'000'000;
  ASSERT_TRUE(t.Apply(started).ok()) << "the member's first start";
  EXPECT_EQ(t.members().back().life, started.member.life);
  Result<JoinDecision> again = DecideJoin(t, r, Ours());
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(again->joined, joined.id);
  Result<Table> back = Table::Decode(t.Encode());
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, t);
  // The founders carry no token: their bytes are the format-2 member, flags at most 3.
  const Table founders = Running();
  Result<Table> plain = Table::Decode(founders.Encode());
  ASSERT_TRUE(plain.ok());
  for (const TableMember& m : plain->members()) EXPECT_EQ(m.join_token, 0u);
}

// Rule M6 holds in the table itself, not only in the leader's decision: an AddMember whose
// cluster or Raft port is another member's on the same host is refused by Table::Apply.
TEST(JoinTest, TheTableRefusesAMemberWhosePortsOverlap) {
  Table t = Running();  // 127.0.0.1-3, each on 7100 (Raft 7101)
  auto add = [](uint16_t port, uint16_t raft_port) {
    Change c;
    c.kind = Kind::kAddMember;
    c.member = TableMember{.host = "127.0.0.1", .port = port, .raft_port = raft_port};
    return c;
  };
  const Table before = t;
  EXPECT_FALSE(t.Apply(add(7101, 7102)).ok()) << "its cluster port is member 1's Raft port";
  EXPECT_FALSE(t.Apply(add(7099, 7100)).ok()) << "its Raft port is member 1's cluster port";
  EXPECT_FALSE(t.Apply(add(7102, 7101)).ok()) << "the same Raft port";
  EXPECT_EQ(t, before);
  EXPECT_TRUE(t.Apply(add(7102, 7103)).ok());
  Change other_host = add(7101, 7102);
  other_host.member.host = "127.0.0.9";
  EXPECT_TRUE(t.Apply(other_host).ok());
}

// A cluster without a secret takes no joiner off loopback (its messages could not be
// authenticated), as it takes no founder there; with a secret it may.
TEST(JoinTest, AClusterWithoutASecretRefusesAJoinerOffLoopback) {
  const Table t = Running();
  const JoinPolicy open{.cluster_name = "floe", .secret = ""};
  JoinRequest r = Request("");
  EXPECT_EQ(Refusal(t, r, open), "accepted");
  r.host = "10.0.0.4";
  EXPECT_NE(Refusal(t, r, open).find("10.0.0.4:7100 is not on a loopback"), std::string::npos);
  r = Request("s3cret");
  r.host = "10.0.0.4";
  SignJoinRequest(&r, "s3cret");
  EXPECT_EQ(Refusal(t, r), "accepted");
}

// What a member takes from a stranger (rpc::Options::stranger_check): a joiner's own JOIN,
// proven, sent within 10 minutes of the member's clock; the time is under the proof, so a
// captured request cannot be made fresh again, and replays for minutes at most.
TEST(JoinTest, AStrangersJoinIsProvenAndFresh) {
  const uint64_t now = 1'800'000'000;
  JoinRequest r = Request();
  r.time = now;
  SignJoinRequest(&r, "s3cret");
  const std::string bytes = EncodeJoinRequest(r);
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now));
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now + kJoinFreshSeconds));
  EXPECT_TRUE(StrangersJoinIsProven(bytes, "s3cret", now - kJoinFreshSeconds));
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "s3cret", now + kJoinFreshSeconds + 1)) << "replayed";
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "s3cret", now - kJoinFreshSeconds - 1));
  EXPECT_FALSE(StrangersJoinIsProven(bytes, "another", now));
  JoinRequest refreshed = r;
  refreshed.time = now + 3600;  // the captured request with a new time, its proof kept
  EXPECT_FALSE(StrangersJoinIsProven(EncodeJoinRequest(refreshed), "s3cret", now + 3600));
  JoinRequest forwarded = r;
  forwarded.forwarded = true;
  EXPECT_FALSE(StrangersJoinIsProven(EncodeJoinRequest(forwarded), "s3cret", now));
  EXPECT_FALSE(StrangersJoinIsProven("not a join", "s3cret", now));
}

// A refusal carries the leader's MAC of its reason under the secret, bound to the request, so
// the joiner exits only on the leader's refusals (rule J1); without a secret it is the reason.
TEST(JoinTest, ARefusalProvesTheSecretForItsRequest) {
  const JoinRequest r = Request("s3cret");
  const std::string signed_refusal = SignJoinRefusal("cluster-name 'a', ours 'b'", r, "s3cret");
  EXPECT_NE(signed_refusal, "cluster-name 'a', ours 'b'");
  std::optional<std::string> reason = OpenJoinRefusal(signed_refusal, r, "s3cret");
  ASSERT_TRUE(reason.has_value());
  EXPECT_EQ(*reason, "cluster-name 'a', ours 'b'");
  EXPECT_FALSE(OpenJoinRefusal(signed_refusal, r, "another"));
  JoinRequest other = r;
  other.token++;
  EXPECT_FALSE(OpenJoinRefusal(signed_refusal, other, "s3cret")) << "another request";
  std::string altered = signed_refusal;
  altered[0] = 'C';
  EXPECT_FALSE(OpenJoinRefusal(altered, r, "s3cret")) << "another reason";
  EXPECT_FALSE(OpenJoinRefusal("cluster-name 'a', ours 'b'", r, "s3cret")) << "unsigned";
  EXPECT_FALSE(OpenJoinRefusal("", r, "s3cret"));
  EXPECT_EQ(SignJoinRefusal("why", r, ""), "why");
  EXPECT_EQ(OpenJoinRefusal("why", r, ""), "why");
}

// The proof, the answer's MAC and a refusal's MAC each begin with their own domain, none a
// prefix of another (docs/wire.md, "Joining"): no MAC of one kind is one of another, whatever
// the bytes after the domain are (not only because a version varint differs from a letter).
TEST(JoinTest, TheMacDomainsAreDistinctAndNoneIsAPrefixOfAnother) {
  const std::vector<std::string_view> domains = {kJoinProofDomain, kJoinAnswerDomain,
                                                 kJoinRefusalDomain};
  for (size_t i = 0; i < domains.size(); i++) {
    EXPECT_FALSE(domains[i].empty());
    for (size_t j = 0; j < domains.size(); j++) {
      if (i != j) {
        EXPECT_FALSE(domains[j].starts_with(domains[i]))
            << "'" << domains[i] << "' begins '" << domains[j] << "'";
      }
    }
  }
}

TEST(JoinTest, TheJoinersIdIsNeverAssigned) {
  // A table whose next id is the last below the reserved ones (kAnyNodeId, kJoinerId) (ids grow
  // with every join): its snapshot with `next id` rewritten (docs/wire.md: format | epoch | next id
  // | ...).
  const std::string bytes = Running().Encode();
  wire::Reader r(bytes);
  uint64_t format = 0, epoch = 0, next = 0;
  ASSERT_TRUE(r.GetVarint64(&format).ok() && r.GetVarint64(&epoch).ok() &&
              r.GetVarint64(&next).ok());
  std::string_view rest;
  ASSERT_TRUE(r.GetRaw(r.remaining(), &rest).ok());
  std::string patched;
  wire::Writer w(&patched);
  w.PutVarint64(format);
  w.PutVarint64(epoch);
  w.PutVarint64(kFirstReservedId - 1);
  patched.append(rest);
  Result<Table> t = Table::Decode(patched);
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  ASSERT_TRUE(t->Apply(AddMember(Joiner(1))).ok());
  EXPECT_EQ(t->members().back().id, kFirstReservedId - 1);
  Status st = t->Apply(AddMember(Joiner(2)));
  EXPECT_NE(st.message().find("no member id is left"), std::string::npos) << st.ToString();
  EXPECT_EQ(Refusal(*t, Request()), "no member id is left to assign");
}

TEST(JoinTest, RequestAndAnswerRoundTripAndRefuseDamage) {
  JoinRequest r = Request();
  r.cluster_id = ClusterId::Random();
  r.forwarded = true;
  r.member = 7;
  Result<JoinRequest> back = DecodeJoinRequest(EncodeJoinRequest(r));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(back->complete);
  EXPECT_EQ(back->cluster_id, r.cluster_id);
  EXPECT_EQ(back->member, 7u);
  EXPECT_EQ(back->token, r.token);
  EXPECT_TRUE(back->forwarded);
  EXPECT_EQ(back->proof_hi, r.proof_hi);
  EXPECT_EQ(back->proof_lo, r.proof_lo);
  EXPECT_EQ(EncodeJoinRequest(*back), EncodeJoinRequest(r));
  // Another version: only the version is read, so the leader can name it.
  JoinRequest v3 = r;
  v3.protocol_version = 3;
  Result<JoinRequest> other = DecodeJoinRequest(EncodeJoinRequest(v3));
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other->complete);
  EXPECT_EQ(other->protocol_version, 3u);
  // Damage: every truncation, a trailing byte, and fields out of range.
  const std::string bytes = EncodeJoinRequest(r);
  for (size_t n = 0; n < bytes.size(); n++) {
    EXPECT_FALSE(DecodeJoinRequest(bytes.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeJoinRequest(bytes + "x").ok());
  auto refused = [](JoinRequest bad) { return !DecodeJoinRequest(EncodeJoinRequest(bad)).ok(); };
  JoinRequest bad = r;
  bad.token = 0;
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.raft_port = 7105;
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.host = "127.000.0.4";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.host = "localhost";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.cluster_name = "bad name";
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.port = 0;
  bad.raft_port = 1;
  EXPECT_TRUE(refused(bad));
  bad = r;
  bad.member = kFirstReservedId;
  EXPECT_TRUE(refused(bad));
  EXPECT_FALSE(DecodeJoinRequest(std::string(200 * 1024, '\x01')).ok());

  // The answer: ids in order, the joiner among them, a cluster id.
  const Table t = Running();
  const std::string answer = EncodeJoinAnswer(MakeJoinAnswer(t, 2));
  ASSERT_TRUE(DecodeJoinAnswer(answer).ok());
  for (size_t n = 0; n < answer.size(); n++) {
    EXPECT_FALSE(DecodeJoinAnswer(answer.substr(0, n)).ok()) << n;
  }
  EXPECT_FALSE(DecodeJoinAnswer(answer + "x").ok());
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(MakeJoinAnswer(t, 9))).ok()) << "not listed";
  JoinAnswer a = MakeJoinAnswer(t, 2);
  std::swap(a.members[0], a.members[1]);
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "out of order";
  a = MakeJoinAnswer(t, 2);
  a.members[1].host = a.members[0].host;
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "an address twice";
  a = MakeJoinAnswer(t, 2);
  a.cluster_id = ClusterId{};
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "no cluster id";
  a = MakeJoinAnswer(t, 2);
  a.id = kFirstReservedId;
  a.members[1].id = kFirstReservedId;
  EXPECT_FALSE(DecodeJoinAnswer(EncodeJoinAnswer(a)).ok()) << "a reserved id";
}

// The leader's answer carries a MAC under the secret, bound to the request's token and proof
// (rule J1): it survives the wire, and any other id, member, cluster id, request or secret
// fails it, so only the cluster's secret makes an answer a joiner takes.
TEST(JoinTest, TheAnswerProvesTheSecretForItsRequest) {
  const Table t = Running();
  const JoinRequest r = Request("s3cret");
  JoinAnswer a = MakeJoinAnswer(t, 2);
  EXPECT_FALSE(JoinAnswerMatches(a, r, "s3cret")) << "unsigned";
  SignJoinAnswer(&a, r, "s3cret");
  Result<JoinAnswer> back = DecodeJoinAnswer(EncodeJoinAnswer(a));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_TRUE(JoinAnswerMatches(*back, r, "s3cret"));
  EXPECT_FALSE(JoinAnswerMatches(*back, r, "another"));
  JoinRequest other = r;
  other.token++;
  EXPECT_FALSE(JoinAnswerMatches(*back, other, "s3cret")) << "another token";
  other = r;
  other.proof_lo ^= 1;
  EXPECT_FALSE(JoinAnswerMatches(*back, other, "s3cret")) << "another proof";
  JoinAnswer changed = *back;
  changed.id = 1;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another id";
  changed = *back;
  changed.members[0].port++;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another member";
  changed = *back;
  changed.cluster_id = ClusterId::Random();
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret")) << "another cluster";
  changed = *back;
  changed.mac_hi ^= 1;
  EXPECT_FALSE(JoinAnswerMatches(changed, r, "s3cret"));
  // Without a secret there is nothing to prove: the MAC is 0.
  JoinAnswer open = MakeJoinAnswer(t, 2);
  SignJoinAnswer(&open, r, "");
  EXPECT_EQ(open.mac_hi | open.mac_lo, 0u);
  EXPECT_TRUE(JoinAnswerMatches(open, r, ""));
}

}  // namespace
}  // namespace floe::cluster
