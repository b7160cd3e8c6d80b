// Reading and writing tensors as safetensors files (the format: engine/safetensors_format.h).
//
//   save_safetensors("runs/x/ckpt.safetensors", {{"head.weight", w}, {"step", s}}, {{"step", "1200"}});
//   SafetensorsFile f = load_safetensors("runs/x/ckpt.safetensors");
//   expect_tensor(f, "head.weight", DType::f32, {101, 128});
//   Tensor w = f.at("head.weight");
#pragma once

#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace tg {

// Writes `tensors` (any device, any strides; copied to the CPU in contiguous order) in the given
// order, with `metadata` as the header's "__metadata__" (left out when empty). The write is atomic:
// the file goes to `path`.tmp.<pid>.<n> in the same directory, is flushed and fsync'ed, then renamed
// over `path`. On any failure the temp file is removed, a file already at `path` is left untouched,
// and tg::Error names the path and the system's reason. Names must be unique, valid UTF-8 and not
// "__metadata__".
void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

struct SafetensorsFile {
  std::string path;                  // where it was loaded from, for error messages
  std::vector<std::string> names;    // in file order (by data offset)
  std::map<std::string, Tensor> tensors;  // CPU tensors
  std::map<std::string, std::string> metadata;

  bool contains(const std::string& name) const { return tensors.count(name) != 0; }
  // The tensor called `name`; throws tg::Error naming the tensor and the file when there is none.
  const Tensor& at(const std::string& name) const;
  // Metadata entry `key` as a whole decimal integer in [min, max]; throws naming the file and the key
  // when it is missing, not an integer ("12abc", "1e3") or out of range.
  std::int64_t metadata_integer(const std::string& key, std::int64_t min = 0,
                                std::int64_t max = std::numeric_limits<std::int64_t>::max()) const;
};

// Reads the whole file at `path`, validates it (parse_safetensors_header) and builds CPU tensors.
// Throws tg::Error naming the path when the file is missing, unreadable or malformed, and naming
// the tensor and its dtype when it holds a dtype tapegrok does not support (only F32, F64, I32).
SafetensorsFile load_safetensors(const std::string& path);

// Throws a tg::Error like "checkpoint runs/x/ckpt.safetensors: tensor 'head.weight' has shape
// [99, 128] f32 but the model needs [101, 128] f32" when the tensor is missing or differs in
// dtype or shape, and names the first NaN or inf of a float tensor.
void expect_tensor(const SafetensorsFile& file, const std::string& name, DType dtype, const Shape& shape);

}  // namespace tg
