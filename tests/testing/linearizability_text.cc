// Histories as text: the format is in linearizability.h.
#include <charconv>
#include <string>

#include "testing/linearizability.h"

namespace floe::testing::lin {
namespace {

constexpr std::string_view kKindNames[] = {"get", "put", "remove", "put-if-absent", "cas", "incr"};

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

std::optional<std::string> Unhex(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (size_t i = 0; i < text.size(); i += 2) {
    const int hi = digit(text[i]), lo = digit(text[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
  }
  return out;
}

template <typename Int>
bool ParseInt(std::string_view text, Int* out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), *out);
  return ec == std::errc() && end == text.data() + text.size() && !text.empty();
}

std::string HexOrAbsent(const Value& value) { return value ? Hex(*value) : "-"; }

// Parses one line's fields into `op`; returns what is wrong, or "" when nothing is.
std::string ParseLine(std::string_view line, Operation* op) {
  bool have_kind = false, have_key = false, have_call = false, have_ret = false;
  bool have_until = false;
  while (!line.empty()) {
    const size_t space = line.find(' ');
    const std::string_view field = line.substr(0, space);
    line = space == std::string_view::npos ? std::string_view() : line.substr(space + 1);
    if (field.empty()) continue;
    const size_t eq = field.find('=');
    if (eq == std::string_view::npos) return "field '" + std::string(field) + "' has no '='";
    const std::string_view name = field.substr(0, eq), text = field.substr(eq + 1);
    auto bad = [&] { return "bad value in '" + std::string(field) + "'"; };
    auto bytes = [&](bool may_be_absent, Value* out) {
      if (may_be_absent && text == "-") {
        out->reset();
        return true;
      }
      *out = Unhex(text);
      return out->has_value();
    };
    if (name == "c") {
      if (!ParseInt(text, &op->client)) return bad();
    } else if (name == "op") {
      have_kind = false;
      for (size_t k = 0; k < std::size(kKindNames); ++k) {
        if (text == kKindNames[k]) {
          op->kind = static_cast<OpKind>(k);
          have_kind = true;
        }
      }
      if (!have_kind) return bad();
    } else if (name == "key") {
      Value key;
      if (!bytes(false, &key)) return bad();
      op->key = std::move(*key);
      have_key = true;
    } else if (name == "value") {
      Value value;
      if (!bytes(false, &value)) return bad();
      op->value = std::move(*value);
    } else if (name == "expected") {
      if (!bytes(true, &op->expected)) return bad();
    } else if (name == "read") {
      if (!bytes(true, &op->read)) return bad();
    } else if (name == "delta") {
      if (!ParseInt(text, &op->delta)) return bad();
    } else if (name == "counter") {
      if (!ParseInt(text, &op->counter)) return bad();
    } else if (name == "applied") {
      if (text == "-") {
        op->applied.reset();
      } else if (text == "1" || text == "0") {
        op->applied = text == "1";
      } else {
        return bad();
      }
    } else if (name == "call") {
      if (!ParseInt(text, &op->call)) return bad();
      have_call = true;
    } else if (name == "ret") {
      if (text == "?") {
        op->outcome = Outcome::kUnknown;
      } else if (!ParseInt(text, &op->ret)) {
        return bad();
      }
      have_ret = true;
    } else if (name == "until") {
      if (!ParseInt(text, &op->unknown_until)) return bad();
      have_until = true;
    } else {
      return "unknown field '" + std::string(name) + "'";
    }
  }
  if (!have_kind || !have_key || !have_call || !have_ret) {
    return "every line needs op=, key=, call= and ret=";
  }
  if (have_until && op->outcome != Outcome::kUnknown) return "until= needs ret=?";
  return "";
}

}  // namespace

std::string WriteHistory(const std::vector<Operation>& history) {
  std::string out;
  for (const Operation& op : history) {
    out += "c=" + std::to_string(op.client) + " op=";
    out += kKindNames[static_cast<size_t>(op.kind)];
    out += " key=" + Hex(op.key);
    const bool known = op.outcome == Outcome::kOk;
    switch (op.kind) {
      case OpKind::kGet:
        if (known) out += " read=" + HexOrAbsent(op.read);
        break;
      case OpKind::kPut:
        out += " value=" + Hex(op.value);
        break;
      case OpKind::kCompareAndPut:
        out += " expected=" + HexOrAbsent(op.expected);
        [[fallthrough]];
      case OpKind::kPutIfAbsent:
        out += " value=" + Hex(op.value);
        [[fallthrough]];
      case OpKind::kRemove:
        if (known) out += std::string(" applied=") + (!op.applied ? "-" : *op.applied ? "1" : "0");
        break;
      case OpKind::kIncrement:
        out += " delta=" + std::to_string(op.delta);
        if (known) out += " counter=" + std::to_string(op.counter);
        break;
    }
    out += " call=" + std::to_string(op.call);
    out += known ? " ret=" + std::to_string(op.ret) : std::string(" ret=?");
    if (!known && op.unknown_until != kForever) {
      out += " until=" + std::to_string(op.unknown_until);
    }
    out += '\n';
  }
  return out;
}

bool ParseHistory(std::string_view text, std::vector<Operation>* history, std::string* error) {
  history->clear();
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(' ') == std::string_view::npos || line.front() == '#') continue;
    Operation op;
    if (std::string problem = ParseLine(line, &op); !problem.empty()) {
      *error = "line " + std::to_string(line_number) + ": " + problem;
      return false;
    }
    history->push_back(std::move(op));
  }
  return true;
}

}  // namespace floe::testing::lin
