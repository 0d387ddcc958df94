// Startup agreement check over the rendezvous: record encoding, comparison, verdict broadcast.
#include "trainer/dist/agreement.h"

#include <fmt/format.h>

#include <map>

namespace s6::trainer {
namespace {

void put_u64(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t get_u64(const std::string& in, size_t at) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= uint64_t{static_cast<unsigned char>(in[at + i])} << (8 * i);
  return v;
}

// "rank 0 has A, ranks 2, 3 have B": groups ranks by value so a 64-rank mismatch stays readable.
template <class T, class Fmt> std::string field_line(const char* name, const std::vector<StartupRecord>& rs,
                                                     T StartupRecord::*field, Fmt show) {
  std::map<T, std::vector<int>> by_value;
  for (size_t r = 0; r < rs.size(); ++r) by_value[rs[r].*field].push_back(static_cast<int>(r));
  if (by_value.size() <= 1) return "";
  const T ref = rs[0].*field;
  std::string line = fmt::format("  {}: rank 0 has {}", name, show(ref));
  for (const auto& [value, ranks] : by_value) {
    if (value == ref) continue;
    line += fmt::format(", rank{} {} {} {}", ranks.size() > 1 ? "s" : "", fmt::join(ranks, ", "),
                        ranks.size() > 1 ? "have" : "has", show(value));
  }
  return line + "\n";
}

}  // namespace

uint64_t fnv1a64(const std::string& text) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

std::string encode(const StartupRecord& r) {
  std::string out;
  put_u64(out, r.config_hash);
  put_u64(out, static_cast<uint64_t>(r.world_size));
  put_u64(out, static_cast<uint64_t>(r.resume_step));
  return out;
}

StartupRecord decode_startup_record(const std::string& bytes) {
  if (bytes.size() != 24)
    throw CommError(fmt::format("startup record has {} bytes, expected 24 (mixed s6 versions?)", bytes.size()));
  StartupRecord r;
  r.config_hash = get_u64(bytes, 0);
  r.world_size = static_cast<int64_t>(get_u64(bytes, 8));
  r.resume_step = static_cast<int64_t>(get_u64(bytes, 16));
  return r;
}

std::string startup_disagreement(const std::vector<StartupRecord>& records) {
  auto hex = [](uint64_t v) { return fmt::format("{:#018x}", v); };
  auto num = [](int64_t v) { return std::to_string(v); };
  std::string lines = field_line("config hash (FNV-1a of the resolved config)", records,
                                 &StartupRecord::config_hash, hex) +
                      field_line("world size", records, &StartupRecord::world_size, num) +
                      field_line("resume step", records, &StartupRecord::resume_step, num);
  if (lines.empty()) return "";
  return "ranks disagree at startup (all ranks must run the same config, world size and checkpoint):\n" +
         lines.substr(0, lines.size() - 1);
}

void check_startup_agreement(Rendezvous& rendezvous, const StartupRecord& mine) {
  std::string verdict;
  if (rendezvous.rank() == 0) {
    std::vector<std::string> all = rendezvous.gather(encode(mine), "startup check");
    // Decode errors become the verdict too: rank 0 must still answer, or the others would wait
    // for the verdict until their timeout.
    try {
      std::vector<StartupRecord> records;
      for (const std::string& bytes : all) records.push_back(decode_startup_record(bytes));
      verdict = startup_disagreement(records);
      // The records are compared with each other; rank 0's is also checked against the transport.
      if (verdict.empty() && mine.world_size != rendezvous.world_size())
        verdict = fmt::format("every rank reports world size {}, but {} ranks joined the rendezvous",
                              mine.world_size, rendezvous.world_size());
    } catch (const CommError& e) {
      verdict = e.what();
    }
  } else {
    rendezvous.gather(encode(mine), "startup check");
  }
  verdict = rendezvous.broadcast(verdict, "startup check verdict");
  if (!verdict.empty()) throw CommError(fmt::format("rank {}: {}", rendezvous.rank(), verdict));
}

}  // namespace s6::trainer
