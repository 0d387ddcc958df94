// TCP rendezvous over POSIX sockets: rank 0 listens, the others connect; then small broadcasts and
// gathers (the NCCL unique id, the startup check), every step bounded by a timeout.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

#include "trainer/dist/env.h"
#include "trainer/dist/error.h"

namespace s6::trainer {

struct RendezvousOptions {
  std::string master_addr = "127.0.0.1";  // IPv4 address or host name of rank 0
  int master_port = kDefaultMasterPort;
  int rank = 0;
  int world_size = 1;
  // Limit for each operation (connecting all ranks, each broadcast, gather, barrier). Generous by
  // default: ranks may start minutes apart on a busy cluster (srun, container pulls).
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
};

RendezvousOptions rendezvous_options(const LaunchEnv& env, std::chrono::milliseconds timeout);

// A star of TCP connections around rank 0: the startup exchanges, and on the CPU the collectives
// of data parallelism (all_reduce below; NCCL does them on GPUs).
// Every failure throws CommError naming this rank, the peer rank and address and the operation:
// a refused or silent rank 0 until the deadline, a peer that closes its socket (it died), a peer
// that stays silent (timeout), a peer with another world size or a duplicate rank. No call
// blocks past its deadline. With world_size 1 no socket is opened and every call is local.
class Rendezvous {
 public:
  // Rank 0 binds MASTER_PORT on all IPv4 interfaces (MASTER_ADDR may name an address of another
  // interface, or a host name that resolves to 127.0.1.1 locally) and accepts world_size - 1 peers;
  // the others connect to master_addr:master_port, retrying refused connections until the deadline
  // (rank 0 may start later). Returns once all ranks are connected and the handshake agreed.
  explicit Rendezvous(const RendezvousOptions& options);
  ~Rendezvous();
  Rendezvous(const Rendezvous&) = delete;
  Rendezvous& operator=(const Rendezvous&) = delete;

  int rank() const { return opt_.rank; }
  int world_size() const { return opt_.world_size; }

  // Fixed-size broadcast from rank 0: rank 0's `bytes` bytes at `data` overwrite every other
  // rank's buffer (e.g. the 128-byte ncclUniqueId). A rank passing another size gets CommError.
  void broadcast(void* data, size_t bytes, const std::string& what);
  // Variable-size broadcast from rank 0 (a verdict message); every rank returns rank 0's string.
  std::string broadcast(const std::string& data, const std::string& what);
  // Each rank's bytes (std::string as a byte buffer) to rank 0: rank 0 returns world_size entries
  // indexed by rank (its own included); other ranks return an empty vector.
  std::vector<std::string> gather(const std::string& data, const std::string& what);
  // Every rank waits until all ranks have arrived (gather, then broadcast).
  void barrier(const std::string& what);
  // In place, element-wise over every rank's `n` values: the sum, or the mean (sum / world_size).
  // Rank 0 adds the ranks' values in rank order in float64 and sends the result back, so every
  // rank ends with the same bits and a rerun gives them again. Sent in frames under the frame limit.
  enum class Reduce { Sum, Mean };
  void all_reduce(float* data, size_t n, Reduce op, const std::string& what);
  void all_reduce(double* data, size_t n, Reduce op, const std::string& what);

 private:
  template <typename T> void all_reduce_impl(T* data, size_t n, Reduce op, const std::string& what);
  void connect_to_root();
  void accept_peers();
  [[noreturn]] void fail(int peer, const std::string& what, const std::string& reason) const;

  RendezvousOptions opt_;
  std::vector<int> fds_;            // rank 0: socket of each peer rank (fds_[0] unused); else fds_[0]
  std::vector<std::string> addrs_;  // printable peer address per fd, for messages
};

// A TCP port that was free on 127.0.0.1 a moment ago (bind port 0, read it back, close). Another
// process can take it before it is bound again; callers accept that small race.
int find_free_port();

}  // namespace s6::trainer
