// Startup agreement check: every rank must run the same resolved config, world size and resume
// step, else all ranks stop with one message listing who disagrees.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/dist/rendezvous.h"

namespace s6::trainer {

// 64-bit FNV-1a (offset basis 0xcbf29ce484222325, prime 0x100000001b3) of the bytes of `text`.
uint64_t fnv1a64(const std::string& text);

// What each rank contributes. config_hash = fnv1a64(to_yaml(config)) of the RESOLVED config, so
// two ranks given different files or overrides that resolve the same still agree.
struct StartupRecord {
  uint64_t config_hash = 0;
  int64_t world_size = 1;
  int64_t resume_step = 0;  // step the run resumes from; 0 for a fresh start
  bool operator==(const StartupRecord& o) const {
    return config_hash == o.config_hash && world_size == o.world_size && resume_step == o.resume_step;
  }
};

// Fixed 24-byte little-endian encoding for the wire; decode throws CommError on a wrong size.
std::string encode(const StartupRecord& r);
StartupRecord decode_startup_record(const std::string& bytes);

// Pure check over the records of all ranks (index = rank): "" when all equal, else a message with
// one line per differing field comparing every other value against rank 0's, e.g.
//   "config hash: rank 0 has 0x1f..., rank 2 has 0x9a..."
std::string startup_disagreement(const std::vector<StartupRecord>& records);

// Collective over the rendezvous: gathers every rank's record on rank 0, which compares them and
// broadcasts the verdict. On disagreement EVERY rank throws CommError with the same message, so no
// rank goes on to create a communicator that the others never join.
void check_startup_agreement(Rendezvous& rendezvous, const StartupRecord& mine);

}  // namespace s6::trainer
