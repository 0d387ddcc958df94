// HDF5 checkpoint writing (an in-memory HDF5 image, then one atomic POSIX write) and reading
// (verified by a FNV-1a checksum per dataset and one over /meta).
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <regex>

#include "trainer/fault_injection.h"

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

// Everything /meta holds, in one canonical text: its checksum covers every attribute.
std::string meta_text(const CheckpointMeta& m, int64_t schedule_step, int64_t data_next_batch) {
  std::string t = fmt::format(
      "step={}\nseed={}\nworld_size={}\nrun_id={}\nproject_version={}\nconsecutive_skips={}\n"
      "optimizer_step={}\nschedule_step={}\ndata_next_batch={}\nconfig={}\n",
      m.step, m.seed, m.world_size, m.run_id, m.project_version, m.consecutive_skips, m.optimizer_step,
      schedule_step, data_next_batch, m.config_yaml);
  for (const auto& [k, v] : m.model_shape) t += fmt::format("shape {}={}\n", k, v);
  return t;
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
  if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, &v) < 0)
    fail(fmt::format("{}: cannot write attribute {}", file, name));
}

void write_attr_u64(hid_t obj, const char* name, uint64_t v, const std::string& file) {
  H5Id space(H5Screate(H5S_SCALAR), H5Sclose);
  H5Id attr(H5Acreate2(obj, name, H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (attr < 0 || H5Awrite(attr, H5T_NATIVE_UINT64, &v) < 0)
    fail(fmt::format("{}: cannot write attribute {}", file, name));
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
  if (attr < 0 || H5Aread(attr, H5T_NATIVE_INT64, &v) < 0)
    fail(fmt::format("{}: attribute {} is missing or unreadable", file, name));
  return v;
}

uint64_t read_attr_u64(hid_t obj, const char* name, const std::string& where) {
  H5Id attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  uint64_t v = 0;
  if (attr < 0 || H5Aread(attr, H5T_NATIVE_UINT64, &v) < 0)
    fail(fmt::format("{}: attribute {} is missing or unreadable", where, name));
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
  H5Id space(dims.empty() ? H5Screate(H5S_SCALAR)
                          : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
             H5Sclose);
  H5Id ds(H5Dcreate2(group, name.c_str(), H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
          H5Dclose);
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

namespace {

// The whole file as an HDF5 image in memory (the core driver without a backing store): HDF5 never
// touches the disk, so a full disk cannot leave it with a half-closed file to crash on at exit.
std::vector<char> checkpoint_image(const CheckpointContents& c, const std::string& path) {
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (fapl < 0 || H5Pset_fapl_core(fapl, 1 << 20, /*backing_store=*/0) < 0)
    fail(fmt::format("{}: cannot set up the in-memory HDF5 file", path));
  // The name only identifies the image inside the library: nothing is created under it.
  H5Id file(H5Fcreate((path + ".in-memory").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
  if (file < 0) fail(fmt::format("{}: cannot create the in-memory HDF5 file", path));
  write_group(file, "/model", c.model, path);
  {
    H5Id opt(H5Gcreate2(file, "/optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    write_attr_i64(opt, "step", c.meta.optimizer_step, path);
  }
  write_group(file, "/optimizer/exp_avg", c.exp_avg, path);
  write_group(file, "/optimizer/exp_avg_sq", c.exp_avg_sq, path);
  {
    CheckpointMeta m = c.meta;
    m.project_version = S6_VERSION;
    H5Id meta(H5Gcreate2(file, "/meta", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
    write_attr_i64(meta, "format_version", kCheckpointFormatVersion, path);
    write_attr_i64(meta, "step", m.step, path);
    write_attr_u64(meta, "seed", m.seed, path);
    write_attr_i64(meta, "world_size", m.world_size, path);
    write_attr_str(meta, "config", m.config_yaml, path);
    write_attr_str(meta, "project_version", m.project_version, path);
    write_attr_str(meta, "run_id", m.run_id, path);
    // Scheduler and data stream are pure functions of the step (and seed, rank): their state is
    // the next step index.
    write_attr_i64(meta, "schedule_step", m.step, path);
    write_attr_i64(meta, "data_next_batch", m.step, path);
    write_attr_i64(meta, "consecutive_skips", m.consecutive_skips, path);
    {
      H5Id shape(H5Gcreate2(meta, "model_shape", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose);
      for (const auto& [key, value] : m.model_shape) write_attr_str(shape, key.c_str(), value, path);
    }
    const std::string text = meta_text(m, m.step, m.step);
    write_attr_u64(meta, "fnv1a64", fnv1a64(text.data(), text.size()), path);
  }
  if (H5Fflush(file, H5F_SCOPE_GLOBAL) < 0) fail(fmt::format("{}: cannot flush the in-memory HDF5 file", path));
  const ssize_t size = H5Fget_file_image(file, nullptr, 0);
  std::vector<char> image(size > 0 ? static_cast<size_t>(size) : 0);
  if (size <= 0 || H5Fget_file_image(file, image.data(), image.size()) != size)
    fail(fmt::format("{}: cannot take the in-memory HDF5 image", path));
  return image;
}

// Writes `image` to `tmp` (created afresh) and fsyncs it; on any failure removes it and throws
// naming the file and the OS error.
void write_file(const std::string& tmp, const std::string& path, const std::vector<char>& image) {
  auto failed = [&](const char* what, int err, int fd) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    fail(fmt::format("cannot {} {} (the temp file of {}): {}; the previous checkpoint is untouched", what, tmp,
                     path, std::strerror(err)));
  };
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) failed("create", errno, -1);
  size_t done = 0;
  while (done < image.size()) {
    if (done >= image.size() / 2) fault_injection::during_checkpoint_write();  // may die half-written
    // In pieces of at most half the file, so that the hook above finds a half-written file.
    const size_t piece = std::min(
        {image.size() - done, std::max<size_t>(image.size() / 2, 1), size_t{1} << 24});
    ssize_t n = ::write(fd, image.data() + done, piece);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) failed("write", n < 0 ? errno : EIO, fd);
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) failed("fsync", errno, fd);
  if (::close(fd) != 0) failed("close", errno, -1);
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointContents& c) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  const fs::path final_path(path);
  const std::string tmp = (final_path.parent_path() / ("." + final_path.filename().string() + ".tmp")).string();
  write_file(tmp, path, checkpoint_image(c, path));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    fail(fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(err)));
  }
  fsync_path(final_path.parent_path().empty() ? "." : final_path.parent_path().string(), true);
}

CheckpointContents read_checkpoint(const std::string& path, bool model_only) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (!fs::exists(path)) fail(fmt::format("checkpoint {} does not exist", path));
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file < 0)
    fail(fmt::format("checkpoint {} cannot be opened as HDF5 (truncated or not a checkpoint)", path));
  CheckpointContents c;
  c.path = path;
  {
    H5Id opt(H5Gopen2(file, "/optimizer", H5P_DEFAULT), H5Gclose);
    if (opt < 0) fail(fmt::format("{}: group /optimizer is missing", path));
    c.meta.optimizer_step = read_attr_i64(opt, "step", path);
  }
  {
    H5Id meta(H5Gopen2(file, "/meta", H5P_DEFAULT), H5Gclose);
    if (meta < 0) fail(fmt::format("{}: group /meta is missing", path));
    int64_t version = read_attr_i64(meta, "format_version", path);
    if (version != kCheckpointFormatVersion && version != 1)
      fail(fmt::format("{}: format version {} is not a supported one (1 or {})", path, version,
                       kCheckpointFormatVersion));
    c.meta.step = read_attr_i64(meta, "step", path);
    c.meta.seed = read_attr_u64(meta, "seed", path);
    c.meta.world_size = read_attr_i64(meta, "world_size", path);
    c.meta.config_yaml = read_attr_str(meta, "config", path);
    c.meta.consecutive_skips = read_attr_i64(meta, "consecutive_skips", path);
    c.meta.project_version = read_attr_str(meta, "project_version", path);
    const int64_t schedule_step = read_attr_i64(meta, "schedule_step", path);
    const int64_t data_next_batch = read_attr_i64(meta, "data_next_batch", path);
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
    if (version >= 2) {
      c.meta.run_id = read_attr_str(meta, "run_id", path);
      const std::string text = meta_text(c.meta, schedule_step, data_next_batch);
      if (read_attr_u64(meta, "fnv1a64", path) != fnv1a64(text.data(), text.size()))
        fail(fmt::format("{}: the /meta attributes fail their checksum (edited or corrupt)", path));
    }
    if (schedule_step != c.meta.step || data_next_batch != c.meta.step)
      fail(fmt::format("{}: /meta is inconsistent (step {}, schedule_step {}, data_next_batch {})", path,
                       c.meta.step, schedule_step, data_next_batch));
  }
  c.model = read_group(file, "/model", path);
  if (!model_only) {
    c.exp_avg = read_group(file, "/optimizer/exp_avg", path);
    c.exp_avg_sq = read_group(file, "/optimizer/exp_avg_sq", path);
  }
  return c;
}

std::optional<std::string> checkpoint_run_id(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (file < 0) return std::nullopt;
  H5Id meta(H5Gopen2(file, "/meta", H5P_DEFAULT), H5Gclose);
  if (meta < 0) return std::nullopt;
  try {
    if (read_attr_i64(meta, "format_version", path) < 2) return std::string();
    return read_attr_str(meta, "run_id", path);
  } catch (const CheckpointError&) {
    return std::nullopt;
  }
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  if (!fs::is_directory(dir)) return out;
  for (const auto& entry : fs::directory_iterator(dir)) {
    std::smatch m;
    std::string name = entry.path().filename().string();
    if (std::regex_match(name, m, checkpoint_pattern()))
      out.emplace_back(std::stoll(m[1]), entry.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string resolve_checkpoint(const std::string& where) {
  std::error_code ec;
  if (fs::is_directory(where, ec)) {
    const fs::path dir = fs::exists(fs::path(where) / "checkpoints", ec) ? fs::path(where) / "checkpoints"
                                                                         : fs::path(where);
    auto all = list_checkpoints(dir.string());
    if (all.empty())
      throw CheckpointError(fmt::format(
          "{}: no checkpoint (step_*.h5) in {}; train first or pass a checkpoint file", where, dir.string()));
    return all.back().second;
  }
  if (!fs::exists(where, ec))
    throw CheckpointError(fmt::format("{}: no such checkpoint file or run directory", where));
  return where;
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

void prune_checkpoints(const std::string& dir, int64_t keep_last, int64_t keep_every,
                       const std::optional<std::string>& run_id) {
  auto all = list_checkpoints(dir);
  if (run_id) {
    // Checkpoints never change once renamed into place (a rewrite is a new file): each file's run
    // id is read once per process, not at every save.
    static std::map<std::string, std::pair<std::string, std::optional<std::string>>> seen;
    auto lineage = [&](const std::string& path) {
      struct stat st {};
      if (::stat(path.c_str(), &st) != 0) return checkpoint_run_id(path);
      const std::string identity = fmt::format("{}:{}:{}.{}", st.st_ino, st.st_size, st.st_mtim.tv_sec,
                                               st.st_mtim.tv_nsec);
      auto it = seen.find(path);
      if (it == seen.end() || it->second.first != identity)
        it = seen.insert_or_assign(path, std::pair{identity, checkpoint_run_id(path)}).first;
      return it->second.second;
    };
    all.erase(std::remove_if(all.begin(), all.end(),
                             [&](const auto& ckpt) { return lineage(ckpt.second) != *run_id; }),
              all.end());
  }
  const int64_t n = static_cast<int64_t>(all.size());
  for (int64_t i = 0; i < n; ++i) {
    bool recent = i >= n - std::max<int64_t>(keep_last, 1);
    bool milestone = keep_every > 0 && all[i].first % keep_every == 0;
    if (!recent && !milestone) fs::remove(all[i].second);
  }
}

}  // namespace s6::trainer
