// The command index: numbers every command and subcommand once at start-up (commandstats
// use the numbers), and looks names up without allocating. The table itself is
// command_table_a_g.cc and command_table_h_z.cc, one declaration per command.

#include <algorithm>
#include <unordered_map>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

struct Index {
  std::vector<const CommandSpec*> top;  // top-level commands, in name order
  std::vector<const CommandSpec*> all;  // commands and subcommands, indexed by CommandSpec::index
  std::unordered_map<std::string_view, const CommandSpec*> by_name;  // views of static names
  Index() {
    int next = 0;
    for (std::span<CommandSpec> part : {CommandsAToG(), CommandsHToZ()}) {
      for (CommandSpec& c : part) {
        c.index = next++;
        top.push_back(&c);
        all.push_back(&c);
        by_name.emplace(c.name, &c);
        for (const CommandSpec& s : c.subcommands) {
          // The subcommand arrays are non-const arrays viewed through a const span.
          const_cast<CommandSpec&>(s).index = next++;
          all.push_back(&s);
        }
      }
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

}  // namespace floe::server::internal
