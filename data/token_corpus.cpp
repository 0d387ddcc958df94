// Token corpora: glob expansion with **, read-only memory maps, llm.c header checks, the stream read.
#include "data/token_corpus.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>

namespace s6::data {

namespace fs = std::filesystem;

namespace {

bool has_wildcard(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

void match_from(const fs::path& dir, const std::vector<std::string>& parts, size_t i,
                std::set<std::string>& out) {
  std::error_code ec;
  if (i == parts.size()) {
    if (fs::is_regular_file(dir, ec)) out.insert(dir.lexically_normal().string());
    return;
  }
  const std::string& part = parts[i];
  if (part == "**") {
    match_from(dir, parts, i + 1, out);  // zero directories
    if (!fs::is_directory(dir, ec)) return;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      // Hidden directories and directory links stay out of '**' (no cycles, no surprises).
      if (name.empty() || name[0] == '.' || it->is_symlink(ec)) continue;
      if (it->is_directory(ec)) match_from(it->path(), parts, i, out);
    }
    return;
  }
  if (!has_wildcard(part)) {
    const fs::path next = dir / part;
    if (fs::exists(next, ec)) match_from(next, parts, i + 1, out);
    return;
  }
  if (!fs::is_directory(dir, ec)) return;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (fnmatch(part.c_str(), name.c_str(), FNM_PERIOD) == 0) match_from(it->path(), parts, i + 1, out);
  }
}

uint32_t load_le(const unsigned char* p, int elem) {
  uint32_t v = 0;
  for (int b = 0; b < elem; ++b) v |= static_cast<uint32_t>(p[b]) << (8 * b);
  return v;
}

}  // namespace

std::vector<std::string> expand_glob(const std::string& pattern) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (start <= pattern.size()) {
    size_t slash = pattern.find('/', start);
    if (slash == std::string::npos) slash = pattern.size();
    if (slash > start) parts.push_back(pattern.substr(start, slash - start));
    start = slash + 1;
  }
  std::set<std::string> found;
  if (!parts.empty())
    match_from(!pattern.empty() && pattern[0] == '/' ? fs::path("/") : fs::path("."), parts, 0, found);
  std::vector<std::string> out;
  for (const std::string& f : found) out.push_back(f.rfind("./", 0) == 0 ? f.substr(2) : f);
  return out;
}

TokenCorpus::TokenCorpus(const std::string& glob, TokenFormat format, const std::string& what) : glob_(glob) {
  if (glob.empty()) throw DataError(fmt::format("{}: is empty; expected a file glob", what));
  const std::vector<std::string> paths = expand_glob(glob);
  if (paths.empty())
    throw DataError(
        fmt::format("{} = '{}' matches no file (relative globs are read from the working "
                    "directory; '**' matches any number of directories)",
                    what, glob));
  try {
    add_files(paths, format, what);
  } catch (...) {
    unmap();  // a constructor that throws runs no destructor
    throw;
  }
  if (total_ == 0)
    throw DataError(
        fmt::format("{} = '{}' matches {} file(s) but all of them are empty", what, glob, paths.size()));
}

void TokenCorpus::add_files(const std::vector<std::string>& paths, TokenFormat format,
                            const std::string& what) {
  for (const std::string& path : paths) {
    File f;
    f.path = path;
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw DataError(fmt::format("{}: cannot open {} ({})", what, path, std::strerror(errno)));
    struct stat st {};
    ::fstat(fd, &st);
    f.map_bytes = static_cast<size_t>(st.st_size);
    if (f.map_bytes == 0) {
      ::close(fd);
      if (format == TokenFormat::Bytes) continue;  // an empty source file holds no bytes, not an error
      throw DataError(fmt::format("{}: {} is empty; expected token data", what, path));
    }
    void* map = ::mmap(nullptr, f.map_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED)
      throw DataError(fmt::format("{}: cannot map {} ({})", what, path, std::strerror(errno)));
    f.map = static_cast<const unsigned char*>(map);
    files_.push_back(f);  // owned from here: unmap() releases it whatever fails below
    File& g = files_.back();
    if (format == TokenFormat::LlmC) {
      if (g.map_bytes < static_cast<size_t>(kLlmcHeaderBytes))
        throw DataError(
            fmt::format("{}: {} has {} bytes, shorter than the llm.c header ({} bytes); set "
                        "data.format=raw for headerless token files",
                        what, path, g.map_bytes, kLlmcHeaderBytes));
      int32_t header[3];
      std::memcpy(header, g.map, sizeof(header));
      if (header[0] != kLlmcMagic)
        throw DataError(
            fmt::format("{}: {} is not an llm.c token shard (magic {}, expected {}); set "
                        "data.format=raw for headerless token files",
                        what, path, header[0], kLlmcMagic));
      if (header[1] != 1 && header[1] != 2)
        throw DataError(fmt::format("{}: {} has llm.c version {}; expected 1 (uint16 tokens) or 2 (uint32)",
                                    what, path, header[1]));
      g.elem = header[1] == 1 ? 2 : 4;
      g.count = header[2];
      const uint64_t want = static_cast<uint64_t>(kLlmcHeaderBytes) + static_cast<uint64_t>(g.count) * g.elem;
      if (g.count <= 0)
        throw DataError(
            fmt::format("{}: {} is an empty shard (its header counts {} tokens)", what, path, g.count));
      if (want != g.map_bytes)
        throw DataError(
            fmt::format("{}: {} has {} bytes but its header promises {} tokens ({} bytes): "
                        "truncated or not an llm.c shard",
                        what, path, g.map_bytes, g.count, want));
      g.tokens = g.map + kLlmcHeaderBytes;
    } else {
      g.elem = format == TokenFormat::Raw32 ? 4 : format == TokenFormat::Raw16 ? 2 : 1;
      if (g.map_bytes % static_cast<size_t>(g.elem) != 0)
        throw DataError(fmt::format("{}: {} has {} bytes, not a whole number of {}-byte tokens", what, path,
                                    g.map_bytes, g.elem));
      g.count = static_cast<int64_t>(g.map_bytes) / g.elem;
      g.tokens = g.map;
    }
    g.start = total_;
    total_ += g.count;
    // Windows are read at random places: tell the kernel not to read ahead.
    ::madvise(const_cast<unsigned char*>(g.map), g.map_bytes, MADV_RANDOM);
  }
}

void TokenCorpus::unmap() {
  for (const File& f : files_)
    if (f.map) ::munmap(const_cast<unsigned char*>(f.map), f.map_bytes);
  files_.clear();
}

TokenCorpus::~TokenCorpus() { unmap(); }

void TokenCorpus::read(int64_t pos, int64_t n, int32_t* out) const {
  S6_CHECK(pos >= 0 && n >= 0 && pos + n <= total_,
           "TokenCorpus::read: [{}, {}) is outside the {} tokens of {}", pos, pos + n, total_, glob_);
  auto it = std::upper_bound(files_.begin(), files_.end(), pos,
                             [](int64_t p, const File& f) { return p < f.start; });
  size_t i = static_cast<size_t>(it - files_.begin()) - 1;
  while (n > 0) {
    const File& f = files_[i];
    const int64_t at = pos - f.start, take = std::min(n, f.count - at);
    const unsigned char* src = f.tokens + at * f.elem;
    if (f.elem == 1) {
      for (int64_t t = 0; t < take; ++t) out[t] = src[t];
    } else {
      for (int64_t t = 0; t < take; ++t) out[t] = static_cast<int32_t>(load_le(src + t * f.elem, f.elem));
    }
    out += take;
    pos += take;
    n -= take;
    ++i;
  }
}

std::shared_ptr<const TokenCorpus> open_corpus(const std::string& glob, TokenFormat format,
                                               const std::string& what) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, int>, std::weak_ptr<const TokenCorpus>> open;
  std::lock_guard<std::mutex> lock(mutex);
  auto& slot = open[{glob, static_cast<int>(format)}];
  if (auto live = slot.lock()) return live;
  auto corpus = std::make_shared<const TokenCorpus>(glob, format, what);
  slot = corpus;
  return corpus;
}

}  // namespace s6::data
