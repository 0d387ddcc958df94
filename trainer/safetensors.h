// safetensors files (Hugging Face's weight format): an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw little-endian data.
#pragma once
#include <map>
#include <stdexcept>
#include <string>

#include "core/tensor.h"

namespace s6::trainer {

// Thrown when a file cannot be read or written or its header is malformed; the message names the
// file (and the tensor, where one is at fault).
struct SafetensorsError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;        // float32 CPU tensors by name
  std::map<std::string, std::string> metadata;  // the header's "__metadata__" (strings only)
};

// Reads every tensor, converting F64, BF16 and F16 to float32 (the dtype of s6's parameters).
// Integer and other dtypes are refused naming the tensor.
SafetensorsFile read_safetensors(const std::string& path);

// Writes float32 tensors (any device; converted to float32 if they are not) in name order, the
// header padded to 8 bytes. Written to PATH.tmp and renamed, so a reader never sees half a file.
void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace s6::trainer
