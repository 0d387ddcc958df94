// HDF5 checkpoint writing (atomic) and reading (verified by a FNV-1a checksum per dataset).
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>

#ifndef S6_VERSION
#define S6_VERSION "unknown"
#endif

namespace s6::trainer {

namespace fs = std::filesystem;

namespace {

uint64_t fnv1a64(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// RAII for HDF5 ids: each id type has its own close function.
struct H5Id {
  hid_t id;
  herr_t (*close)(hid_t);
  H5Id(hid_t i, herr_t (*c)(hid_t)) : id(i), close(c) {}
  ~H5Id() {
    if (id >= 0) close(id);
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  operator hid_t() const { return id; }
};

[[noreturn]] void fail(const std::string& msg) { throw CheckpointError(msg); }

void write_attr_i64(hid_t obj, const char* name, int64_t v, const std::string& file) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, &v) < 0) fail(fmt::format("{}: cannot write attribute {}", file, name));
}

void write_attr_u64(hid_t obj, const char* name, uint64_t v, const std::string& file) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attr < 0 || H5Awrite(attr, H5T_NATIVE_UINT64, &v) < 0) fail(fmt::format("{}: cannot write attribute {}", file, name));
}

void write_attr_str(hid_t obj, const char* name, const std::string& v, const std::string& file) {
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  const char* p = v.c_str();
  if (attr < 0 || H5Awrite(attr, type, &p) < 0) fail(fmt::format("{}: cannot write attribute {}", file, name));
}

int64_t read_attr_i64(hid_t obj, const char* name, const std::string& file) {
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  int64_t v = 0;
  if (attr < 0 || H5Aread(attr, H5T_NATIVE_INT64, &v) < 0) fail(fmt::format("{}: attribute {} is missing or unreadable", file, name));
  return v;
}

uint64_t read_attr_u64(hid_t obj, const char* name, const std::string& where) {
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  uint64_t v = 0;
  if (attr < 0 || H5Aread(attr, H5T_NATIVE_UINT64, &v) < 0) fail(fmt::format("{}: attribute {} is missing or unreadable", where, name));
  return v;
}

std::string read_attr_str(hid_t obj, const char* name, const std::string& file) {
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (attr < 0) fail(fmt::format("{}: attribute {} is missing", file, name));
  H5Id type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  char* p = nullptr;
  if (H5Aread(attr, type, &p) < 0 || !p) fail(fmt::format("{}: attribute {} is unreadable", file, name));
  std::string s(p);
  H5free_memory(p);
  return s;
}

void write_dataset(hid_t group, const std::string& name, const Tensor& t, const std::string& file) {
  Tensor host = t.detach().to(Device::CPU).to(DType::Float32).contiguous();
  std::vector<hsize_t> dims(host.shape().begin(), host.shape().end());
  H5Id space(dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
             H5Sclose);
  H5Id ds(H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, host.data_ptr()) < 0)
    fail(fmt::format("{}: cannot write dataset {}", file, name));
  write_attr_u64(ds, "fnv1a64", fnv1a64(host.data_ptr(), static_cast<size_t>(host.nbytes())), file);
}

void write_group(hid_t file_id, const char* path, const std::map<std::string, Tensor>& tensors,
                 const std::string& file) {
  H5Id group(H5Gcreate2(file_id, path, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
  if (group < 0) fail(fmt::format("{}: cannot create group {}", file, path));
  for (const auto& [name, t] : tensors) write_dataset(group, name, t, file);
}

std::map<std::string, Tensor> read_group(hid_t file_id, const char* path, const std::string& file) {
  H5Id group(H5Gopen2(file_id, path, H5P_DEFAULT), H5Gclose);
  if (group < 0) fail(fmt::format("{}: group {} is missing", file, path));
  H5G_info_t info;
  if (H5Gget_info(group, &info) < 0) fail(fmt::format("{}: group {} is unreadable", file, path));
  std::map<std::string, Tensor> out;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    char name[1024];
    if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof(name), H5P_DEFAULT) < 0)
      fail(fmt::format("{}: cannot list group {}", file, path));
    const std::string where = fmt::format("{}: dataset {}/{}", file, path, name);
    H5Id ds(H5Dopen2(group, name, H5P_DEFAULT), H5Dclose);
    if (ds < 0) fail(where + " cannot be opened");
    H5Id space(H5Dget_space(ds), H5Sclose);
    int rank = H5Sget_simple_extent_ndims(space);
    if (rank < 0) fail(where + " has an unreadable shape");
    std::vector<hsize_t> dims(static_cast<size_t>(rank));
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    Tensor t = Tensor::empty(Shape(dims.begin(), dims.end()), DType::Float32);
    if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
      fail(where + " cannot be read (truncated or corrupt file)");
    uint64_t stored = read_attr_u64(ds, "fnv1a64", where);
    if (stored != fnv1a64(t.data_ptr(), static_cast<size_t>(t.nbytes())))
      fail(where + " fails its checksum (the file is corrupt)");
    out[name] = t;
  }
  return out;
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) fail(fmt::format("cannot open {} to fsync: {}", path, std::strerror(errno)));
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) fail(fmt::format("fsync of {} failed: {}", path, std::strerror(errno)));
}

const std::regex& checkpoint_pattern() {
  static const std::regex re(R"(step_(\d{8})\.h5)");
  return re;
}

}  // namespace

std::string checkpoint_name(int64_t step) { return fmt::format("step_{:08d}.h5", step); }

void write_checkpoint(const std::string& path, const CheckpointContents& c) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const fs::path final_path(path);
  const std::string tmp = (final_path.parent_path() / ("." + final_path.filename().string() + ".tmp")).string();
  {
    H5Id file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (file < 0) fail(fmt::format("cannot create checkpoint file {}", tmp));
    write_group(file, "/model", c.model, path);
    if (const char* fault = std::getenv("S6_FAULT_INJECT"); fault && std::string(fault) == "kill_during_checkpoint")
      std::raise(SIGKILL);  // test hook: die with a half-written temp file
    H5Id opt(H5Gcreate2(file, "/optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    write_attr_i64(opt, "step", c.meta.optimizer_step, path);
    write_group(file, "/optimizer/exp_avg", c.exp_avg, path);
    write_group(file, "/optimizer/exp_avg_sq", c.exp_avg_sq, path);
    H5Id meta(H5Gcreate2(file, "/meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    write_attr_i64(meta, "format_version", kCheckpointFormatVersion, path);
    write_attr_i64(meta, "step", c.meta.step, path);
    write_attr_u64(meta, "seed", c.meta.seed, path);
    write_attr_i64(meta, "world_size", c.meta.world_size, path);
    write_attr_str(meta, "config", c.meta.config_yaml, path);
    write_attr_str(meta, "project_version", S6_VERSION, path);
    // Scheduler and data stream are pure functions of the step (and seed, rank): their state is
    // the next step index.
    write_attr_i64(meta, "schedule_step", c.meta.step, path);
    write_attr_i64(meta, "data_next_batch", c.meta.step, path);
    write_attr_i64(meta, "consecutive_skips", c.meta.consecutive_skips, path);
    H5Id shape(H5Gcreate2(meta, "model_shape", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    for (const auto& [key, value] : c.meta.model_shape) write_attr_str(shape, key.c_str(), value, path);
    if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail(fmt::format("cannot flush {}", tmp));
  }
  fsync_path(tmp, false);
  if (std::rename(tmp.c_str(), path.c_str()) != 0)
    fail(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  fsync_path(final_path.parent_path().empty() ? "." : final_path.parent_path().string(), true);
}

CheckpointContents read_checkpoint(const std::string& path, bool model_only) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!fs::exists(path)) fail(fmt::format("checkpoint {} does not exist", path));
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file < 0) fail(fmt::format("checkpoint {} cannot be opened as HDF5 (truncated or not a checkpoint)", path));
  CheckpointContents c;
  {
    H5Id meta(H5Gopen2(file, "/meta", H5P_DEFAULT), H5Gclose);
    if (meta < 0) fail(fmt::format("{}: group /meta is missing", path));
    int64_t version = read_attr_i64(meta, "format_version", path);
    if (version != kCheckpointFormatVersion)
      fail(fmt::format("{}: format version {} is not the supported {}", path, version, kCheckpointFormatVersion));
    c.meta.step = read_attr_i64(meta, "step", path);
    c.meta.seed = read_attr_u64(meta, "seed", path);
    c.meta.world_size = read_attr_i64(meta, "world_size", path);
    c.meta.config_yaml = read_attr_str(meta, "config", path);
    c.meta.consecutive_skips = read_attr_i64(meta, "consecutive_skips", path);
    H5Id shape(H5Gopen2(meta, "model_shape", H5P_DEFAULT), H5Gclose);
    if (shape < 0) fail(fmt::format("{}: group /meta/model_shape is missing", path));
    // H5Aiterate2 has one signature in HDF5 1.8 through 1.14 (H5Oget_info changed in 1.12).
    std::vector<std::string> names;
    auto collect = [](hid_t, const char* name, const H5A_info_t*, void* out) -> herr_t {
      static_cast<std::vector<std::string>*>(out)->push_back(name);
      return 0;
    };
    if (H5Aiterate2(shape, H5_INDEX_NAME, H5_ITER_INC, nullptr, collect, &names) < 0)
      fail(fmt::format("{}: /meta/model_shape is unreadable", path));
    for (const std::string& name : names) c.meta.model_shape[name] = read_attr_str(shape, name.c_str(), path);
  }
  c.model = read_group(file, "/model", path);
  if (!model_only) {
    H5Id opt(H5Gopen2(file, "/optimizer", H5P_DEFAULT), H5Gclose);
    if (opt < 0) fail(fmt::format("{}: group /optimizer is missing", path));
    c.meta.optimizer_step = read_attr_i64(opt, "step", path);
    c.exp_avg = read_group(file, "/optimizer/exp_avg", path);
    c.exp_avg_sq = read_group(file, "/optimizer/exp_avg_sq", path);
  }
  return c;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, checkpoint_pattern())) out.emplace_back(std::stoll(m[1]), entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

int remove_stale_temp_files(const std::string& dir) {
  int removed = 0;
  if (!fs::is_directory(dir)) return 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::string name = entry.path().filename().string();
    if (name.size() > 4 && name[0] == '.' && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      fs::remove(entry.path());
      ++removed;
    }
  }
  return removed;
}

void prune_checkpoints(const std::string& dir, int64_t keep_last, int64_t keep_every) {
  auto all = list_checkpoints(dir);
  const int64_t n = static_cast<int64_t>(all.size());
  for (int64_t i = 0; i < n; ++i) {
    bool recent = i >= n - std::max<int64_t>(keep_last, 1);
    bool milestone = keep_every > 0 && all[i].first % keep_every == 0;
    if (!recent && !milestone) fs::remove(all[i].second);
  }
}

}  // namespace s6::trainer
