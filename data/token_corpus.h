// Token corpora on disk: globs (with **), memory-mapped llm.c shards, raw uint16/uint32 files and
// plain files read as bytes, seen as one stream of tokens in sorted path order.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"

namespace s6::data {

// A problem with the user's data or its settings (a glob that matches nothing, an empty file, a
// bad header, a corpus shorter than one window). The message names the glob or the file; the
// trainer reports it as a configuration error (exit code 2).
struct DataError : Error {
  using Error::Error;
};

// How the files of a corpus hold their tokens.
enum class TokenFormat {
  LlmC,   // llm.c: a 256 x int32 header (magic 20240520, version 1 = uint16 / 2 = uint32, token
          // count at [2]), then the tokens
  Raw16,  // headerless little-endian uint16 (nanoGPT's train.bin)
  Raw32,  // headerless little-endian uint32
  Bytes,  // any file, one token per byte (vocabulary 256); empty files are skipped
};
constexpr int32_t kLlmcMagic = 20240520;
constexpr int64_t kLlmcHeaderBytes = 256 * 4;

// The regular files `pattern` matches, sorted: fnmatch per path component ('*', '?', '[...]';
// names starting with '.' only by a pattern that starts with '.'), and '**' for zero or more
// directories. A relative pattern is relative to the working directory.
std::vector<std::string> expand_glob(const std::string& pattern);

// The files of one glob, mapped read-only, as one token stream. Windows may cross file
// boundaries (llm.c shards start with an end-of-text token, so documents stay separated).
class TokenCorpus {
 public:
  // Throws DataError naming `glob` (`what` names its config key, e.g. "data.train_glob") when it
  // matches nothing or holds no tokens, and naming the file for an empty file (except in Bytes)
  // or a bad header or size.
  TokenCorpus(const std::string& glob, TokenFormat format, const std::string& what);
  ~TokenCorpus();
  TokenCorpus(const TokenCorpus&) = delete;
  TokenCorpus& operator=(const TokenCorpus&) = delete;

  int64_t size() const { return total_; }  // tokens
  int64_t num_files() const { return static_cast<int64_t>(files_.size()); }
  const std::string& glob() const { return glob_; }
  // Copies tokens [pos, pos + n) of the stream as int32 (requires pos + n <= size()).
  void read(int64_t pos, int64_t n, int32_t* out) const;

 private:
  struct File {
    std::string path;
    const unsigned char* map = nullptr;  // the whole file
    size_t map_bytes = 0;
    const unsigned char* tokens = nullptr;
    int elem = 1;       // bytes per token
    int64_t count = 0;  // tokens
    int64_t start = 0;  // position of its first token in the stream
  };
  void add_files(const std::vector<std::string>& paths, TokenFormat format, const std::string& what);
  void unmap();
  std::string glob_;
  std::vector<File> files_;
  int64_t total_ = 0;
};

// Opens (or returns the already open) corpus of glob + format: evaluation rebuilds its task at
// every evaluation, and the files are mapped once per process.
std::shared_ptr<const TokenCorpus> open_corpus(const std::string& glob, TokenFormat format,
                                               const std::string& what);

}  // namespace s6::data
