// docs/commands.md: the command table as Markdown (`floe commands`), and the notes on where
// Floe differs from Redis 7.0.

#include <cctype>

#include "server/internal/command.h"

namespace floe::server::internal {

namespace {

std::string MarkdownForTable() {
  std::string md =
      "# Commands\n\n"
      "Generated from the command table (`src/server/command_table.cc`) by `floe commands`;\n"
      "CI fails when this file is stale. Semantics, replies and error strings are "
      "Redis 7.0's\nunless a note says otherwise.\n\n"
      "| command | arity | flags | group | since | summary |\n|---|---|---|---|---|---|\n";
  auto flags = [](uint32_t f) {
    std::string s;
    auto add = [&](uint32_t bit, const char* name) {
      if (f & bit) s += std::string(s.empty() ? "" : ", ") + name;
    };
    add(kWrite, "write");
    add(kReadOnly, "readonly");
    add(kDenyOom, "denyoom");
    add(kFast, "fast");
    add(kNoAuth, "no_auth");
    add(kExclusive, "exclusive");
    add(kNoMulti, "no_multi");
    return s;
  };
  for (const CommandSpec* c : AllCommands()) {
    std::string name(c->name);
    for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    for (char& ch : name) ch = ch == '|' ? ' ' : ch;
    std::string usage = "`" + name + (c->syntax.empty() ? "" : " " + std::string(c->syntax)) + "`";
    for (size_t p = 0; (p = usage.find('|', p)) != std::string::npos; p += 2)
      usage.replace(p, 1, "\\|");
    md += "| " + usage + " | " + std::to_string(c->arity) + " | " + flags(c->flags) + " | " +
          std::string(c->group) + " | " + std::string(c->since) + " | " + std::string(c->summary) +
          " |\n";
  }
  md += R"md(
## Notes

- `exclusive`: the command runs while every other I/O thread is paused between commands,
  which makes it atomic across keys (Redis gets this from being single-threaded).
- `SELECT`: Floe has one database; `SELECT 0` succeeds, any other index is an error.
- `OBJECT ENCODING` derives the encoding from the content: `int` for a 64-bit decimal,
  `embstr` up to 44 bytes, `raw` beyond. Redis also reports `raw` for short strings that
  were modified in place (APPEND, SETRANGE); Floe strings are immutable, so it does not.
- `HELLO` reports `server` as `floe` and `version` as `7.0.0`, the Redis version whose
  semantics Floe follows.
- `CONFIG GET`/`SET`, the config file and the flags of `floe serve` are driven by one table
  of settings (`src/server/config.cc`); `bind`, `port`, `io-threads`, `busy-poll-us`, `save`,
  `appendonly` and `databases` are read-only. Ranges and error texts are Redis's, except:
  `proto-max-bulk-len` takes 1kb to 4294967295 bytes, the most the store holds in one value
  (Redis: 1mb to 2^63-1); `loglevel` also takes `nothing`; `client-output-buffer-limit`
  refuses byte counts above 2^63-1 (Redis accepts them); `maxclients` is not checked against
  the file-descriptor limit (Redis refuses a value the limit cannot serve).
- `COMMAND GETKEYS` reads the first/last/step key positions of the command table: `PFMERGE`
  with no source key answers its destination (Redis 7.0 refuses). `COMMAND GETKEYSANDFLAGS`
  is not implemented (the table has no per-key access flags).
- `FLUSHDB`/`FLUSHALL` ignore `ASYNC`: both free the keys at once.
- `GET` on a key of a type other than string replies `WRONGTYPE`.
- `MGET` of more than one key runs as `exclusive`, so it reads one snapshot of its keys.
- Keys are limited to 64 KiB (Redis: 512 MB); a longer key is refused with an `ERR` error.
- A request holds at most 1,048,576 arguments (Redis: 2^31 - 1); a longer one is answered
  `Protocol error: invalid multibulk length` and its connection closed, as Redis does past its
  own limit. Split such a `DEL` or `MSET` into several.
- An inline command keeps a NUL byte inside an argument. Redis 7.0 looks for the end of an
  inline line with `strchr`, so a NUL makes it wait for more input and never answer.
- Inside `MULTI` only `EXEC`, `DISCARD`, `MULTI`, `WATCH`, `QUIT` and `RESET` run at once; a
  key `WATCH`ed while absent aborts `EXEC` once any write made it exist, even if it is gone
  again, as in Redis.

## Sketches

Sketch values (`hll`, `cms`, `bloom`) change in place: an add updates the sketch under a lock
of its own instead of copying it, so `PFADD` or `BF.ADD` costs the same on a 12 KB sketch as on
a small one. A transaction that `WATCH`es a sketch key is aborted by any add that changed it,
and `EXPIRE`, `RENAME` and `PFMERGE` carry every add that completed before them.

- `HLL.*` and `PF*` keys hold one value type, `hll` (what `TYPE` replies): the bytes of
  PostgreSQL's `hll` extension (storage specification v1). `HLL.EXPORT` gives them in
  PostgreSQL's text form, so `SELECT '<that>'::hll` reads them; `HLL.IMPORT` takes that form
  back. `GET` on a sketch key replies `WRONGTYPE` (Redis would return its own HLL bytes);
  `OBJECT ENCODING` names the representation: `empty`, `explicit`, `sparse` or `full`.
- `PFADD` creates sketches with Redis's precision (2^14 registers of 6 bits) in the
  PostgreSQL format; replies, errors and `PFMERGE` (the destination's own contents
  included) follow Redis, and counts agree with Redis's within the sketch error (Redis
  uses a different hash and estimator, so the exact integers can differ). `PFADD` and
  `PFCOUNT` refuse string values with Redis's `WRONGTYPE Key is not a valid HyperLogLog
  string value.` and undecodable sketches with `INVALIDOBJ Corrupted HLL object detected`.
- `HLL.COUNT` and `HLL.UNION` accept sketches of different sizes by folding them exactly to
  the smallest log2m and regwidth among the inputs; PostgreSQL refuses such unions.
- Estimates equal PostgreSQL's except where PostgreSQL's large-range bound overflows
  (regwidth 6 and above, where it returns NaN); Floe computes that bound in floating
  point. A saturated sketch (every register at its maximum, e.g. regwidth 1) returns NaN
  in both from `HLL.COUNT`; `PFCOUNT`, whose reply is an integer, gives the uncorrected
  estimate for it.
- `HLL.ADD key INT` with nothing after `INT` adds the text `INT`; the kind word is read as
  a kind only when elements follow it. The reply counts elements that changed the sketch.
- `CMS.*` follow RedisBloom (replies and error texts). Range counts and quantiles need a
  sketch created over integers with `CMS.INITRANGE key width depth bits`: it keeps bits + 1
  Count-Min levels of width x depth (level l counts value >> l), takes `CMS.INCRBY` items that
  are integers in [0, 2^bits), and answers `CMS.RANGE key lo hi` (the count of values in
  [lo, hi], never below the truth) and `CMS.QUANTILE key q...` (the smallest value whose
  range count from 0 reaches q of the total, found by binary search). `CMS.QUERY` on such a
  sketch gives the count of one value; `CMS.MERGE` takes plain sketches only. An increment
  that would pass a counter's 2^32 - 1 answers `CMS: INCRBY overflow` for that item and changes
  nothing (no counter, not the total, no level of a range sketch), as RedisBloom's `CMS_IncrBy`
  undoes its rows; the other items of the command still count.
- `BF.*` follow RedisBloom 8 (replies, RESP3 booleans, error texts, argument order):
  filters are scalable unless `NONSCALING` (or `EXPANSION 0`); each new sub-filter has
  `EXPANSION` times the capacity and half the error rate of the last, so the whole chain
  stays under the requested rate. Defaults for filters created by `BF.ADD`/`BF.MADD`/
  `BF.INSERT`: error rate 0.01, capacity 100, expansion 2. Error rates above 0.25 are capped
  at 0.25. A filter may take at most 512 MiB (`ERR Insufficient memory to create filter`).
  `BF.EXISTS` on a key of another type replies 0, as RedisBloom does. Floe hashes items with
  xxh3, so filter bits differ from RedisBloom's (no dump/load compatibility); `TYPE` replies
  `bloom`. `BF.INSERT` and `BF.RESERVE` refuse unknown arguments (`Unknown argument
  received`, `ERR syntax error`).
)md";
  return md;
}

}  // namespace

}  // namespace floe::server::internal

namespace floe::server {
std::string CommandsMarkdown() { return internal::MarkdownForTable(); }
}  // namespace floe::server
