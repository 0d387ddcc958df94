// Language modelling on files: the `tokens` task (token shards) and the `bytes` task (any files,
// one token per byte), as Tasks whose examples are windows of a corpus at seeded positions.
#pragma once
#include <memory>
#include <string>

#include "data/task.h"
#include "data/token_corpus.h"

namespace s6::data {

struct TextDataParams {
  std::string train_glob;        // files of the training stream
  std::string val_glob;          // files of the validation stream; "" = the last val_fraction of training's
  double val_fraction = 0;       // used when val_glob is ""; in (0, 1)
  std::string format = "llmc";   // tokens task: llmc | raw
  std::string dtype = "uint16";  // raw files: uint16 | uint32
};

// Example e of batch k (rank r's examples start at r * batch, as in every Task) is the window of
// seq_len + 1 tokens at position p of its split's stream, p uniform over every window that fits,
// drawn from the example's own Philox stream (seed, split, k, example): inputs = tokens p ..
// p+seq_len-1, targets = tokens p+1 .. p+seq_len (the loss covers every position; accuracy is
// next-token accuracy). So batches are pure functions of (seed, step, rank): resume is bit-exact
// and ranks read independent streams. Windows are drawn with replacement, as nanoGPT's get_batch
// does: two examples may overlap, by chance, like two random windows of one rank.
// The validation stream is its own files, or with val_fraction the tail of the training stream,
// which training then never reads. Throws DataError for unusable data (token_corpus.h) and when a
// stream is shorter than one window.
class TextTask : public Task {
 public:
  TextTask(const std::string& name, const TaskParams& params, const TextDataParams& data);
  bool samples_on_device() const override { return false; }
  bool is_bytes() const { return name_ == "bytes"; }
  int64_t stream_tokens(Split split) const { return range(split).end - range(split).begin; }
  // "train: N tokens in F files (glob); validation: ..." for the startup table.
  std::string summary() const;

 protected:
  uint64_t task_id() const override { return is_bytes() ? 0x4259544553ull : 0x544f4b454e53ull; }
  void generate(ExampleRng& rng, int32_t* inputs, int32_t* targets, int32_t* eval) const override;
  void generate_split(ExampleRng& rng, Split split, int32_t* inputs, int32_t* targets,
                      int32_t* eval) const override;
  void launch_on_device(const DeviceBatch& out, uint64_t key, const uint64_t* batch_index,
                        uint64_t first_example) const override;

 private:
  struct Range {
    std::shared_ptr<const TokenCorpus> corpus;
    int64_t begin = 0, end = 0;  // tokens of the corpus this split reads
  };
  const Range& range(Split split) const { return split == Split::Validation ? val_ : train_; }
  Range train_, val_;
};

bool is_text_task(const std::string& name);  // "tokens" | "bytes"
std::unique_ptr<Task> make_text_task(const std::string& name, const TaskParams& params,
                                     const TextDataParams& data);

}  // namespace s6::data
