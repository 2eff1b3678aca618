// Connection commands: PING, ECHO, HELLO, AUTH, QUIT, RESET, SELECT, CLIENT.

#include <cstdint>
#include <cstdio>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

bool ValidClientName(std::string_view name) {
  for (char c : name) {
    if (c < '!' || c > '~') return false;
  }
  return true;
}

void SetName(CommandContext& ctx, std::string_view name) {
  MutexLock lock(&ctx.session.state().mu);
  ctx.session.state().name.assign(name);
}

// One CLIENT LIST line, however long the name or the addresses are.
std::string ClientLine(const ClientState& c, int64_t now_ms) {
  std::string name;
  {
    MutexLock lock(&const_cast<ClientState&>(c).mu);
    name = c.name;
  }
  const int multi = c.multi.load(std::memory_order_relaxed);
  char numbers[512];
  std::snprintf(numbers, sizeof(numbers),
                " age=%lld idle=%lld flags=%s db=0 sub=0 psub=0 ssub=0 "
                "multi=%d qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 "
                "omem=%zu tot-mem=0 events=r cmd=",
                static_cast<long long>((now_ms - c.created_ms) / 1000),
                static_cast<long long>(
                    (now_ms - c.last_interaction_ms.load(std::memory_order_relaxed)) / 1000),
                multi >= 0 ? "x" : "N", multi, c.output_pending.load(std::memory_order_relaxed));
  std::string line = "id=" + std::to_string(c.id) + " addr=" + c.addr + " laddr=" + c.laddr +
                     " fd=" + std::to_string(c.fd.load(std::memory_order_relaxed)) +
                     " name=" + name + numbers;
  line += c.last_command.load(std::memory_order_relaxed);
  line +=
      " user=default redir=-1 resp=" + std::to_string(c.protocol.load(std::memory_order_relaxed)) +
      "\n";
  return line;
}

void Kill(ClientState& c) {
  c.kill_requested.store(true, std::memory_order_relaxed);
  std::function<void()> closer;
  {
    MutexLock lock(&c.mu);
    closer = c.closer;
  }
  if (closer) closer();
}

}  // namespace

void CmdPing(CommandContext& ctx) {
  if (ctx.args.size() > 2) {
    return ctx.Error("ERR wrong number of arguments for 'ping' command");
  }
  if (ctx.args.size() == 2) return ctx.out.Bulk(ctx.args[1]);
  ctx.out.SimpleString("PONG");
}

void CmdEcho(CommandContext& ctx) { ctx.out.Bulk(ctx.args[1]); }

void CmdHello(CommandContext& ctx) {
  int64_t version = ctx.protocol();
  size_t j = 1;
  if (ctx.args.size() >= 2) {
    if (!ParseInt64(ctx.args[1], &version)) {
      return ctx.Error("ERR Protocol version is not an integer or out of range");
    }
    if (version < 2 || version > 3) return ctx.Error("NOPROTO unsupported protocol version");
    j = 2;
  }
  std::string_view user, pass, name;
  bool auth = false, setname = false;
  for (; j < ctx.args.size(); j++) {
    const size_t more = ctx.args.size() - j - 1;
    if (EqualsIgnoreCase(ctx.args[j], "AUTH") && more >= 2) {
      auth = true;
      user = ctx.args[j + 1];
      pass = ctx.args[j + 2];
      j += 2;
    } else if (EqualsIgnoreCase(ctx.args[j], "SETNAME") && more >= 1) {
      setname = true;
      name = ctx.args[j + 1];
      j += 1;
    } else {
      return ctx.Error("ERR Syntax error in HELLO option '" +
                       std::string(ctx.args[j].substr(0, 128)) + "'");
    }
  }
  if (auth) {
    if (user != "default" || !ctx.engine.CheckPassword(pass)) {
      return ctx.Error("WRONGPASS invalid username-password pair or user is disabled.");
    }
    ctx.authenticated() = true;
  }
  if (!ctx.authenticated()) {
    return ctx.Error(
        "NOAUTH HELLO must be called with the client already authenticated, otherwise the "
        "HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and "
        "select the RESP protocol version at the same time");
  }
  if (setname) {
    if (!ValidClientName(name)) {
      return ctx.Error("ERR Client names cannot contain spaces, newlines or special characters.");
    }
    SetName(ctx, name);
  }
  ctx.protocol() = static_cast<int>(version);
  ctx.session.state().protocol.store(static_cast<int>(version), std::memory_order_relaxed);
  ctx.out.set_protocol(static_cast<int>(version));
  ctx.out.MapHeader(7);
  ctx.out.Bulk("server");
  ctx.out.Bulk("floe");
  ctx.out.Bulk("version");
  ctx.out.Bulk(kRedisVersion);
  ctx.out.Bulk("proto");
  ctx.out.Integer(version);
  ctx.out.Bulk("id");
  ctx.out.Integer(static_cast<int64_t>(ctx.session.id()));
  ctx.out.Bulk("mode");
  ctx.out.Bulk(ctx.engine.cluster() != nullptr ? "cluster" : "standalone");
  ctx.out.Bulk("role");
  ctx.out.Bulk("master");
  ctx.out.Bulk("modules");
  ctx.out.ArrayHeader(0);
}

void CmdAuth(CommandContext& ctx) {
  if (ctx.args.size() > 3) return ctx.SyntaxError();
  if (ctx.args.size() == 2 && !ctx.engine.requires_auth()) {
    return ctx.Error(
        "ERR AUTH <password> called without any password configured for the default user. "
        "Are you sure your configuration is correct?");
  }
  const std::string_view user = ctx.args.size() == 3 ? ctx.args[1] : "default";
  const std::string_view pass = ctx.args.back();
  if (user != "default" || !ctx.engine.CheckPassword(pass)) {
    return ctx.Error("WRONGPASS invalid username-password pair or user is disabled.");
  }
  ctx.authenticated() = true;
  ctx.out.Ok();
}

void CmdQuit(CommandContext& ctx) {
  ctx.close() = true;
  ctx.out.Ok();
}

void CmdReset(CommandContext& ctx) {
  ctx.ResetSession();
  ctx.out.set_protocol(2);
  ctx.out.SimpleString("RESET");
}

void CmdSelect(CommandContext& ctx) {
  int64_t db = 0;
  if (!ParseInt64(ctx.args[1], &db)) return ctx.NotInteger();
  // Redis reads the index as an int before it checks the range of databases.
  if (db < INT32_MIN || db > INT32_MAX) {
    return ctx.Error("ERR value is out of range, value must between -2147483648 and 2147483647");
  }
  if (db != 0) return ctx.Error("ERR DB index is out of range");
  ctx.out.Ok();
}

void CmdClientId(CommandContext& ctx) { ctx.out.Integer(static_cast<int64_t>(ctx.session.id())); }

void CmdClientGetName(CommandContext& ctx) {
  std::string name;
  {
    MutexLock lock(&ctx.session.state().mu);
    name = ctx.session.state().name;
  }
  if (name.empty()) return ctx.out.Null();
  ctx.out.Bulk(name);
}

void CmdClientSetName(CommandContext& ctx) {
  if (!ValidClientName(ctx.args[2])) {
    return ctx.Error("ERR Client names cannot contain spaces, newlines or special characters.");
  }
  SetName(ctx, ctx.args[2]);
  ctx.out.Ok();
}

void CmdClientList(CommandContext& ctx) {
  std::vector<uint64_t> ids;
  bool only_ids = false;
  bool none = false;
  for (size_t j = 2; j < ctx.args.size(); j++) {
    if (EqualsIgnoreCase(ctx.args[j], "TYPE") && j + 1 < ctx.args.size()) {
      const std::string_view type = ctx.args[++j];
      if (EqualsIgnoreCase(type, "normal")) continue;
      if (EqualsIgnoreCase(type, "master") || EqualsIgnoreCase(type, "replica") ||
          EqualsIgnoreCase(type, "slave") || EqualsIgnoreCase(type, "pubsub")) {
        none = true;
        continue;
      }
      return ctx.Error("ERR Unknown client type '" + std::string(type) + "'");
    } else if (EqualsIgnoreCase(ctx.args[j], "ID") && j + 1 < ctx.args.size()) {
      only_ids = true;
      for (j++; j < ctx.args.size(); j++) {
        int64_t id = 0;
        if (!ParseInt64(ctx.args[j], &id)) return ctx.Error("ERR Invalid client ID");
        // Ids start at 1: 0 or a negative id is valid and matches no client, as in Redis.
        if (id > 0) ids.push_back(static_cast<uint64_t>(id));
      }
    } else {
      return ctx.SyntaxError();
    }
  }
  std::string text;
  if (!none) {
    for (const auto& c : ctx.engine.Clients()) {
      if (only_ids && std::find(ids.begin(), ids.end(), c->id) == ids.end()) continue;
      text += ClientLine(*c, ctx.now_ms);
    }
  }
  ctx.out.Verbatim("txt", text);
}

void CmdClientInfo(CommandContext& ctx) {
  ctx.out.Verbatim("txt", ClientLine(ctx.session.state(), ctx.now_ms));
}

void CmdClientKill(CommandContext& ctx) {
  auto clients = ctx.engine.Clients();
  if (ctx.args.size() == 3) {  // old form: CLIENT KILL addr:port
    for (const auto& c : clients) {
      if (c->addr == ctx.args[2]) {
        // Our own connection closes after this reply is written, as QUIT does; closing it
        // from here would drop the +OK.
        if (c->id == ctx.session.id()) {
          ctx.close() = true;
        } else {
          Kill(*c);
        }
        return ctx.out.Ok();
      }
    }
    return ctx.Error("ERR No such client");
  }
  int64_t id = 0;
  std::string_view addr, laddr;
  bool has_id = false, skipme = true, none = false;
  for (size_t j = 2; j < ctx.args.size(); j += 2) {
    if (j + 1 >= ctx.args.size()) return ctx.SyntaxError();
    const std::string_view opt = ctx.args[j], val = ctx.args[j + 1];
    if (EqualsIgnoreCase(opt, "ID")) {
      if (!ParseInt64(val, &id) || id <= 0)
        return ctx.Error("ERR client-id should be greater than 0");
      has_id = true;
    } else if (EqualsIgnoreCase(opt, "ADDR")) {
      addr = val;
    } else if (EqualsIgnoreCase(opt, "LADDR")) {
      laddr = val;
    } else if (EqualsIgnoreCase(opt, "USER")) {
      // Floe has one user, "default", which every client is.
      if (val != "default") return ctx.Error("ERR No such user '" + std::string(val) + "'");
    } else if (EqualsIgnoreCase(opt, "TYPE")) {
      // Every client is a normal one; no client is a master, replica or pubsub client.
      if (EqualsIgnoreCase(val, "master") || EqualsIgnoreCase(val, "replica") ||
          EqualsIgnoreCase(val, "slave") || EqualsIgnoreCase(val, "pubsub")) {
        none = true;
      } else if (!EqualsIgnoreCase(val, "normal")) {
        return ctx.Error("ERR Unknown client type '" + std::string(val) + "'");
      }
    } else if (EqualsIgnoreCase(opt, "SKIPME")) {
      if (EqualsIgnoreCase(val, "yes")) {
        skipme = true;
      } else if (EqualsIgnoreCase(val, "no")) {
        skipme = false;
      } else {
        return ctx.SyntaxError();
      }
    } else {
      return ctx.SyntaxError();
    }
  }
  int64_t killed = 0;
  if (none) clients.clear();
  for (const auto& c : clients) {
    if (has_id && c->id != static_cast<uint64_t>(id)) continue;
    if (!addr.empty() && c->addr != addr) continue;
    if (!laddr.empty() && c->laddr != laddr) continue;
    killed++;
    if (c->id == ctx.session.id()) {
      if (skipme) {
        killed--;
        continue;
      }
      ctx.close() = true;  // after the reply, as above
      continue;
    }
    Kill(*c);
  }
  ctx.out.Integer(killed);
}

void CmdClientHelp(CommandContext& ctx) {
  static const char* kLines[] = {
      "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
      "GETNAME",
      "    Return the name of the current connection.",
      "ID",
      "    Return the ID of the current connection.",
      "INFO",
      "    Return information about the current client connection.",
      "KILL <ip:port>",
      "    Kill connection made from <ip:port>.",
      "KILL <option> <value> [<option> <value> [...]]",
      "    Kill connections. Options are: ID <client-id>, ADDR <ip:port>, LADDR <ip:port>,",
      "    TYPE (NORMAL|MASTER|REPLICA|PUBSUB), USER <username>, SKIPME (YES|NO).",
      "LIST [options ...]",
      "    Return information about client connections. Options: TYPE NORMAL, ID id [id ...].",
      "SETNAME <name>",
      "    Assign the name <name> to the current connection.",
      "HELP",
      "    Print this help.",
  };
  ReplyHelp(ctx, kLines);
}

}  // namespace floe::server::internal
