// The tokens and bytes tasks: corpus ranges per split, seeded window positions, token-range checks.
#include "data/text_task.h"

#include <algorithm>

namespace s6::data {

namespace {

TokenFormat format_of(const std::string& name, const TextDataParams& d) {
  if (name == "bytes") return TokenFormat::Bytes;
  if (d.format == "llmc") return TokenFormat::LlmC;
  if (d.format != "raw") throw DataError(fmt::format("data.format = '{}': expected llmc or raw", d.format));
  if (d.dtype == "uint16") return TokenFormat::Raw16;
  if (d.dtype == "uint32") return TokenFormat::Raw32;
  throw DataError(fmt::format("data.dtype = '{}': expected uint16 or uint32", d.dtype));
}

// A cheap guard against a wrong tokenizer or dtype: the first million tokens of a stream must be
// inside the vocabulary (the embedding still rejects any id beyond the padded vocabulary).
void check_vocab(const TokenCorpus& c, int64_t begin, int64_t end, int64_t vocab, const std::string& what) {
  const int64_t n = std::min<int64_t>(end - begin, int64_t{1} << 20);
  std::vector<int32_t> head(static_cast<size_t>(n));
  c.read(begin, n, head.data());
  for (int64_t i = 0; i < n; ++i)
    if (head[i] < 0 || head[i] >= vocab)
      throw DataError(
          fmt::format("{}: token {} at position {} is outside task.vocab_size = {} "
                      "(another tokenizer, or data.dtype wrong?)",
                      what, head[i], begin + i, vocab));
}

}  // namespace

TextTask::TextTask(const std::string& name, const TaskParams& params, const TextDataParams& data)
    : Task(name, params) {
  const TokenFormat format = format_of(name, data);
  if (name == "bytes" && params.vocab < 256)
    throw DataError(
        fmt::format("task.vocab_size = {}: the bytes task needs 256 (one token per byte value)", params.vocab));
  train_.corpus = open_corpus(data.train_glob, format, "data.train_glob");
  train_.end = train_.corpus->size();
  if (!data.val_glob.empty()) {
    val_.corpus = open_corpus(data.val_glob, format, "data.val_glob");
    val_.end = val_.corpus->size();
  } else {
    if (!(data.val_fraction > 0 && data.val_fraction < 1))
      throw DataError(
          fmt::format("data.val_fraction = {}: expected a fraction in (0, 1) when data.val_glob "
                      "is not set (the tail of the training stream held out for validation)",
                      data.val_fraction));
    const int64_t held = static_cast<int64_t>(static_cast<double>(train_.end) * data.val_fraction);
    val_ = train_;
    val_.begin = train_.end - held;
    train_.end = val_.begin;
  }
  const int64_t window = params.seq_len + 1;
  for (Split split : {Split::Train, Split::Validation}) {
    const Range& r = range(split);
    const std::string what = split == Split::Train ? fmt::format("data.train_glob = '{}'", r.corpus->glob())
                             : data.val_glob.empty()
                                 ? fmt::format("the held-out data.val_fraction = {} of data.train_glob = '{}'",
                                               data.val_fraction, r.corpus->glob())
                                 : fmt::format("data.val_glob = '{}'", r.corpus->glob());
    if (r.end - r.begin < window)
      throw DataError(fmt::format("{} holds {} tokens, fewer than one window of task.seq_len + 1 = {}", what,
                                  r.end - r.begin, window));
    check_vocab(*r.corpus, r.begin, r.end, params.vocab, what);
  }
}

std::string TextTask::summary() const {
  auto one = [](const Range& r) {
    return fmt::format("{} tokens of {} file(s) '{}'{}", r.end - r.begin, r.corpus->num_files(),
                       r.corpus->glob(),
                       r.begin > 0 ? fmt::format(" (held-out tail from token {})", r.begin) : std::string());
  };
  return fmt::format("train {}; validation {}", one(train_), one(val_));
}

void TextTask::generate(ExampleRng& rng, int32_t* inputs, int32_t* targets, int32_t* eval) const {
  generate_split(rng, Split::Train, inputs, targets, eval);
}

void TextTask::generate_split(ExampleRng& rng, Split split, int32_t* inputs, int32_t* targets, int32_t*) const {
  const Range& r = range(split);
  const int64_t L = params_.seq_len;
  // Uniform over the (end - begin - L) windows by rejection on 64 bits (exactly uniform).
  const uint64_t count = static_cast<uint64_t>(r.end - r.begin - L);
  const uint64_t threshold = (0 - count) % count;
  uint64_t bits = 0;
  do {
    bits = (static_cast<uint64_t>(rng.u32()) << 32) | rng.u32();
  } while (bits < threshold);
  const int64_t pos = r.begin + static_cast<int64_t>(bits % count);
  r.corpus->read(pos, L, inputs);
  std::copy(inputs + 1, inputs + L, targets);
  r.corpus->read(pos + L, 1, targets + L - 1);
}

void TextTask::launch_on_device(const DeviceBatch&, uint64_t, const uint64_t*, uint64_t) const {
  S6_FAIL(
      "{}.sample_on_device: file data has no device generator; sample on the host (sample_into) and "
      "copy the batch (samples_on_device() is false)",
      name_);
}

bool is_text_task(const std::string& name) { return name == "tokens" || name == "bytes"; }

std::unique_ptr<Task> make_text_task(const std::string& name, const TaskParams& params,
                                     const TextDataParams& data) {
  S6_CHECK(is_text_task(name), "make_text_task: '{}' is not tokens or bytes", name);
  return std::make_unique<TextTask>(name, params, data);
}

}  // namespace s6::data
