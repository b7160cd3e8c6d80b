// The safetensors container format, independent of Tensor (so a fuzzer can link it alone).
//
// Layout of a file:
//   8 bytes    N, the header length, unsigned little-endian
//   N bytes    UTF-8 JSON object, starting with '{' and possibly padded at the end with spaces:
//                { "__metadata__": { "key": "value", ... },            (optional, strings only)
//                  "<tensor name>": { "dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end] },
//                  ... }
//   the rest   the data section: every tensor's bytes, little-endian, row-major; offsets are
//              relative to the first byte after the header.
//
// parse_safetensors_header treats its input as hostile. It accepts a file only if it is one the
// reference implementation (huggingface/safetensors) would accept too:
//   - at least 8 bytes; header length <= kSafetensorsMaxHeaderBytes and inside the file;
//   - the header starts with '{' and is one valid JSON object (nlohmann's parser, which also
//     rejects ill-formed UTF-8 in strings), with no duplicate keys at any level that is read;
//   - each entry is an object with a known "dtype" string, a "shape" array of at most
//     kSafetensorsMaxRank non-negative integers and a "data_offsets" array of exactly two
//     non-negative integers begin <= end; other fields of an entry are ignored (as the reference does);
//   - the element count (and the product of the non-zero dims, so strides fit too) fits in int64;
//     end - begin equals the element count times the dtype size; end lies inside the data section;
//   - the tensors tile the data section exactly: no overlaps, no holes, no trailing bytes
//     (the spec forbids holes so that a file cannot be a polyglot);
//   - "__metadata__" is an object (or null) whose values are all strings.
// Anything else throws tg::Error naming `origin` (the file path) and, where there is one, the tensor.
// It never reads outside [bytes, bytes + size) and allocates memory proportional to the header
// (never to a number written in it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/dtype.h"

namespace tg {

// The reference implementation's limit on the header length.
inline constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100ull << 20;
// Shapes with more dimensions than this are rejected (no real tensor comes close).
inline constexpr std::size_t kSafetensorsMaxRank = 1024;

struct SafetensorsEntry {
  std::string name;
  std::string dtype;  // the safetensors name: "F32", "BF16", ...
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // byte range inside the data section

  bool operator==(const SafetensorsEntry&) const = default;
};

struct SafetensorsHeader {
  std::vector<SafetensorsEntry> entries;  // ordered by data offsets (ties: order in the header)
  std::map<std::string, std::string> metadata;
  std::uint64_t data_start = 0;  // absolute file offset of the data section: 8 + header length
};

// Bits per element of a safetensors dtype name ("F32" -> 32, "BF16" -> 16, "F4" -> 4), or 0
// when the name is not a safetensors dtype.
int safetensors_dtype_bits(std::string_view dtype);

// The safetensors name of a tapegrok dtype ("F32", "F64", "I32"), and back (nullopt for dtypes
// tapegrok cannot hold, e.g. "BF16").
const char* safetensors_dtype_name(DType dtype);
std::optional<DType> dtype_from_safetensors(std::string_view dtype);

// Parses and validates the header of the safetensors file held in bytes[0, size). See above.
SafetensorsHeader parse_safetensors_header(const std::uint8_t* bytes, std::size_t size, const std::string& origin);
// The same from the file's first bytes alone: bytes[0, available) holds at least the length and the
// header, file_size is the whole file's (the data section is checked against it, not read).
SafetensorsHeader parse_safetensors_header(const std::uint8_t* bytes, std::size_t available, std::uint64_t file_size,
                                           const std::string& origin);

// A name or value from a hostile file, safe to put into an error message: control characters, quotes
// and backslashes escaped, at most ~120 bytes.
std::string printable(std::string_view s);

// The first data_start bytes of a file holding `entries` (8-byte length + JSON header padded with
// spaces so that the data section starts 8-byte aligned). Entries must be known dtypes, have unique
// names other than "__metadata__", and byte ranges matching their shapes; names, metadata keys and
// values must be valid UTF-8, and the byte ranges must lie back to back in the given order,
// starting at 0. Throws tg::Error naming `origin` otherwise. The caller writes the
// data section after it.
std::string build_safetensors_header(const std::vector<SafetensorsEntry>& entries,
                                     const std::map<std::string, std::string>& metadata,
                                     const std::string& origin);

}  // namespace tg
