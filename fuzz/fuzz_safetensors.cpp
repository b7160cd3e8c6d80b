// libFuzzer target for the safetensors header parser (engine/safetensors_format.cpp).
//
// Each input is parsed twice:
//   1. as a whole file, exactly as given;
//   2. in "split" form, when it contains a NUL byte at p: input[0, p) is the header text and
//      input[p + 1, end) the data section, with the 8-byte length computed here. This lets the
//      fuzzer change the JSON freely without also having to fix up the length prefix.
// A tg::Error is the expected outcome for bad input. Anything else is a bug and aborts: a crash,
// a sanitizer report, another exception, or an accepted header that breaks the parser's promises
// (ranges inside the data section, tiling it exactly, sizes matching shapes, and a header rebuilt
// by build_safetensors_header parsing back to the same entries and metadata).
// Built and run by fuzz/run-fuzzer.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/error.h"
#include "engine/safetensors_format.h"

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", what);
  std::abort();
}

void check_header(const tg::SafetensorsHeader& h, const std::uint8_t* data, std::size_t size) {
  if (h.data_start < 8 || h.data_start > size) fail("data_start outside the file");
  const std::uint64_t data_size = size - h.data_start;
  std::uint64_t covered = 0;
  for (const tg::SafetensorsEntry& e : h.entries) {
    if (e.begin != covered) fail("entries do not tile the data section");
    if (e.end < e.begin || e.end > data_size) fail("entry outside the data section");
    const int bits = tg::safetensors_dtype_bits(e.dtype);
    if (bits <= 0) fail("unknown dtype accepted");
    unsigned __int128 count = 1, nonzero = 1;
    for (const std::int64_t d : e.shape) {
      if (d < 0) fail("negative dimension accepted");
      if (d == 0) {
        count = 0;
        continue;
      }
      count *= static_cast<unsigned __int128>(d);
      nonzero *= static_cast<unsigned __int128>(d);
      if (nonzero > static_cast<unsigned __int128>(INT64_MAX)) fail("shape with an int64-overflowing size accepted");
    }
    if (count * static_cast<unsigned>(bits) != static_cast<unsigned __int128>(e.end - e.begin) * 8) {
      fail("byte range does not match the shape");
    }
    if (const auto dtype = tg::dtype_from_safetensors(e.dtype); dtype && e.dtype != tg::safetensors_dtype_name(*dtype)) {
      fail("dtype names do not round-trip");
    }
    covered = e.end;
  }
  if (covered != data_size) fail("data section not fully covered");

  // Round trip: the header we would write for these entries parses back to the same thing.
  std::string rebuilt;
  try {
    rebuilt = tg::build_safetensors_header(h.entries, h.metadata, "fuzz-rebuilt");
  } catch (const tg::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fail("an accepted header cannot be rebuilt");
  }
  rebuilt.append(reinterpret_cast<const char*>(data) + h.data_start, data_size);
  tg::SafetensorsHeader again;
  try {
    again = tg::parse_safetensors_header(reinterpret_cast<const std::uint8_t*>(rebuilt.data()), rebuilt.size(),
                                         "fuzz-rebuilt");
  } catch (const tg::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    fail("a rebuilt header does not parse");
  }
  if (again.entries != h.entries) fail("rebuilt entries differ");
  if (again.metadata != h.metadata) fail("rebuilt metadata differs");
  if (again.data_start % 8 != 0) fail("rebuilt data section is not aligned");
}

void parse_one(const std::uint8_t* data, std::size_t size) {
  tg::SafetensorsHeader h;
  try {
    h = tg::parse_safetensors_header(data, size, "fuzz-input");
  } catch (const tg::Error& e) {
    if (std::strstr(e.what(), "fuzz-input") == nullptr) fail("error message does not name the file");
    return;
  }
  check_header(h, data, size);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  parse_one(data, size);
  const void* nul = size > 0 ? std::memchr(data, 0, size) : nullptr;
  if (nul != nullptr) {
    const std::size_t p = static_cast<std::size_t>(static_cast<const std::uint8_t*>(nul) - data);
    std::string file(8, '\0');
    const std::uint64_t n = p;
    std::memcpy(file.data(), &n, 8);
    file.append(reinterpret_cast<const char*>(data), p);
    file.append(reinterpret_cast<const char*>(data) + p + 1, size - p - 1);
    parse_one(reinterpret_cast<const std::uint8_t*>(file.data()), file.size());
  }
  return 0;
}
