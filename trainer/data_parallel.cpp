// NCCL data parallelism. Collectives run on their own stream, ordered after the compute stream by
// events; completion is polled with a deadline so a dead peer aborts the communicator instead of
// hanging every other rank.
#include "trainer/data_parallel.h"

#include <fmt/format.h>

#include <cstring>

#include "core/cuda_runtime.h"
#include "trainer/distributed_agreement.h"
#include "trainer/distributed_rendezvous.h"
#include "trainer/distributed_watchdog.h"

#if defined(S6_WITH_CUDA) && defined(S6_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#define S6_HAVE_NCCL_RUNTIME 1
#endif

namespace s6::trainer {

#ifdef S6_HAVE_NCCL_RUNTIME

namespace {
void nccl_check(ncclResult_t r, const char* what, int rank) {
  if (r != ncclSuccess)
    throw CommError(fmt::format("rank {}: {} failed: {}", rank, what, ncclGetErrorString(r)));
}
void cuda_check(cudaError_t e, const char* what) {
  S6_CHECK(e == cudaSuccess, "{}: {}", what, cudaGetErrorString(e));
}
}  // namespace

struct DataParallel::Nccl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr, done = nullptr;
};

DataParallel::DataParallel(const LaunchEnv& env, std::chrono::milliseconds timeout)
    : env_(env), timeout_(timeout), nccl_(std::make_unique<Nccl>()) {
  S6_CHECK(cuda::available(), "data parallelism needs a CUDA device on every rank (rank {})", env.rank);
  cuda::set_device(env.local_rank);
  rendezvous_ = std::make_unique<Rendezvous>(rendezvous_options(env, timeout));
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (env.rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", env.rank);
  rendezvous_->broadcast(&id, sizeof(id), "NCCL unique id");
  cuda_check(cudaStreamCreateWithFlags(&nccl_->stream, cudaStreamNonBlocking), "comm stream");
  cuda_check(cudaEventCreateWithFlags(&nccl_->ready, cudaEventDisableTiming), "comm event");
  cuda_check(cudaEventCreateWithFlags(&nccl_->done, cudaEventDisableTiming), "comm event");
  // Blocking init: the rendezvous has just seen every peer alive, and a blocking communicator
  // keeps enqueueing simple (collectives return once enqueued; completion is polled below).
  nccl_check(ncclCommInitRank(&nccl_->comm, env.world_size, id, env.rank), "ncclCommInitRank", env.rank);
}

DataParallel::~DataParallel() {
  if (!nccl_) return;
  if (nccl_->comm) ncclCommDestroy(nccl_->comm);
  if (nccl_->ready) cudaEventDestroy(nccl_->ready);
  if (nccl_->done) cudaEventDestroy(nccl_->done);
  if (nccl_->stream) cudaStreamDestroy(nccl_->stream);
}

void DataParallel::wait(const std::string& what, void* compute_stream) {
  cuda_check(cudaEventRecord(nccl_->done, nccl_->stream), "record comm event");
  poll_with_timeout(what, env_.rank, timeout_,
                    [&] {
                      ncclResult_t state;
                      nccl_check(ncclCommGetAsyncError(nccl_->comm, &state), what.c_str(), env_.rank);
                      cudaError_t e = cudaEventQuery(nccl_->done);
                      if (e == cudaErrorNotReady) return false;
                      cuda_check(e, what.c_str());
                      return true;
                    },
                    [&] { ncclCommAbort(nccl_->comm); });
  cuda_check(cudaStreamWaitEvent(static_cast<cudaStream_t>(compute_stream), nccl_->done, 0), "join streams");
}

void DataParallel::average_gradients(std::vector<NamedParameter>& params) {
  void* compute = cuda::current_stream();
  for (NamedParameter& p : params)  // every rank reduces every parameter, reached or not
    if (!p.tensor.grad().defined()) p.tensor.set_grad(Tensor::zeros_like(p.tensor));
  cuda_check(cudaEventRecord(nccl_->ready, static_cast<cudaStream_t>(compute)), "record compute event");
  cuda_check(cudaStreamWaitEvent(nccl_->stream, nccl_->ready, 0), "order comm after compute");
  nccl_check(ncclGroupStart(), "ncclGroupStart", env_.rank);
  for (NamedParameter& p : params) {
    Tensor g = p.tensor.grad();
    S6_CHECK(g.is_cuda() && g.dtype() == DType::Float32 && g.is_contiguous(),
             "average_gradients: gradient of {} is {}, expected contiguous float32 on CUDA", p.name, g.describe());
    nccl_check(ncclAllReduce(g.data_ptr(), g.data_ptr(), static_cast<size_t>(g.numel()), ncclFloat32, ncclAvg,
                             nccl_->comm, nccl_->stream),
               "ncclAllReduce (gradients)", env_.rank);
  }
  nccl_check(ncclGroupEnd(), "ncclGroupEnd", env_.rank);
  wait("gradient all-reduce", compute);
}

void DataParallel::sum(std::vector<double>& values) {
  if (values.empty()) return;
  void* compute = cuda::current_stream();
  Tensor buf = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}, Device::CUDA);
  cuda_check(cudaEventRecord(nccl_->ready, static_cast<cudaStream_t>(compute)), "record compute event");
  cuda_check(cudaStreamWaitEvent(nccl_->stream, nccl_->ready, 0), "order comm after compute");
  nccl_check(ncclAllReduce(buf.data_ptr(), buf.data_ptr(), values.size(), ncclFloat64, ncclSum, nccl_->comm,
                           nccl_->stream),
             "ncclAllReduce (values)", env_.rank);
  wait("value all-reduce", compute);
  values = buf.to_vector<double>();
}

#else  // no NCCL in this build

struct DataParallel::Nccl {};

DataParallel::DataParallel(const LaunchEnv& env, std::chrono::milliseconds timeout) : env_(env), timeout_(timeout) {
  throw CommError(fmt::format("rank {}: data parallelism needs a build with CUDA and NCCL; this one has none "
                              "(launch a single process instead)",
                              env.rank));
}
DataParallel::~DataParallel() = default;
void DataParallel::wait(const std::string&, void*) {}
void DataParallel::average_gradients(std::vector<NamedParameter>&) {}
void DataParallel::sum(std::vector<double>&) {}

#endif

void DataParallel::check_agreement(const std::string& resolved_config_yaml, int64_t resume_step) {
  StartupRecord mine;
  mine.config_hash = fnv1a64(resolved_config_yaml);
  mine.world_size = env_.world_size;
  mine.resume_step = resume_step;
  check_startup_agreement(*rendezvous_, mine);
}

void DataParallel::barrier(const std::string& what) { rendezvous_->barrier(what); }

}  // namespace s6::trainer
