#include "engine/safetensors.h"

#include <charconv>
#include <cmath>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>

#include <fmt/format.h>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/safetensors_format.h"

namespace tg {
namespace {

std::string errno_text(int err) { return std::system_category().message(err); }

// An open file, closed on scope exit.
struct FileHandle {
  int fd = -1;
  ~FileHandle() {
    if (fd >= 0) ::close(fd);
  }
};

// Reads exactly n bytes at offset, or throws naming the file (a file that shrank is truncated).
void read_at(int fd, const std::string& path, std::uint64_t offset, void* out, std::size_t n) {
  auto* p = static_cast<char*>(out);
  while (n > 0) {
    const ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      throw Error(fmt::format("load_safetensors: cannot read {}: {}", path, errno_text(err)));
    }
    TG_CHECK(r > 0, "load_safetensors: {} ended early (did it shrink while being read?)", path);
    p += r;
    n -= static_cast<std::size_t>(r);
    offset += static_cast<std::uint64_t>(r);
  }
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  TG_CHECK(!path.empty(), "save_safetensors: the path is empty");
  // Everything that can fail without touching the disk happens first.
  std::vector<Tensor> host;
  std::vector<SafetensorsEntry> entries;
  host.reserve(tensors.size());
  entries.reserve(tensors.size());
  std::uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    TG_CHECK(t.defined(), "save_safetensors {}: tensor '{}' is undefined", path, name);
    Tensor h = t.to(Device::cpu()).contiguous();
    const std::uint64_t bytes = static_cast<std::uint64_t>(h.numel()) * dtype_size(h.dtype());
    entries.push_back({name, safetensors_dtype_name(h.dtype()), h.shape(), offset, offset + bytes});
    offset += bytes;
    host.push_back(std::move(h));
  }
  std::string header;
  try {
    header = build_safetensors_header(entries, metadata, path);
  } catch (const Error& e) {
    throw Error(fmt::format("save_safetensors: {}", e.what()));
  }

  try {
    AtomicFileWriter out(path);
    out.write(header.data(), header.size());
    for (std::size_t i = 0; i < host.size(); ++i) {
      const std::size_t bytes = entries[i].end - entries[i].begin;
      if (bytes > 0) out.write(host[i].raw_data(), bytes);
    }
    out.commit();
  } catch (const Error& e) {
    throw Error(fmt::format("save_safetensors: {}", e.what()));
  }
}

SafetensorsFile load_safetensors(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-file.
  FileHandle file{::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC)};
  if (file.fd < 0) {
    const int err = errno;
    throw Error(fmt::format("load_safetensors: cannot open {}: {}", path, errno_text(err)));
  }
  struct stat st {};
  if (::fstat(file.fd, &st) != 0) {
    const int err = errno;
    throw Error(fmt::format("load_safetensors: cannot stat {}: {}", path, errno_text(err)));
  }
  TG_CHECK(S_ISREG(st.st_mode), "load_safetensors: {} is not a regular file", path);
  const auto size = static_cast<std::uint64_t>(st.st_size);

  // The length and the header first: nothing larger than the header is read or allocated before the
  // header has been checked against the file's size.
  std::vector<std::uint8_t> head(8);
  if (size >= 8) read_at(file.fd, path, 0, head.data(), 8);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, head.data(), 8);
  if (size >= 8 && header_len <= kSafetensorsMaxHeaderBytes && header_len <= size - 8) {
    head.resize(8 + header_len);
    read_at(file.fd, path, 8, head.data() + 8, header_len);
  }
  const SafetensorsHeader header =
      parse_safetensors_header(head.data(), size >= 8 ? head.size() : static_cast<std::size_t>(size), size, path);

  // Every entry lies inside the file (checked), so the tensors together take at most its size.
  SafetensorsFile out;
  out.path = path;
  out.metadata = header.metadata;
  out.names.reserve(header.entries.size());
  for (const SafetensorsEntry& e : header.entries) {
    const std::optional<DType> dtype = dtype_from_safetensors(e.dtype);
    TG_CHECK(dtype.has_value(),
             "safetensors file {}: tensor '{}' has dtype {}, which is not supported by tapegrok (it reads F32, F64 "
             "and I32)",
             path, printable(e.name), printable(e.dtype));
    Tensor t = Tensor::empty(e.shape, *dtype);
    const std::uint64_t bytes = e.end - e.begin;
    if (bytes > 0) read_at(file.fd, path, header.data_start + e.begin, t.raw_data(), bytes);
    out.names.push_back(e.name);
    out.tensors.emplace(e.name, std::move(t));
  }
  return out;
}

std::int64_t SafetensorsFile::metadata_integer(const std::string& key, std::int64_t min, std::int64_t max) const {
  auto it = metadata.find(key);
  TG_CHECK(it != metadata.end(), "{}: metadata entry '{}' is missing", path, key);
  const std::string& text = it->second;
  std::int64_t value = 0;
  const char* end = text.data() + text.size();
  const auto [stop, error] = std::from_chars(text.data(), end, value);
  TG_CHECK(!text.empty() && error == std::errc() && stop == end, "{}: metadata entry '{}' = \"{}\" is not an integer",
           path, key, printable(text));
  TG_CHECK(value >= min && value <= max, "{}: metadata entry '{}' = {} is outside [{}, {}]", path, key, value, min,
           max);
  return value;
}

const Tensor& SafetensorsFile::at(const std::string& name) const {
  const auto it = tensors.find(name);
  if (it != tensors.end()) return it->second;
  constexpr std::size_t kShown = 8;
  std::string listed;
  for (std::size_t i = 0; i < names.size() && i < kShown; ++i) {
    listed += fmt::format("{}'{}'", i ? ", " : "", printable(names[i]));
  }
  if (names.size() > kShown) listed += fmt::format(", ... ({} more)", names.size() - kShown);
  throw Error(fmt::format("safetensors file {}: no tensor named '{}' (it holds {} tensor{}{}{})", path, name,
                          names.size(), names.size() == 1 ? "" : "s", names.empty() ? "" : ": ", listed));
}

void expect_tensor(const SafetensorsFile& file, const std::string& name, DType dtype, const Shape& shape) {
  const auto it = file.tensors.find(name);
  TG_CHECK(it != file.tensors.end(), "checkpoint {}: tensor '{}' is missing but the model needs {} {}", file.path,
           name, shape_str(shape), dtype_name(dtype));
  const Tensor& t = it->second;
  TG_CHECK(t.dtype() == dtype && t.shape() == shape,
           "checkpoint {}: tensor '{}' has shape {} {} but the model needs {} {}", file.path, name,
           shape_str(t.shape()), dtype_name(t.dtype()), shape_str(shape), dtype_name(dtype));
  // Weights and optimizer state are never NaN or inf in a run that did not diverge.
  auto check_finite = [&](const auto* v) {
    for (std::int64_t i = 0; i < t.numel(); ++i) {
      TG_CHECK(std::isfinite(v[i]), "checkpoint {}: tensor '{}' holds {} at flat index {}", file.path, name,
               static_cast<double>(v[i]), i);
    }
  };
  if (t.dtype() == DType::f32) check_finite(static_cast<const float*>(t.raw_data()));
  if (t.dtype() == DType::f64) check_finite(static_cast<const double*>(t.raw_data()));
}

}  // namespace tg
