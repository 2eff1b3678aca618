// The command index: lists and name lookups derived once from the command table
// (command_table.cc), which is never written: the rows are constexpr.

#include <unordered_map>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

struct Index {
  std::vector<const CommandSpec*> top;  // top-level commands, in name order
  std::vector<const CommandSpec*> all;  // each command followed by its subcommands
  std::unordered_map<std::string_view, const CommandSpec*> by_name;  // views of static names
  Index() {
    for (const CommandSpec& c : Commands()) {
      top.push_back(&c);
      all.push_back(&c);
      by_name.emplace(c.name, &c);
      for (const CommandSpec& s : c.subcommands) all.push_back(&s);
    }
    // Every index names one counter slot: the numbering is dense and has no repeats.
    std::vector<bool> seen(static_cast<size_t>(CommandRowCount()), false);
    FLOE_CHECK(all.size() == seen.size());
    for (const CommandSpec* c : all) {
      FLOE_CHECK(c->index >= 0 && c->index < CommandRowCount());
      FLOE_CHECK(!seen[static_cast<size_t>(c->index)]);
      seen[static_cast<size_t>(c->index)] = true;
    }
  }
};

const Index& TheIndex() {
  static const Index* index = new Index();
  return *index;
}

}  // namespace

const std::vector<const CommandSpec*>& CommandTable() { return TheIndex().top; }

const std::vector<const CommandSpec*>& AllCommands() { return TheIndex().all; }

const CommandSpec* FindCommand(std::string_view name) {
  if (name.size() > 32) return nullptr;
  char lower[33];
  for (size_t i = 0; i < name.size(); i++) {
    const char c = name[i];
    lower[i] = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  }
  const auto& by_name = TheIndex().by_name;
  auto it = by_name.find(std::string_view(lower, name.size()));
  return it == by_name.end() ? nullptr : it->second;
}

const CommandSpec* FindSubcommand(const CommandSpec& parent, std::string_view name) {
  for (const CommandSpec& s : parent.subcommands) {
    const std::string_view sub = s.name.substr(s.name.find('|') + 1);
    if (EqualsIgnoreCase(sub, name)) return &s;
  }
  return nullptr;
}

const CommandSpec* FindCommandByFullName(std::string_view name) {
  const size_t bar = name.find('|');
  if (bar == std::string_view::npos) return FindCommand(name);
  const CommandSpec* parent = FindCommand(name.substr(0, bar));
  return parent == nullptr ? nullptr : FindSubcommand(*parent, name.substr(bar + 1));
}

const CommandSpec* ResolveCommand(std::span<const std::string_view> args) {
  if (args.empty()) return nullptr;
  const CommandSpec* base = FindCommand(args[0]);
  if (base == nullptr || args.size() == 1 || base->subcommands.empty()) return base;
  return FindSubcommand(*base, args[1]);
}

void ReplyHelp(CommandContext& ctx, std::span<const char* const> lines) {
  ctx.out.ArrayHeader(lines.size());
  for (const char* line : lines) ctx.out.SimpleString(line);
}

}  // namespace floe::server::internal
