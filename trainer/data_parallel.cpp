// Data parallelism. On CUDA, NCCL collectives run on their own stream, ordered after the compute
// stream by events; completion is polled with a deadline so a dead peer aborts the communicator
// instead of hanging every other rank. On the CPU the rendezvous's TCP star reduces (each call
// bounded by its deadline; a dead peer's closed socket ends it at once). Gradients are averaged
// in buckets launched during backward.
#include "trainer/data_parallel.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "core/cuda_runtime.h"
#include "core/log.h"
#include "trainer/dist/agreement.h"
#include "trainer/dist/rendezvous.h"
#include "trainer/dist/watchdog.h"

#if defined(S6_WITH_CUDA) && defined(S6_WITH_NCCL)
#include <cuda_runtime.h>
#include <nccl.h>
#define S6_HAVE_NCCL_RUNTIME 1
#endif

namespace s6::trainer {

// The bucket layout of one parameter list, and how far the current step has got. Each bucket's
// gradients are reduced in place by one grouped ncclAllReduce per bucket (NCCL fuses the group into
// few kernels) rather than copied into a flat buffer: no extra memory, no copies in and out, and no
// temporary whose lifetime would have to be tied to the communicator stream.
struct DataParallel::Reducer {
  std::vector<Tensor> params;  // the model's leaves (copies share their autograd meta and .grad)
  std::vector<std::string> names;
  double bucket_mb = 0;
  std::unordered_map<const AutogradMeta*, int64_t> index;  // leaf identity -> parameter
  std::unique_ptr<BucketSchedule> schedule;
  bool active = false;  // between start and finish

  Reducer(const std::vector<NamedParameter>& ps, double mb) : bucket_mb(mb) {
    S6_CHECK(mb > 0, "gradient averaging: bucket size must be positive, got {} MB", mb);
    std::vector<int64_t> bytes;
    for (size_t i = 0; i < ps.size(); ++i) {
      const Tensor& t = ps[i].tensor;
      S6_CHECK(t.defined() && t.autograd_meta() && t.requires_grad(),
               "gradient averaging: parameter {} is not a leaf that requires grad", ps[i].name);
      params.push_back(t);
      names.push_back(ps[i].name);
      bytes.push_back(t.numel() * dtype_size(t.dtype()));
      S6_CHECK(index.emplace(t.autograd_meta().get(), static_cast<int64_t>(i)).second,
               "gradient averaging: parameter {} is listed twice", ps[i].name);
    }
    schedule = std::make_unique<BucketSchedule>(assign_gradient_buckets(bytes, static_cast<int64_t>(mb * 1e6)),
                                                static_cast<int64_t>(params.size()));
  }

  bool same_layout(const std::vector<NamedParameter>& ps, double mb) const {
    if (mb != bucket_mb || ps.size() != params.size()) return false;
    for (size_t i = 0; i < ps.size(); ++i)
      if (ps[i].tensor.autograd_meta() != params[i].autograd_meta()) return false;
    return true;
  }
};

void DataParallel::set_bucket_mb(double mb) {
  S6_CHECK(mb > 0, "gradient averaging: bucket size must be positive, got {} MB", mb);
  bucket_mb_ = mb;
}

autograd::LeafReadyFn DataParallel::start_gradient_averaging(std::vector<NamedParameter>& params) {
  // A step abandoned half-way would leave this rank's collectives out of step with its peers'.
  S6_CHECK(!reducer_ || !reducer_->active,
           "start_gradient_averaging: the previous step's averaging was never finished (rank {})", env_.rank);
  if (!reducer_ || !reducer_->same_layout(params, bucket_mb_)) {
    reducer_ = std::make_unique<Reducer>(params, bucket_mb_);
    if (env_.rank == 0)
      log::info("gradient averaging: {} parameters in {} bucket(s) of up to {} MB", params.size(),
                reducer_->schedule->buckets().size(), bucket_mb_);
  }
  reducer_->schedule->begin_step();
  reducer_->active = true;
  return [this](const AutogradMeta& leaf) { mark_ready(leaf); };
}

void DataParallel::mark_ready(const AutogradMeta& leaf) {
  Reducer& r = *reducer_;
  if (!r.active) return;
  auto it = r.index.find(&leaf);
  if (it == r.index.end()) return;  // a leaf that is not one of the parameters (an input, say)
  for (int64_t b : r.schedule->mark_ready(it->second)) launch_bucket(static_cast<size_t>(b));
}

void DataParallel::finish_gradient_averaging() {
  S6_CHECK(reducer_ && reducer_->active,
           "finish_gradient_averaging: no step was started with start_gradient_averaging (rank {})", env_.rank);
  Reducer& r = *reducer_;
  r.active = false;
  for (int64_t b : r.schedule->take_rest()) {
    for (int64_t p : r.schedule->buckets()[static_cast<size_t>(b)].params) {  // every rank reduces every
      Tensor& t = r.params[static_cast<size_t>(p)];                           // parameter, reached or not
      if (!t.grad().defined()) t.set_grad(Tensor::zeros_like(t));
    }
    launch_bucket(static_cast<size_t>(b));
  }
  if (nccl_) nccl_wait("gradient all-reduce", cuda::current_stream());  // the CPU's reductions are done
}

void DataParallel::average_gradients(std::vector<NamedParameter>& params) {
  start_gradient_averaging(params);
  finish_gradient_averaging();  // launches every bucket now, in order
}

const std::vector<GradientBucket>& DataParallel::gradient_buckets() const {
  static const std::vector<GradientBucket> none;
  return reducer_ ? reducer_->schedule->buckets() : none;
}

DataParallel::DataParallel(const LaunchEnv& env, std::chrono::milliseconds timeout, Device device)
    : env_(env), device_(device), timeout_(timeout) {
  if (device == Device::CUDA) {
    S6_CHECK(cuda::available(), "data parallelism needs a CUDA device on every rank (rank {})", env.rank);
    cuda::set_device(env.local_rank);
  }
  rendezvous_ = std::make_unique<Rendezvous>(rendezvous_options(env, timeout));
  if (device == Device::CUDA) init_nccl();
}

void DataParallel::launch_bucket(size_t b) {
  const Reducer& r = *reducer_;
  const GradientBucket& bucket = r.schedule->buckets()[b];
  for (int64_t p : bucket.params) {  // checked before any collective starts, so a throw leaves none open
    Tensor g = r.params[static_cast<size_t>(p)].grad();
    S6_CHECK(g.defined() && g.device() == device_ && g.dtype() == DType::Float32 && g.is_contiguous(),
             "gradient averaging: gradient of {} is {}, expected contiguous float32 on {}", r.names[p],
             g.defined() ? g.describe() : std::string("undefined"),
             device_ == Device::CUDA ? "CUDA" : "the CPU");
  }
  if (nccl_) {
    nccl_launch_bucket(b);
    return;
  }
  // CPU: the bucket's gradients packed into one buffer, so a bucket costs one round trip.
  std::vector<float> packed;
  for (int64_t p : bucket.params) {
    Tensor g = r.params[static_cast<size_t>(p)].grad();
    packed.insert(packed.end(), g.data<float>(), g.data<float>() + g.numel());
  }
  rendezvous_->all_reduce(packed.data(), packed.size(), Rendezvous::Reduce::Mean, "gradient all-reduce");
  size_t offset = 0;
  for (int64_t p : bucket.params) {
    Tensor g = r.params[static_cast<size_t>(p)].grad();
    std::copy(packed.begin() + offset, packed.begin() + offset + g.numel(), g.data<float>());
    offset += static_cast<size_t>(g.numel());
  }
}

void DataParallel::sum(std::vector<double>& values) {
  if (values.empty()) return;
  if (nccl_) nccl_sum(values);
  else rendezvous_->all_reduce(values.data(), values.size(), Rendezvous::Reduce::Sum, "value all-reduce");
}

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

void DataParallel::init_nccl() {
  nccl_ = std::make_unique<Nccl>();
  ncclUniqueId id;
  std::memset(&id, 0, sizeof(id));
  if (env_.rank == 0) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", env_.rank);
  rendezvous_->broadcast(&id, sizeof(id), "NCCL unique id");
  cuda_check(cudaStreamCreateWithFlags(&nccl_->stream, cudaStreamNonBlocking), "comm stream");
  cuda_check(cudaEventCreateWithFlags(&nccl_->ready, cudaEventDisableTiming), "comm event");
  cuda_check(cudaEventCreateWithFlags(&nccl_->done, cudaEventDisableTiming), "comm event");
  // Blocking init: the rendezvous has just seen every peer alive, and a blocking communicator
  // keeps enqueueing simple (collectives return once enqueued; completion is polled below).
  nccl_check(ncclCommInitRank(&nccl_->comm, env_.world_size, id, env_.rank), "ncclCommInitRank", env_.rank);
}

DataParallel::~DataParallel() {
  if (!nccl_) return;
  if (nccl_->comm) ncclCommDestroy(nccl_->comm);
  if (nccl_->ready) cudaEventDestroy(nccl_->ready);
  if (nccl_->done) cudaEventDestroy(nccl_->done);
  if (nccl_->stream) cudaStreamDestroy(nccl_->stream);
}

void DataParallel::nccl_wait(const std::string& what, void* compute_stream) {
  cuda_check(cudaEventRecord(nccl_->done, nccl_->stream), "record comm event");
  poll_with_timeout(
      what, env_.rank, timeout_,
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

// Launches bucket b: the communicator stream waits for what the compute stream has queued so far
// (which includes the kernels that produced these gradients), then reduces them in place.
void DataParallel::nccl_launch_bucket(size_t b) {
  const Reducer& r = *reducer_;
  const GradientBucket& bucket = r.schedule->buckets()[b];
  cuda_check(cudaEventRecord(nccl_->ready, static_cast<cudaStream_t>(cuda::current_stream())),
             "record compute event");
  cuda_check(cudaStreamWaitEvent(nccl_->stream, nccl_->ready, 0), "order comm after compute");
  nccl_check(ncclGroupStart(), "ncclGroupStart", env_.rank);
  for (int64_t p : bucket.params) {
    Tensor g = r.params[static_cast<size_t>(p)].grad();
    nccl_check(ncclAllReduce(g.data_ptr(), g.data_ptr(), static_cast<size_t>(g.numel()), ncclFloat32, ncclAvg,
                             nccl_->comm, nccl_->stream),
               "ncclAllReduce (gradients)", env_.rank);
  }
  nccl_check(ncclGroupEnd(), "ncclGroupEnd", env_.rank);
}

void DataParallel::nccl_sum(std::vector<double>& values) {
  void* compute = cuda::current_stream();
  Tensor buf = Tensor::from_vector(values, {static_cast<int64_t>(values.size())}, Device::CUDA);
  cuda_check(cudaEventRecord(nccl_->ready, static_cast<cudaStream_t>(compute)), "record compute event");
  cuda_check(cudaStreamWaitEvent(nccl_->stream, nccl_->ready, 0), "order comm after compute");
  nccl_check(ncclAllReduce(buf.data_ptr(), buf.data_ptr(), values.size(), ncclFloat64, ncclSum, nccl_->comm,
                           nccl_->stream),
             "ncclAllReduce (values)", env_.rank);
  nccl_wait("value all-reduce", compute);
  values = buf.to_vector<double>();
}

#else  // no NCCL in this build: the CPU backend only

struct DataParallel::Nccl {};

void DataParallel::init_nccl() {
  throw CommError(
      fmt::format("rank {}: data parallelism on CUDA needs a build with NCCL; this one has none "
                  "(use device=cpu, or launch a single process)",
                  env_.rank));
}
DataParallel::~DataParallel() = default;
void DataParallel::nccl_wait(const std::string&, void*) {}
void DataParallel::nccl_launch_bucket(size_t) {}
void DataParallel::nccl_sum(std::vector<double>&) {}

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
