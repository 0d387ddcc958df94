// safetensors read and write; the header is parsed with nlohmann-json and checked entry by entry
// (dtype, shape, byte range inside the file) before any data is touched.
#include "trainer/safetensors.h"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

namespace s6::trainer {

namespace {

using json = nlohmann::json;

// The format caps the header at 100 MB; anything larger is a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw SafetensorsError(fmt::format("{}: {}", path, what));
}

uint64_t read_le64(const unsigned char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  float f;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    f = std::ldexp(static_cast<float>(mant), -24);
    return sign ? -f : f;
  }
  uint32_t bits = exp == 31 ? (sign | 0x7F800000u | (mant << 13))
                            : (sign | ((exp + 112u) << 23) | (mant << 13));
  std::memcpy(&f, &bits, 4);
  return f;
}

int64_t element_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "F64") return 8;
  if (dtype == "BF16" || dtype == "F16") return 2;
  return 0;
}

void to_float32(const std::string& dtype, const unsigned char* src, int64_t n, float* dst) {
  if (dtype == "F32") {
    std::memcpy(dst, src, static_cast<size_t>(n) * 4);
  } else if (dtype == "F64") {
    for (int64_t i = 0; i < n; ++i) {
      double d;
      std::memcpy(&d, src + 8 * i, 8);
      dst[i] = static_cast<float>(d);
    }
  } else if (dtype == "BF16") {
    for (int64_t i = 0; i < n; ++i) {
      uint32_t bits = static_cast<uint32_t>(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
      std::memcpy(&dst[i], &bits, 4);
    }
  } else {  // F16
    for (int64_t i = 0; i < n; ++i)
      dst[i] = half_to_float(static_cast<uint16_t>(src[2 * i] | (src[2 * i + 1] << 8)));
  }
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, fmt::format("cannot open the file ({})", std::strerror(errno)));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  in.seekg(0);
  std::vector<unsigned char> bytes(static_cast<size_t>(size < 0 ? 0 : size));
  if (!bytes.empty() && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    fail(path, "cannot read the file");
  return bytes;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  const std::vector<unsigned char> bytes = read_file(path);
  if (bytes.size() < 8)
    fail(path,
         fmt::format("not a safetensors file: {} bytes, shorter than the 8-byte header length", bytes.size()));
  const uint64_t header_len = read_le64(bytes.data());
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8)
    fail(path, fmt::format("not a safetensors file: the header length field says {} bytes but the file has {} "
                           "bytes after it",
                           header_len, bytes.size() - 8));
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(header_len));
  } catch (const json::exception& e) {
    fail(path, fmt::format("the safetensors header is not valid JSON ({})", e.what()));
  }
  if (!header.is_object()) fail(path, "the safetensors header is not a JSON object");

  const unsigned char* data = bytes.data() + 8 + header_len;
  const uint64_t data_len = bytes.size() - 8 - header_len;
  SafetensorsFile out;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail(path, "__metadata__ is not a JSON object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail(path, fmt::format("__metadata__ value of '{}' is not a string", k));
        out.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& what) { fail(path, fmt::format("tensor '{}': {}", name, what)); };
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") ||
        !entry.contains("data_offsets"))
      bad("the header entry needs dtype, shape and data_offsets");
    const json& dt = entry["dtype"];
    const json& shape_json = entry["shape"];
    const json& offsets = entry["data_offsets"];
    if (!dt.is_string()) bad("dtype is not a string");
    const std::string dtype = dt.get<std::string>();
    const int64_t esize = element_size(dtype);
    if (esize == 0) bad(fmt::format("dtype {} is not supported (F32, F64, BF16 or F16 are)", dtype));
    if (!shape_json.is_array()) bad("shape is not an array");
    Shape shape;
    uint64_t numel = 1;
    for (const json& d : shape_json) {
      if (!d.is_number_unsigned())
        bad(fmt::format("shape {} has an entry that is not a non-negative integer", shape_json.dump()));
      const uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > std::numeric_limits<uint64_t>::max() / 8 / v) bad("shape is too large");
      numel *= v;
      shape.push_back(static_cast<int64_t>(v));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      bad("data_offsets is not a pair of non-negative integers");
    const uint64_t begin = offsets[0].get<uint64_t>(), end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_len)
      bad(fmt::format("data_offsets [{}, {}] lie outside the {} data bytes", begin, end, data_len));
    if (end - begin != numel * static_cast<uint64_t>(esize))
      bad(fmt::format("data_offsets span {} bytes but {} {} elements of shape {} need {}", end - begin, numel,
                      dtype, shape_json.dump(), numel * esize));
    Tensor t = Tensor::empty(shape, DType::Float32);
    to_float32(dtype, data + begin, static_cast<int64_t>(numel), t.data<float>());
    out.tensors.emplace(name, std::move(t));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") fail(path, "a tensor cannot be named __metadata__");
    Tensor h = t.to(Device::CPU).to(DType::Float32).contiguous();
    const uint64_t n = static_cast<uint64_t>(h.nbytes());
    header[name] = {{"dtype", "F32"}, {"shape", h.shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
    host.push_back(h);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // the data then starts 8-byte aligned
  unsigned char len[8];
  for (int i = 0; i < 8; ++i)
    len[i] = static_cast<unsigned char>((static_cast<uint64_t>(text.size()) >> (8 * i)) & 0xFF);

  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail(path, fmt::format("cannot create {} ({})", tmp, std::strerror(errno)));
    out.write(reinterpret_cast<const char*>(len), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const Tensor& h : host) out.write(static_cast<const char*>(h.data_ptr()), h.nbytes());
    out.flush();
    if (!out) fail(path, fmt::format("cannot write {} ({})", tmp, std::strerror(errno)));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) fail(path, fmt::format("cannot rename {} into place ({})", tmp, ec.message()));
}

}  // namespace s6::trainer
