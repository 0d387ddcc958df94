// TCP rendezvous: non-blocking sockets and poll() with one deadline per operation, so a dead or
// silent peer turns into a CommError naming it instead of a hang.
#include "trainer/dist/rendezvous.h"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

namespace s6::trainer {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr const char* kTimedOut = "timed out";
constexpr const char* kMagic = "s6-rendezvous-v1";
constexpr uint64_t kMaxFrame = 1 << 20;  // startup messages are tiny; refuses garbage lengths

int ms_left(Clock::time_point deadline) {
  auto ms = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, INT_MAX));
}

// "" once fd is ready for `events`, else why not. POLLERR/POLLHUP count as ready: the following
// recv/send reports the actual error.
std::string wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r > 0) return "";
    if (r == 0) return kTimedOut;
    if (errno != EINTR) return std::strerror(errno);
  }
}

std::string send_all(int fd, const char* p, size_t n, Clock::time_point deadline) {
  while (n > 0) {
    // MSG_NOSIGNAL: a peer that died must give EPIPE here, not kill this process with SIGPIPE.
    ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k < 0 && errno == EINTR) continue;
    if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return std::strerror(errno);
    std::string w = wait_fd(fd, POLLOUT, deadline);
    if (!w.empty()) return w;
  }
  return "";
}

std::string recv_all(int fd, char* p, size_t n, Clock::time_point deadline) {
  while (n > 0) {
    ssize_t k = ::recv(fd, p, n, 0);
    if (k > 0) {
      p += k;
      n -= static_cast<size_t>(k);
      continue;
    }
    if (k == 0) return "connection closed by the peer (did that process exit?)";
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return std::strerror(errno);
    std::string w = wait_fd(fd, POLLIN, deadline);
    if (!w.empty()) return w;
  }
  return "";
}

// A frame is an 8-byte little-endian length and the payload (explicit byte order: ranks on
// different hosts need not share the native one).
std::string send_frame(int fd, const std::string& data, Clock::time_point deadline) {
  char len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<char>((uint64_t{data.size()} >> (8 * i)) & 0xff);
  std::string r = send_all(fd, len, 8, deadline);
  return r.empty() ? send_all(fd, data.data(), data.size(), deadline) : r;
}

std::string recv_frame(int fd, std::string& out, Clock::time_point deadline) {
  unsigned char len[8];
  std::string r = recv_all(fd, reinterpret_cast<char*>(len), 8, deadline);
  if (!r.empty()) return r;
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t{len[i]} << (8 * i);
  if (n > kMaxFrame) return fmt::format("peer sent a frame of {} bytes (not an s6 rank?)", n);
  out.assign(n, '\0');
  return recv_all(fd, out.data(), n, deadline);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

std::string seconds(milliseconds d) { return fmt::format("{:g} s", d.count() / 1000.0); }

}  // namespace

RendezvousOptions rendezvous_options(const LaunchEnv& env, std::chrono::milliseconds timeout) {
  RendezvousOptions o;
  o.master_addr = env.master_addr;
  o.master_port = env.master_port;
  o.rank = env.rank;
  o.world_size = env.world_size;
  o.timeout = timeout;
  return o;
}

Rendezvous::Rendezvous(const RendezvousOptions& options) : opt_(options) {
  S6_CHECK(opt_.world_size >= 1 && opt_.rank >= 0 && opt_.rank < opt_.world_size,
           "rendezvous: rank {} of world size {} is out of range", opt_.rank, opt_.world_size);
  if (opt_.world_size == 1) return;
  fds_.assign(opt_.rank == 0 ? opt_.world_size : 1, -1);
  addrs_.assign(fds_.size(), fmt::format("{}:{}", opt_.master_addr, opt_.master_port));
  try {
    if (opt_.rank == 0) accept_peers();
    else connect_to_root();
  } catch (...) {
    for (int& fd : fds_) close_fd(fd);  // the destructor does not run after a throwing constructor
    throw;
  }
}

Rendezvous::~Rendezvous() {
  for (int& fd : fds_) close_fd(fd);
}

void Rendezvous::fail(int peer, const std::string& what, const std::string& reason) const {
  std::string why = reason == kTimedOut ? fmt::format("timed out after {}", seconds(opt_.timeout)) : reason;
  const std::string& addr = opt_.rank == 0 ? addrs_.at(peer) : addrs_.at(0);
  throw CommError(fmt::format("rank {}: {} with rank {} ({}): {}", opt_.rank, what, peer, addr, why));
}

void Rendezvous::connect_to_root() {
  const auto deadline = Clock::now() + opt_.timeout;
  const std::string port = std::to_string(opt_.master_port);
  std::string last = "no attempt made";
  int& fd = fds_[0];
  // Rank 0 may not be listening yet (it starts later, or is still loading): retry refused
  // connections and failed name lookups until the deadline, with a short pause between tries.
  while (fd < 0) {
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int g = ::getaddrinfo(opt_.master_addr.c_str(), port.c_str(), &hints, &res);
    if (g != 0) last = fmt::format("cannot resolve '{}': {}", opt_.master_addr, gai_strerror(g));
    for (addrinfo* a = g == 0 ? res : nullptr; a && fd < 0; a = a->ai_next) {
      int s = ::socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (s < 0) {
        last = std::strerror(errno);
        continue;
      }
      int err = ::connect(s, a->ai_addr, a->ai_addrlen) == 0 ? 0 : errno;
      if (err == EINPROGRESS) {
        std::string w = wait_fd(s, POLLOUT, deadline);
        socklen_t len = sizeof err;
        if (w.empty()) ::getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len);
        else {
          err = -1;
          last = w;
        }
      }
      if (err == 0) fd = s;
      else {
        if (err > 0) last = std::strerror(err);
        ::close(s);
      }
    }
    if (res) ::freeaddrinfo(res);
    if (fd >= 0) break;
    if (ms_left(deadline) == 0)
      fail(0, "connect", fmt::format("timed out after {} (last error: {})", seconds(opt_.timeout), last));
    std::this_thread::sleep_for(milliseconds(std::min(100, ms_left(deadline))));
  }
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small messages, no batching delay
  std::string r = send_frame(fd, fmt::format("{} {} {}", kMagic, opt_.rank, opt_.world_size), deadline);
  if (!r.empty()) fail(0, "handshake", r);
  std::string verdict;
  r = recv_frame(fd, verdict, deadline);
  if (!r.empty()) fail(0, "handshake", r);
  if (!verdict.empty())
    throw CommError(fmt::format("rank {}: rank 0 refused the rendezvous: {}", opt_.rank, verdict));
}

void Rendezvous::accept_peers() {
  const auto deadline = Clock::now() + opt_.timeout;
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  S6_CHECK(lfd >= 0, "rank 0: socket(): {}", std::strerror(errno));
  struct Guard {
    int& fd;
    ~Guard() { close_fd(fd); }
  } guard{lfd};
  int one = 1;
  // SO_REUSEADDR: a previous run's connections in TIME_WAIT must not block this port.
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_ANY);
  sa.sin_port = htons(static_cast<uint16_t>(opt_.master_port));
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, opt_.world_size + 16) != 0)
    throw CommError(
        fmt::format("rank 0: cannot listen on port {}: {} (another job on this port? set "
                    "MASTER_PORT, or S6_RENDEZVOUS_PORT under torchrun)",
                    opt_.master_port, std::strerror(errno)));
  int connected = 0;
  auto refuse = [&](const std::string& why) {
    for (int fd : fds_)
      if (fd >= 0) send_frame(fd, why, deadline);
    throw CommError("rank 0: rendezvous failed: " + why);
  };
  while (connected < opt_.world_size - 1) {
    if (!wait_fd(lfd, POLLIN, deadline).empty()) {
      std::vector<std::string> missing;
      for (int r = 1; r < opt_.world_size; ++r)
        if (fds_[r] < 0) missing.push_back(std::to_string(r));
      throw CommError(fmt::format("rank 0: waiting for rank(s) {} to connect on port {}: timed out after {}",
                                  fmt::join(missing, ", "), opt_.master_port, seconds(opt_.timeout)));
    }
    sockaddr_in peer{};
    socklen_t len = sizeof peer;
    int fd = ::accept4(lfd, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;  // EAGAIN, EINTR, ECONNABORTED: the next poll decides
    char ip[INET_ADDRSTRLEN] = "?";
    ::inet_ntop(AF_INET, &peer.sin_addr, ip, sizeof ip);
    std::string addr = fmt::format("{}:{}", ip, ntohs(peer.sin_port)), hello;
    char magic[32] = "";
    int rank = -1, world = -1;
    // A connection that is not an s6 rank (a port scanner, a health check) is dropped, not fatal;
    // a real rank sends its hello right after connecting, so a silent one gets at most 10 s.
    if (!recv_frame(fd, hello, std::min(deadline, Clock::now() + std::chrono::seconds(10))).empty() ||
        std::sscanf(hello.c_str(), "%31s %d %d", magic, &rank, &world) != 3 ||
        std::strcmp(magic, kMagic) != 0) {
      ::close(fd);
      continue;
    }
    int one_nd = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one_nd, sizeof one_nd);
    std::string why;
    if (world != opt_.world_size)
      why = fmt::format("rank {} ({}) has world size {}, rank 0 has {}", rank, addr, world, opt_.world_size);
    else if (rank < 1 || rank >= opt_.world_size)
      why = fmt::format("a peer at {} claims rank {}, outside 1..{}", addr, rank, opt_.world_size - 1);
    else if (fds_[rank] >= 0)
      why = fmt::format("rank {} connected twice (from {} and {})", rank, addrs_[rank], addr);
    if (!why.empty()) {
      send_frame(fd, why, deadline);
      ::close(fd);
      refuse(why);
    }
    fds_[rank] = fd;
    addrs_[rank] = addr;
    ++connected;
  }
  for (int r = 1; r < opt_.world_size; ++r) {
    std::string e = send_frame(fds_[r], "", deadline);
    if (!e.empty()) fail(r, "handshake", e);
  }
}

void Rendezvous::broadcast(void* data, size_t bytes, const std::string& what) {
  std::string got = broadcast(std::string(static_cast<const char*>(data), bytes), what);
  if (got.size() != bytes)
    fail(0, "broadcast '" + what + "'",
         fmt::format("rank 0 sent {} bytes, this rank expected {}", got.size(), bytes));
  std::memcpy(data, got.data(), bytes);
}

std::string Rendezvous::broadcast(const std::string& data, const std::string& what) {
  if (opt_.world_size == 1) return data;
  const auto deadline = Clock::now() + opt_.timeout;
  if (opt_.rank == 0) {
    for (int r = 1; r < opt_.world_size; ++r) {
      std::string e = send_frame(fds_[r], data, deadline);
      if (!e.empty()) fail(r, "broadcast '" + what + "'", e);
    }
    return data;
  }
  std::string got;
  std::string e = recv_frame(fds_[0], got, deadline);
  if (!e.empty()) fail(0, "broadcast '" + what + "'", e);
  return got;
}

std::vector<std::string> Rendezvous::gather(const std::string& data, const std::string& what) {
  if (opt_.world_size == 1) return {data};
  const auto deadline = Clock::now() + opt_.timeout;
  if (opt_.rank != 0) {
    std::string e = send_frame(fds_[0], data, deadline);
    if (!e.empty()) fail(0, "gather '" + what + "'", e);
    return {};
  }
  std::vector<std::string> all(opt_.world_size);
  all[0] = data;
  // One deadline for the whole gather: reading the ranks in order still bounds the total time,
  // and each peer sends without waiting for the others.
  for (int r = 1; r < opt_.world_size; ++r) {
    std::string e = recv_frame(fds_[r], all[r], deadline);
    if (!e.empty()) fail(r, "gather '" + what + "'", e);
  }
  return all;
}

void Rendezvous::barrier(const std::string& what) {
  gather("", what);
  broadcast(std::string(), what);
}

template <typename T> void Rendezvous::all_reduce_impl(T* data, size_t n, Reduce op, const std::string& what) {
  if (opt_.world_size == 1 || n == 0) return;  // a mean over one rank is the value itself
  const size_t chunk = kMaxFrame / sizeof(T);
  std::vector<double> acc;
  for (size_t start = 0; start < n; start += chunk) {
    const size_t count = std::min(chunk, n - start);
    T* part = data + start;
    std::vector<std::string> all = gather(std::string(reinterpret_cast<const char*>(part), count * sizeof(T)),
                                          what);
    if (opt_.rank == 0) {
      acc.assign(count, 0.0);
      for (int r = 0; r < opt_.world_size; ++r) {
        if (all[r].size() != count * sizeof(T))
          fail(r, "all-reduce '" + what + "'",
               fmt::format("sent {} bytes where rank 0 expected {}", all[r].size(), count * sizeof(T)));
        const char* bytes = all[r].data();
        for (size_t i = 0; i < count; ++i) {
          T v;
          std::memcpy(&v, bytes + i * sizeof(T), sizeof(T));  // the frame's bytes need not be aligned
          acc[i] += static_cast<double>(v);
        }
      }
      const double divisor = op == Reduce::Mean ? static_cast<double>(opt_.world_size) : 1.0;
      for (size_t i = 0; i < count; ++i) part[i] = static_cast<T>(acc[i] / divisor);
    }
    broadcast(part, count * sizeof(T), what);
  }
}

void Rendezvous::all_reduce(float* data, size_t n, Reduce op, const std::string& what) {
  all_reduce_impl(data, n, op, what);
}

void Rendezvous::all_reduce(double* data, size_t n, Reduce op, const std::string& what) {
  all_reduce_impl(data, n, op, what);
}

int find_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  S6_CHECK(fd >= 0, "find_free_port: socket(): {}", std::strerror(errno));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 &&
            ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  int err = errno;
  ::close(fd);
  S6_CHECK(ok, "find_free_port: bind to 127.0.0.1:0: {}", std::strerror(err));
  return ntohs(sa.sin_port);
}

}  // namespace s6::trainer
