// The CSV tokenizer (rows into fields, quotes per parse.h contract 4), the row-start finder the
// range split uses, and the readers of numbers and ISO-8601 times.

#include "parse/internal/csv.h"

#include <algorithm>
#include <array>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace floe::parse::internal {
namespace {

// Ends the row's current field and keeps it if there is room.
// `length` is the field's real length (a copied field stores at most field_cap bytes of it).
void Keep(Row* row, size_t keep, Row::Field f, size_t length) {
  row->longest = std::max(row->longest, length);
  if (row->count++ < keep) row->fields.push_back(f);
}

// Drops the CR of a CRLF from the row's last field, when the CR was outside quotes.
void DropCR(Row* row, size_t keep, bool cr_outside_quotes) {
  if (!cr_outside_quotes || row->count == 0 || row->count > keep) return;
  Row::Field& f = row->fields.back();
  if (f.size > 0) f.size--;
}

#if defined(__SSE2__)
// The bitmasks of a plain row (ReadPlainRow, ReadPlainFields): up to four 16-byte steps from
// `p`, until one holds an LF. False when none does within the bytes loaded, or a quote comes
// before the first LF; else *seps holds the separators before it (bit i: p[i]) and *lf_at its
// offset (at most 63).
inline bool PlainRowMasks(const char* p, const char* end, char sep, char quote, uint64_t* seps,
                          int* lf_at) {
  const __m128i vsep = _mm_set1_epi8(sep), vlf = _mm_set1_epi8('\n'), vq = _mm_set1_epi8(quote);
  uint64_t s = 0, quotes = 0, lfs = 0;
  const auto left = static_cast<size_t>(end - p);
  for (size_t step = 0; step < 4 && left >= 16 * (step + 1); step++) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * step));
    const auto bits = [&v](__m128i b) {
      return static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(v, b))));
    };
    s |= bits(vsep) << (16 * step);
    quotes |= bits(vq) << (16 * step);
    lfs |= bits(vlf) << (16 * step);
    if (lfs != 0) break;
  }
  if (lfs == 0) return false;
  *lf_at = __builtin_ctzll(lfs);
  const uint64_t before_lf = (uint64_t{1} << *lf_at) - 1;  // lf_at <= 63
  if (quote != '\0' && (quotes & before_lf) != 0) return false;
  *seps = s & before_lf;
  return true;
}

// A row of unquoted fields whose LF is within its first 64 bytes, from bitmasks: up to four
// 16-byte steps each give the bytes that are the separator, the quote and LF, until one holds an
// LF; every separator below the first LF then ends a field (a count of zeros and a clear of the
// lowest bit each), with no compare per field. nullptr (nothing kept) when the row has a quote
// before its LF, has no LF within the bytes loaded, or fewer than 16 bytes are left: ReadRow's
// scan takes it then. REQUIRES: the row is reset, sep is not LF.
const char* ReadPlainRow(const char* p, const char* end, char sep, char quote, size_t keep,
                         Row* row) {
  uint64_t seps = 0;
  int lf_at = 0;
  if (!PlainRowMasks(p, end, sep, quote, &seps, &lf_at)) return nullptr;
  const char* f = p;
  for (; seps != 0; seps &= seps - 1) {
    const char* at = p + __builtin_ctzll(seps);
    const auto size = static_cast<size_t>(at - f);
    Keep(row, keep, {.data = f, .offset = 0, .size = size, .quoted = false}, size);
    f = at + 1;
  }
  const char* lf = p + lf_at;
  const auto size = static_cast<size_t>(lf - f);
  Keep(row, keep, {.data = f, .offset = 0, .size = size, .quoted = false}, size);
  DropCR(row, keep, lf > f && lf[-1] == '\r');
  row->newlines = 1;
  return lf + 1;
}
#endif

// Appends the decimal digits from p to m (m * 10 + d each), 8 a step while 8 are there (SWAR:
// one load, a check that all 8 are digits, three multiplies); returns the first non-digit.
// Inlined, so that m stays in a register (through memory, each call was a store-forwarding wait).
[[gnu::always_inline]] inline const char* ReadDigits(const char* p, const char* e, uint64_t* m) {
  uint64_t v = *m;
  while (e - p >= 8) {
    uint64_t x;
    std::memcpy(&x, p, 8);
    // Every byte in '0'..'9': its high nibble is 3, and adding 6 leaves it 3.
    if (((x & 0xf0f0f0f0f0f0f0f0) | (((x + 0x0606060606060606) & 0xf0f0f0f0f0f0f0f0) >> 4)) !=
        0x3333333333333333) {
      break;
    }
    if constexpr (std::endian::native != std::endian::little) break;
    x -= 0x3030303030303030;
    x = x * 10 + (x >> 8);  // pairs of digits
    x = ((x & 0x000000ff000000ff) * 0x000f424000000064 +
         ((x >> 16) & 0x000000ff000000ff) * 0x0000271000000001) >>
        32;
    v = v * 100000000 + static_cast<uint32_t>(x);
    p += 8;
  }
  for (; p < e && *p >= '0' && *p <= '9'; p++) v = v * 10 + static_cast<uint64_t>(*p - '0');
  *m = v;
  return p;
}

// 5^-k (k = 0..22) to 128 bits, rounded up and shifted so the top bit is set: the table the
// Eisel-Lemire conversion multiplies by (as fast_float computes its entries for k <= 27:
// 2^(z + 127) / 5^k + 1, 2^z the least power of 2 at or above 5^k). Exact for k = 0.
__extension__ typedef unsigned __int128 U128;  // GCC and clang: a 64 x 64 -> 128-bit product

struct Pow5 {
  uint64_t hi, lo;
};
constexpr Pow5 ReciprocalOfPow5(int k) {
  if (k == 0) return {.hi = uint64_t{1} << 63, .lo = 0};
  uint64_t p5 = 1;
  for (int i = 0; i < k; i++) p5 *= 5;
  int z = 0;
  while ((uint64_t{1} << z) < p5) z++;
  // 2^(z + 127) (at most 2^179) divided by p5 over 64-bit limbs, high limb first.
  uint64_t limbs[3] = {0, 0, 0};
  limbs[(z + 127) / 64] = uint64_t{1} << ((z + 127) % 64);
  U128 rem = 0;
  uint64_t quotient[3] = {0, 0, 0};
  for (int i = 2; i >= 0; i--) {
    const U128 cur = rem << 64 | limbs[i];
    quotient[i] = static_cast<uint64_t>(cur / p5);
    rem = cur % p5;
  }
  const U128 c = (static_cast<U128>(quotient[1]) << 64 | quotient[0]) + 1;
  return {.hi = static_cast<uint64_t>(c >> 64), .lo = static_cast<uint64_t>(c)};
}
constexpr int kMaxFastDecimals = 22;
constexpr auto kReciprocalsOfPow5 = [] {
  std::array<Pow5, kMaxFastDecimals + 1> t{};
  for (int k = 0; k <= kMaxFastDecimals; k++) t[static_cast<size_t>(k)] = ReciprocalOfPow5(k);
  return t;
}();
static_assert(kReciprocalsOfPow5[1].hi == 0xcccccccccccccccc &&
              kReciprocalsOfPow5[1].lo == 0xcccccccccccccccd);

// w * 10^-k (w > 0, k <= 22) correctly rounded (ties to even), by Eisel-Lemire (Lemire,
// "Number parsing at a gigabyte per second", 2021; fast_float's compute_float for binary64):
// w's 64 bits times the 128-bit 5^-k give the 53-bit mantissa and its rounding, exactly for a w
// of 19 digits or fewer and k within [-27, 0] (no ambiguous case). False for a result that is
// not a normal double (never for these inputs; the caller then takes from_chars).
bool EiselLemire(uint64_t w, int k, bool negative, double* out) {
  const int q = -k;
  const int lz = __builtin_clzll(w);
  w <<= lz;
  const Pow5& t = kReciprocalsOfPow5[static_cast<size_t>(k)];
  const U128 first = static_cast<U128>(w) * t.hi;
  auto hi = static_cast<uint64_t>(first >> 64);
  auto lo = static_cast<uint64_t>(first);
  constexpr uint64_t kPrecisionMask = ~uint64_t{0} >> 55;  // below the mantissa's 52 + 3 bits
  if ((hi & kPrecisionMask) == kPrecisionMask) {
    const auto second_hi = static_cast<uint64_t>((static_cast<U128>(w) * t.lo) >> 64);
    lo += second_hi;
    if (second_hi > lo) hi++;
  }
  const int upperbit = static_cast<int>(hi >> 63);
  const int shift = upperbit + 64 - 52 - 3;
  uint64_t mantissa = hi >> shift;
  // floor(q * log2(10)) + 63, the binary exponent of 10^q's table entry, plus the bias.
  int power2 = (((152170 + 65536) * q) >> 16) + 63 + upperbit - lz + 1023;
  if (power2 <= 0) return false;
  // Exactly halfway (only possible for q in [-4, 23]): round to even.
  if (lo <= 1 && q >= -4 && (mantissa & 3) == 1 && (mantissa << shift) == hi) {
    mantissa &= ~uint64_t{1};
  }
  mantissa += mantissa & 1;
  mantissa >>= 1;
  if (mantissa >= uint64_t{2} << 52) {
    mantissa = uint64_t{1} << 52;
    power2++;
  }
  mantissa &= ~(uint64_t{1} << 52);
  if (power2 >= 0x7ff) return false;
  const uint64_t bits =
      mantissa | static_cast<uint64_t>(power2) << 52 | (negative ? uint64_t{1} << 63 : 0);
  std::memcpy(out, &bits, sizeof(bits));
  return true;
}

}  // namespace

const char* ReadPlainFields(const char* p, const char* end, char sep, char quote, size_t keep,
                            Row::Field* out, size_t stride, size_t* count, size_t* longest) {
#if defined(__SSE2__)
  if (sep == '\n' || end - p < 16) return nullptr;
  uint64_t seps = 0;
  int lf_at = 0;
  if (!PlainRowMasks(p, end, sep, quote, &seps, &lf_at)) return nullptr;
  const char* f = p;
  size_t n = 0, most = 0;
  for (; seps != 0; seps &= seps - 1, n++) {
    const char* at = p + __builtin_ctzll(seps);
    const auto size = static_cast<size_t>(at - f);
    most = std::max(most, size);
    if (n < keep) out[n * stride] = {.data = f, .offset = 0, .size = size, .quoted = false};
    f = at + 1;
  }
  const char* lf = p + lf_at;
  auto size = static_cast<size_t>(lf - f);
  most = std::max(most, size);
  if (lf > f && lf[-1] == '\r') size--;  // as DropCR
  if (n < keep) out[n * stride] = {.data = f, .offset = 0, .size = size, .quoted = false};
  *count = n + 1;
  *longest = most;
  return lf + 1;
#else
  (void)p, (void)end, (void)sep, (void)quote, (void)keep, (void)out, (void)stride, (void)count,
      (void)longest;
  return nullptr;
#endif
}

const char* ReadRow(const char* p, const char* end, char sep, char quote, size_t keep, Row* row) {
  row->fields.clear();
  row->scratch.clear();
  row->count = 0;
  row->newlines = 0;
  row->longest = 0;
  row->unterminated = false;
  row->over_line_cap = false;
  row->cancelled = false;
#if defined(__SSE2__)
  if (sep != '\n') {
    if (const char* next = ReadPlainRow(p, end, sep, quote, keep, row)) return next;
  }
#endif
  // Cancel is polled whenever the scan passes `next_poll`, so one huge line (or field) costs
  // at most kScanStep bytes of work after a cancel.
  const char* next_poll = end - p > static_cast<ptrdiff_t>(kScanStep) ? p + kScanStep : end;
  auto poll = [row, end, &next_poll](const char* at) {
    if (at < next_poll || at == end) return false;
    next_poll = end - at > static_cast<ptrdiff_t>(kScanStep) ? at + kScanStep : end;
    if (row->cancel == nullptr || !row->cancel->load(std::memory_order_relaxed)) return false;
    row->cancelled = true;
    return true;
  };
  // With quoting off, the quote test repeats the separator's, so the scan below needs no branch.
  const char q = quote == '\0' ? sep : quote;
  for (;;) {
    if (poll(p)) return end;
    const char* f = p;
    // Fast path: an unquoted field, a view into the input (scanned a step at a time).
    for (;;) {
      const char* stop = next_poll;
#if defined(__SSE2__)
      // 16 bytes a step while they are in the input: a mask of the bytes that end the field.
      // Most fields end within the first step, found by one load and a count of zeros.
      const __m128i vsep = _mm_set1_epi8(sep), vlf = _mm_set1_epi8('\n'), vq = _mm_set1_epi8(q);
      while (stop - p >= 16) {
        const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m128i hit = _mm_or_si128(
            _mm_or_si128(_mm_cmpeq_epi8(v, vsep), _mm_cmpeq_epi8(v, vlf)), _mm_cmpeq_epi8(v, vq));
        const auto mask = static_cast<unsigned>(_mm_movemask_epi8(hit));
        if (mask != 0) {
          p += __builtin_ctz(mask);
          break;
        }
        p += 16;
      }
#endif
      while (p < stop && *p != sep && *p != '\n' && *p != q) p++;
      if (p < stop || stop == end) break;
      if (poll(p)) return end;
    }
    if (p == end || *p != q || quote == '\0') {
      const auto size = static_cast<size_t>(p - f);
      Keep(row, keep, {.data = f, .offset = 0, .size = size, .quoted = false}, size);
      if (p < end && *p == sep) {
        p++;
        continue;
      }
      DropCR(row, keep, p > f && p[-1] == '\r');
      if (p == end) return end;
      row->newlines++;
      return p + 1;
    }
    // Fast path: a field that is one quoted run with no doubled quote, a view inside the quotes.
    if (p == f) {
      // The closing quote, a step at a time; the LFs before it counted on the way.
      const char* close = nullptr;
      uint64_t lfs = 0;
      for (const char* at = p + 1; at < end;) {
        const char* stop = end - at > static_cast<ptrdiff_t>(kScanStep) ? at + kScanStep : end;
        close = static_cast<const char*>(std::memchr(at, quote, stop - at));
        lfs += static_cast<uint64_t>(std::count(at, close != nullptr ? close : stop, '\n'));
        if (close != nullptr) break;
        at = stop;
        if (poll(at)) return end;
      }
      if (close != nullptr) {
        const char* after = close + 1;
        const bool crlf = after < end && *after == '\r' && (after + 1 == end || after[1] == '\n');
        if (crlf) after++;
        if (after == end || *after == sep || *after == '\n') {
          const auto size = static_cast<size_t>(close - (p + 1));
          row->newlines += lfs;
          Keep(row, keep, {.data = p + 1, .offset = 0, .size = size, .quoted = true}, size);
          p = after;
          if (p < end && *p == sep) {
            p++;
            continue;
          }
          if (p == end) return end;
          row->newlines++;
          return p + 1;
        }
      }
    }
    // General path: copy the field into scratch, unescaping. The fast path may have scanned
    // ahead: the polls restart from here.
    p = f;
    next_poll = end - p > static_cast<ptrdiff_t>(kScanStep) ? p + kScanStep : end;
    const size_t offset = row->scratch.size();
    size_t length = 0;
    // A field past the cap is counted, not copied: its row is rejected, and its size must not
    // size an allocation.
    auto emit = [row, &length](char c) {
      if (length++ >= row->field_cap) return;
      if (row->scratch.size() >= row->line_cap) {
        row->over_line_cap = true;
        return;
      }
      row->scratch.push_back(c);
    };
    bool in_quotes = false, quoted = false, cr_outside = false;
    while (p < end) {
      if (p >= next_poll && poll(p)) return end;
      const char c = *p;
      if (in_quotes) {
        if (c == quote) {
          if (p + 1 < end && p[1] == quote) {
            emit(quote);
            p += 2;
            cr_outside = false;
            continue;
          }
          in_quotes = false;
          p++;
          continue;
        }
        if (c == '\n') row->newlines++;
        emit(c);
        cr_outside = false;
        p++;
        continue;
      }
      if (c == sep || c == '\n') break;
      if (c == quote) {
        in_quotes = quoted = true;
        p++;
        continue;
      }
      emit(c);
      cr_outside = c == '\r';
      p++;
    }
    if (in_quotes) row->unterminated = true;
    Keep(
        row, keep,
        {.data = nullptr, .offset = offset, .size = row->scratch.size() - offset, .quoted = quoted},
        length);
    if (p < end && *p == sep) {
      p++;
      continue;
    }
    DropCR(row, keep, cr_outside);
    if (p == end) return end;
    row->newlines++;
    return p + 1;
  }
}

// SSE2 (every x86-64): 16 bytes a step, each lane counting its matches in a byte for at most
// 255 steps, then summed by SAD. About 7x std::count's speed, which GCC widens to 64-bit lanes
// (66 against 9 ms for 270 MB on the import benchmark's file).
uint64_t CountQuotes(const char* p, const char* end, char quote) {
  if (quote == '\0') return 0;
  uint64_t n = 0;
#if defined(__SSE2__)
  const __m128i q = _mm_set1_epi8(quote);
  while (end - p >= 16) {
    const size_t steps = std::min<size_t>(static_cast<size_t>(end - p) / 16, 255);
    __m128i counts = _mm_setzero_si128();
    for (size_t i = 0; i < steps; i++, p += 16) {
      const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      counts = _mm_sub_epi8(counts, _mm_cmpeq_epi8(v, q));  // a match is -1
    }
    const __m128i sums = _mm_sad_epu8(counts, _mm_setzero_si128());
    n += static_cast<uint64_t>(_mm_cvtsi128_si64(sums)) +
         static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_unpackhi_epi64(sums, sums)));
  }
#endif
  return n + static_cast<uint64_t>(std::count(p, end, quote));
}

const char* NextRowStart(const char* begin, const char* p, const char* end, char quote,
                         bool in_quotes_before_p) {
  if (p <= begin) return begin;
  // Step back one byte, so that a row starting exactly at p is found.
  const char* s = p - 1;
  bool in_quotes = in_quotes_before_p;
  if (quote != '\0' && *s == quote) in_quotes = !in_quotes;  // the state before byte p - 1
  for (; s < end; s++) {
    if (quote != '\0' && *s == quote) {
      in_quotes = !in_quotes;
    } else if (*s == '\n' && !in_quotes) {
      return s + 1;
    }
  }
  return end;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool ReadNumber(std::string_view s, double* out) {
  s = Trim(s);
  if (s.empty()) return false;
  const char* b = s.data();
  const char* e = b + s.size();
  if (*b == '+') {
    b++;
    if (b == e || *b == '-' || *b == '+') return false;
  }
  // Fast path: up to 19 digits with an optional point, at most 22 after it, and no exponent
  // (a Python repr of a double has 17 digits at most). The digits make an integer m < 10^19.
  // Up to 15 digits, m < 10^15 < 2^53 and 10^k (k <= 15) is exact, so m / 10^k is one correctly
  // rounded division: the same double from_chars gives. Past that, Eisel-Lemire (as from_chars
  // does, without its general parse).
  if (e - b <= 21) {
    const char* q = b;
    const bool negative = *q == '-';
    if (negative) q++;
    uint64_t m = 0;  // wraps past 19 digits, which are then not taken here
    const char* whole = q;
    q = ReadDigits(q, e, &m);
    int digits = static_cast<int>(q - whole), decimals = -1;
    if (q < e && *q == '.') {
      const char* fraction = ++q;
      q = ReadDigits(q, e, &m);
      decimals = static_cast<int>(q - fraction);
      digits += decimals;
    }
    if (q == e && digits > 0 && digits <= 15) {
      static constexpr double kPow10[16] = {1e0, 1e1, 1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                            1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
      double v = static_cast<double>(m);
      if (decimals > 0) v /= kPow10[decimals];
      *out = negative ? -v : v;
      return true;
    }
    if (q == e && digits <= 19 && decimals <= kMaxFastDecimals && m != 0 &&
        EiselLemire(m, std::max(decimals, 0), negative, out)) {
      return true;
    }
  }
  // Fast path: a plain integer that a double holds exactly (not -0, which keeps its sign).
  if (e - b <= 15) {
    int64_t x;
    const auto [ptr, ec] = std::from_chars(b, e, x);
    if (ec == std::errc() && ptr == e && (x != 0 || *b != '-')) {
      *out = static_cast<double>(x);
      return true;
    }
  }
  double v;
  const auto [ptr, ec] = std::from_chars(b, e, v);
  if (ptr != e) return false;
  if (ec == std::errc::result_out_of_range) {
    // Underflow is a denormal or zero, which from_chars reports too; overflow is refused.
    const double d = std::strtod(std::string(b, e).c_str(), nullptr);
    if (std::isinf(d)) return false;
    *out = d;
    return true;
  }
  if (ec != std::errc()) return false;
  *out = v;
  return true;
}

namespace {

// Days from 1970-01-01 to the civil date (proleptic Gregorian), by counting 400-year eras of
// 146,097 days from 0000-03-01, with March as the year's first month so leap days come last.
int64_t DaysFromCivil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2 ? 1 : 0;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

bool Digits(std::string_view s, size_t at, size_t n, int64_t* out) {
  if (at + n > s.size()) return false;
  int64_t v = 0;
  for (size_t i = at; i < at + n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

}  // namespace

std::optional<int64_t> ReadTime(std::string_view s) {
  s = Trim(s);
  int64_t y, mo, d;
  if (s.size() < 10 || s[4] != '-' || s[7] != '-' || !Digits(s, 0, 4, &y) ||
      !Digits(s, 5, 2, &mo) || !Digits(s, 8, 2, &d)) {
    return std::nullopt;
  }
  static constexpr int kMonthDays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (mo < 1 || mo > 12 || d < 1 || d > kMonthDays[mo - 1]) return std::nullopt;
  const bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return std::nullopt;
  int64_t ms = DaysFromCivil(y, mo, d) * 86'400'000;
  if (s.size() == 10) return ms;
  if (s[10] != 'T' && s[10] != ' ') return std::nullopt;
  int64_t h, mi, sec = 0;
  if (!Digits(s, 11, 2, &h) || s.size() < 16 || s[13] != ':' || !Digits(s, 14, 2, &mi)) {
    return std::nullopt;
  }
  size_t at = 16;
  if (at < s.size() && s[at] == ':') {
    if (!Digits(s, at + 1, 2, &sec)) return std::nullopt;
    at += 3;
    if (at < s.size() && (s[at] == '.' || s[at] == ',')) {
      at++;
      int64_t frac = 0;
      size_t n = 0;
      while (at < s.size() && s[at] >= '0' && s[at] <= '9') {
        if (n < 3) frac = frac * 10 + (s[at] - '0');
        n++;
        at++;
      }
      if (n == 0 || n > 9) return std::nullopt;
      for (size_t k = n; k < 3; k++) frac *= 10;
      ms += frac;  // sub-millisecond digits are truncated
    }
  }
  if (h > 23 || mi > 59 || sec > 59) return std::nullopt;
  ms += ((h * 60 + mi) * 60 + sec) * 1000;
  if (at == s.size()) return ms;
  if (s[at] == 'Z' && at + 1 == s.size()) return ms;
  if (s[at] != '+' && s[at] != '-') return std::nullopt;
  int64_t oh, om;
  const bool colon = at + 6 == s.size() && s[at + 3] == ':';
  if (!Digits(s, at + 1, 2, &oh) || !Digits(s, at + (colon ? 4 : 3), 2, &om) ||
      at + (colon ? 6 : 5) != s.size() || oh > 23 || om > 59) {
    return std::nullopt;
  }
  const int64_t offset = (oh * 60 + om) * 60'000;
  return s[at] == '+' ? ms - offset : ms + offset;
}

bool IsNAToken(std::string_view s, const std::vector<std::string>& tokens) {
  for (const std::string& t : tokens) {
    if (t == s) return true;  // s may be empty with no data: no memcmp of a null pointer
  }
  return false;
}

}  // namespace floe::parse::internal
