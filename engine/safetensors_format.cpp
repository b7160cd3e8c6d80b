#include "engine/safetensors_format.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/error.h"

namespace tg {

// A name from a hostile file, safe to put into an error message: control characters, quotes and
// backslashes escaped, at most ~120 bytes.
std::string printable(std::string_view s) {
  constexpr std::size_t kLimit = 120;
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (out.size() >= kLimit) {
      out += fmt::format("... ({} bytes in all)", s.size());
      break;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\\' || c == '\'') {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; tapegrok reads and writes it as host memory");

using json = nlohmann::json;

struct DtypeBits {
  std::string_view name;
  int bits;
};

// Every dtype name of the safetensors format (so that a loader can say "BF16 is not supported"
// rather than "unknown dtype"). Sub-byte types pack elements without padding.
constexpr DtypeBits kDtypes[] = {
    {"BOOL", 8},     {"U8", 8},  {"I8", 8},   {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F4", 4},
    {"F6_E2M3", 6},  {"F6_E3M2", 6}, {"I16", 16}, {"U16", 16}, {"F16", 16},   {"BF16", 16},  {"I32", 32},
    {"U32", 32},     {"F32", 32}, {"I64", 64}, {"U64", 64},  {"F64", 64},    {"C64", 64},
};

constexpr std::uint64_t kInt64Max = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());


std::string clip(std::string_view s, std::size_t limit) {
  if (s.size() <= limit) return std::string(s);
  return fmt::format("{}... ({} characters in all)", s.substr(0, limit), s.size());
}

std::string shape_text(const std::vector<std::int64_t>& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// Bytes taken by `shape` elements of `dtype`; throws (prefixed by `where`) on overflow or when the
// elements do not fill whole bytes. Also requires the product of the non-zero dims to fit in int64,
// so that a tensor of that shape (and its strides) can exist even when it has no elements.
std::uint64_t byte_size(const std::string& where, const std::vector<std::int64_t>& shape, std::string_view dtype) {
  const int bits = safetensors_dtype_bits(dtype);
  TG_CHECK(bits > 0, "{}: unknown dtype '{}'", where, printable(dtype));
  std::uint64_t nonzero_product = 1;
  bool has_zero = false;
  for (const std::int64_t d : shape) {
    TG_CHECK(d >= 0, "{}: shape {} has a negative dimension", where, shape_text(shape));
    if (d == 0) {
      has_zero = true;
      continue;
    }
    std::uint64_t next = 0;
    TG_CHECK(!__builtin_mul_overflow(nonzero_product, static_cast<std::uint64_t>(d), &next) && next <= kInt64Max,
             "{}: shape {} has too many elements (the count overflows a 64-bit integer)", where, shape_text(shape));
    nonzero_product = next;
  }
  const std::uint64_t numel = has_zero ? 0 : nonzero_product;
  std::uint64_t total_bits = 0;
  TG_CHECK(!__builtin_mul_overflow(numel, static_cast<std::uint64_t>(bits), &total_bits),
           "{}: shape {} of {} has too many bytes (the size overflows a 64-bit integer)", where, shape_text(shape),
           dtype);
  TG_CHECK(total_bits % 8 == 0, "{}: {} elements of {} ({} bits each) do not fill a whole number of bytes", where,
           numel, dtype, bits);
  return total_bits / 8;
}

// ------------------------------------------------------------------------------------------------
// The header parser: a SAX handler for nlohmann's parser, validating as it goes. It keeps only the
// entries and metadata it accepts, so its memory is proportional to the header, and it needs no
// stack of its own: ignored values are skipped with a depth counter.

class HeaderSax {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  HeaderSax(std::string prefix, std::uint64_t data_size) : prefix_(std::move(prefix)), data_size_(data_size) {}

  // ---- the SAX interface ----
  bool null() { return scalar(Kind::null); }
  bool boolean(bool) { return scalar(Kind::boolean); }
  bool number_integer(number_integer_t v) {
    if (v >= 0) return number(static_cast<std::uint64_t>(v));
    return scalar(Kind::negative, fmt::format("{}", v));
  }
  bool number_unsigned(number_unsigned_t v) { return number(v); }
  bool number_float(number_float_t, const string_t& text) { return scalar(Kind::floating, text); }
  bool binary(binary_t&) { return scalar(Kind::other); }  // not produced by the JSON parser

  bool string(string_t& s) {
    switch (state_) {
      case State::meta_value:
        metadata_.emplace(std::move(meta_key_), std::move(s));
        state_ = State::meta;
        return true;
      case State::field:
        if (field_ == Field::dtype) {
          TG_CHECK(safetensors_dtype_bits(s) > 0, "{}: dtype '{}' is not a safetensors dtype", where(),
                   printable(s));
          entry_.dtype = std::move(s);
          state_ = State::entry;
          return true;
        }
        return scalar(Kind::string);
      default:
        return scalar(Kind::string);
    }
  }

  bool start_object(std::size_t) {
    switch (state_) {
      case State::top:
        state_ = State::root;
        return true;
      case State::root_value:
        if (in_meta_) {
          state_ = State::meta;
        } else {
          entry_.shape.clear();
          entry_.dtype.clear();
          entry_.begin = entry_.end = 0;
          have_dtype_ = have_shape_ = have_offsets_ = false;
          state_ = State::entry;
        }
        return true;
      case State::skip:
        ++skip_depth_;
        return true;
      default:
        return scalar(Kind::object);
    }
  }

  bool start_array(std::size_t) {
    switch (state_) {
      case State::skip:
        ++skip_depth_;
        return true;
      case State::field:
        if (field_ == Field::shape) {
          state_ = State::shape;
          return true;
        }
        if (field_ == Field::offsets) {
          offsets_seen_ = 0;
          state_ = State::offsets;
          return true;
        }
        return scalar(Kind::array);
      default:
        return scalar(Kind::array);
    }
  }

  bool key(string_t& k) {
    switch (state_) {
      case State::root:
        TG_CHECK(seen_.insert(k).second, "{}: the header names '{}' twice", prefix_, printable(k));
        in_meta_ = k == "__metadata__";
        if (!in_meta_) entry_.name = std::move(k);
        state_ = State::root_value;
        return true;
      case State::meta:
        TG_CHECK(!metadata_.contains(k), "{}: __metadata__ has the key '{}' twice", prefix_, printable(k));
        meta_key_ = std::move(k);
        state_ = State::meta_value;
        return true;
      case State::entry: {
        bool* have = nullptr;
        if (k == "dtype") {
          field_ = Field::dtype;
          have = &have_dtype_;
        } else if (k == "shape") {
          field_ = Field::shape;
          have = &have_shape_;
        } else if (k == "data_offsets") {
          field_ = Field::offsets;
          have = &have_offsets_;
        } else {  // an unknown field: ignored, like the reference implementation does
          state_ = State::skip;
          skip_depth_ = 0;
          return true;
        }
        TG_CHECK(!*have, "{}: field '{}' appears twice", where(), k);
        *have = true;
        state_ = State::field;
        return true;
      }
      case State::skip:
        return true;
      default:
        throw Error(fmt::format("{}: unexpected key '{}' in the header", prefix_, printable(k)));
    }
  }

  bool end_object() {
    switch (state_) {
      case State::root:
        state_ = State::done;
        return true;
      case State::meta:
        state_ = State::root;
        return true;
      case State::entry:
        finish_entry();
        state_ = State::root;
        return true;
      case State::skip:
        if (--skip_depth_ == 0) state_ = State::entry;
        return true;
      default:
        throw Error(fmt::format("{}: malformed header (unexpected end of object)", prefix_));
    }
  }

  bool end_array() {
    switch (state_) {
      case State::shape:
        state_ = State::entry;
        return true;
      case State::offsets:
        TG_CHECK(offsets_seen_ == 2, "{}: data_offsets must hold two numbers [begin, end], not {}", where(),
                 offsets_seen_);
        state_ = State::entry;
        return true;
      case State::skip:
        if (--skip_depth_ == 0) state_ = State::entry;
        return true;
      default:
        throw Error(fmt::format("{}: malformed header (unexpected end of array)", prefix_));
    }
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& ex) {
    throw Error(fmt::format("{}: the header is not valid JSON: {}", prefix_, clip(ex.what(), 400)));
  }

  // ---- results ----
  bool done() const { return state_ == State::done; }
  std::vector<SafetensorsEntry>& entries() { return entries_; }
  std::map<std::string, std::string>& metadata() { return metadata_; }

 private:
  enum class State { top, root, root_value, meta, meta_value, entry, field, shape, offsets, skip, done };
  enum class Field { dtype, shape, offsets };
  enum class Kind { null, boolean, number, negative, floating, string, object, array, other };

  static const char* describe(Kind kind) {
    switch (kind) {
      case Kind::null: return "null";
      case Kind::boolean: return "a boolean";
      case Kind::number: return "a number";
      case Kind::negative: return "a negative number";
      case Kind::floating: return "a non-integer number";
      case Kind::string: return "a string";
      case Kind::object: return "an object";
      case Kind::array: return "an array";
      case Kind::other: return "binary data";
    }
    return "?";
  }

  std::string where() const { return fmt::format("{}: tensor '{}'", prefix_, printable(entry_.name)); }

  // A non-negative integer value.
  bool number(std::uint64_t v) {
    switch (state_) {
      case State::shape:
        TG_CHECK(v <= kInt64Max, "{}: shape dimension {} is too large", where(), v);
        TG_CHECK(entry_.shape.size() < kSafetensorsMaxRank, "{}: shape has more than {} dimensions", where(),
                 kSafetensorsMaxRank);
        entry_.shape.push_back(static_cast<std::int64_t>(v));
        return true;
      case State::offsets:
        TG_CHECK(offsets_seen_ < 2, "{}: data_offsets must hold two numbers [begin, end], not more", where());
        (offsets_seen_ == 0 ? entry_.begin : entry_.end) = v;
        ++offsets_seen_;
        return true;
      default:
        return scalar(Kind::number, fmt::format("{}", v));
    }
  }

  // Any value that is not what the current position wants (or a scalar inside a skipped value).
  bool scalar(Kind kind, std::string_view text = {}) {
    const std::string got_text =
        text.empty() ? describe(kind) : fmt::format("{} ({})", describe(kind), clip(text, 40));
    switch (state_) {
      case State::skip:
        if (skip_depth_ == 0) state_ = State::entry;
        return true;
      case State::root_value:
        if (in_meta_) {
          TG_CHECK(kind == Kind::null, "{}: __metadata__ must be an object of strings, not {}", prefix_, got_text);
          state_ = State::root;
          return true;
        }
        throw Error(fmt::format("{}: the entry of tensor '{}' must be an object, not {}", prefix_,
                                printable(entry_.name), got_text));
      case State::meta_value:
        throw Error(fmt::format("{}: __metadata__ value of '{}' must be a string, not {}", prefix_,
                                printable(meta_key_), got_text));
      case State::field:
        switch (field_) {
          case Field::dtype: throw Error(fmt::format("{}: dtype must be a string, not {}", where(), got_text));
          case Field::shape:
            throw Error(fmt::format("{}: shape must be an array of integers, not {}", where(), got_text));
          case Field::offsets:
            throw Error(fmt::format("{}: data_offsets must be an array [begin, end], not {}", where(), got_text));
        }
        break;
      case State::shape:
        throw Error(fmt::format("{}: shape dimensions must be non-negative integers, not {}", where(), got_text));
      case State::offsets:
        throw Error(fmt::format("{}: data_offsets must be non-negative integers, not {}", where(), got_text));
      case State::top:
        throw Error(fmt::format("{}: the header must be a JSON object, not {}", prefix_, got_text));
      default:
        break;
    }
    throw Error(fmt::format("{}: malformed header (unexpected {})", prefix_, got_text));
  }

  void finish_entry() {
    TG_CHECK(have_dtype_, "{}: the entry has no 'dtype'", where());
    TG_CHECK(have_shape_, "{}: the entry has no 'shape'", where());
    TG_CHECK(have_offsets_, "{}: the entry has no 'data_offsets'", where());
    const std::string w = where();
    TG_CHECK(entry_.begin <= entry_.end, "{}: data_offsets [{}, {}] end before they begin", w, entry_.begin,
             entry_.end);
    const std::uint64_t bytes = byte_size(w, entry_.shape, entry_.dtype);
    TG_CHECK(entry_.end <= data_size_,
             "{}: data_offsets [{}, {}] reach past the end of the data section, which holds {} bytes "
             "(is the file truncated?)",
             w, entry_.begin, entry_.end, data_size_);
    TG_CHECK(entry_.end - entry_.begin == bytes,
             "{}: data_offsets [{}, {}] span {} bytes but shape {} of {} needs {} bytes", w, entry_.begin, entry_.end,
             entry_.end - entry_.begin, shape_text(entry_.shape), entry_.dtype, bytes);
    entries_.push_back(std::move(entry_));
    entry_ = SafetensorsEntry{};
  }

  std::string prefix_;
  std::uint64_t data_size_;
  State state_ = State::top;
  Field field_ = Field::dtype;
  bool in_meta_ = false;
  SafetensorsEntry entry_;
  bool have_dtype_ = false, have_shape_ = false, have_offsets_ = false;
  int offsets_seen_ = 0;
  std::size_t skip_depth_ = 0;
  std::string meta_key_;
  std::unordered_set<std::string> seen_;
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, std::string> metadata_;
};

std::string json_string(const std::string& s, const std::string& prefix, const std::string& what) {
  try {
    return json(s).dump();
  } catch (const json::exception&) {
    throw Error(fmt::format("{}: {} '{}' is not valid UTF-8", prefix, what, printable(s)));
  }
}

}  // namespace

int safetensors_dtype_bits(std::string_view dtype) {
  for (const DtypeBits& d : kDtypes) {
    if (d.name == dtype) return d.bits;
  }
  return 0;
}

const char* safetensors_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "F32";
    case DType::f64: return "F64";
    case DType::i32: return "I32";
  }
  return "?";
}

std::optional<DType> dtype_from_safetensors(std::string_view dtype) {
  if (dtype == "F32") return DType::f32;
  if (dtype == "F64") return DType::f64;
  if (dtype == "I32") return DType::i32;
  return std::nullopt;
}

SafetensorsHeader parse_safetensors_header(const std::uint8_t* bytes, std::size_t size, const std::string& origin) {
  return parse_safetensors_header(bytes, size, size, origin);
}

SafetensorsHeader parse_safetensors_header(const std::uint8_t* bytes, std::size_t available, std::uint64_t size,
                                           const std::string& origin) {
  const std::string prefix = fmt::format("safetensors file {}", origin);
  TG_CHECK(bytes != nullptr || available == 0, "{}: no data", prefix);
  TG_CHECK(available <= size, "{}: {} bytes given of a {}-byte file", prefix, available, size);
  TG_CHECK(size >= 8 && available >= 8,
           "{}: the file has {} bytes, fewer than the 8 of the header length (is it truncated?)", prefix, size);
  std::uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian (static_assert above)
  TG_CHECK(header_len <= kSafetensorsMaxHeaderBytes,
           "{}: the header length {} is larger than the limit of {} bytes (not a safetensors file?)", prefix,
           header_len, kSafetensorsMaxHeaderBytes);
  TG_CHECK(header_len <= size - 8,
           "{}: the header length {} reaches past the end of the file, which has {} bytes (is it truncated?)", prefix,
           header_len, size);
  TG_CHECK(8 + header_len <= available, "{}: only {} of the header's {} bytes were read", prefix, available - 8,
           header_len);
  TG_CHECK(header_len > 0 && bytes[8] == '{', "{}: the header does not start with '{{' (not a safetensors file?)",
           prefix);
  // JSON has no NUL; a parser that stopped at one would accept "{...}\0anything".
  if (const void* nul = std::memchr(bytes + 8, 0, header_len)) {
    throw Error(fmt::format("{}: the header holds a NUL byte at offset {}", prefix,
                            static_cast<const std::uint8_t*>(nul) - bytes));
  }

  const std::uint64_t data_start = 8 + header_len;
  HeaderSax sax(prefix, size - data_start);
  const char* first = reinterpret_cast<const char*>(bytes + 8);
  try {
    json::sax_parse(first, first + header_len, &sax);
  } catch (const json::exception& e) {  // the parser reports through parse_error; this is a backstop
    throw Error(fmt::format("{}: the header is not valid JSON: {}", prefix, clip(e.what(), 400)));
  }
  TG_CHECK(sax.done(), "{}: the header is not a complete JSON object", prefix);

  SafetensorsHeader header;
  header.entries = std::move(sax.entries());
  header.metadata = std::move(sax.metadata());
  header.data_start = data_start;

  // The tensors must tile the data section: sorted by offsets, each starts where the last ended.
  std::stable_sort(header.entries.begin(), header.entries.end(), [](const SafetensorsEntry& a,
                                                                    const SafetensorsEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t covered = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry& e : header.entries) {
    TG_CHECK(e.begin >= covered, "{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {}))", prefix,
             printable(e.name), e.begin, e.end, previous ? printable(previous->name) : "", previous ? previous->begin : 0,
             covered);
    TG_CHECK(e.begin == covered,
             "{}: bytes [{}, {}) of the data section belong to no tensor (a hole before tensor '{}'); "
             "safetensors files must not have holes",
             prefix, covered, e.begin, printable(e.name));
    covered = e.end;
    previous = &e;
  }
  const std::uint64_t data_size = size - data_start;
  TG_CHECK(covered == data_size,
           "{}: the data section has {} bytes but the tensors cover only the first {} (trailing bytes)", prefix,
           data_size, covered);
  return header;
}

std::string build_safetensors_header(const std::vector<SafetensorsEntry>& entries,
                                     const std::map<std::string, std::string>& metadata, const std::string& origin) {
  const std::string prefix = fmt::format("safetensors file {}", origin);
  std::string text = "{";
  bool first = true;
  if (!metadata.empty()) {
    text += "\"__metadata__\":{";
    for (const auto& [k, v] : metadata) {
      if (!first) text += ',';
      first = false;
      text += json_string(k, prefix, "metadata key");
      text += ':';
      text += json_string(v, prefix, fmt::format("metadata value of '{}'", printable(k)));
    }
    text += '}';
    first = false;
  }
  std::unordered_set<std::string_view> names;
  std::uint64_t next_begin = 0;
  for (const SafetensorsEntry& e : entries) {
    const std::string w = fmt::format("{}: tensor '{}'", prefix, printable(e.name));
    TG_CHECK(e.name != "__metadata__", "{}: '__metadata__' is reserved and cannot name a tensor", prefix);
    TG_CHECK(names.insert(e.name).second, "{}: two tensors are named '{}'", prefix, printable(e.name));
    const std::uint64_t bytes = byte_size(w, e.shape, e.dtype);
    TG_CHECK(e.begin == next_begin && e.end >= e.begin && e.end - e.begin == bytes,
             "{}: data_offsets [{}, {}] do not follow the previous tensor at {} with the {} bytes of shape {} {}", w,
             e.begin, e.end, next_begin, bytes, shape_text(e.shape), e.dtype);
    next_begin = e.end;
    if (!first) text += ',';
    first = false;
    text += json_string(e.name, prefix, "tensor name");
    text += fmt::format(R"(:{{"dtype":"{}","shape":[{}],"data_offsets":[{},{}]}})", e.dtype, fmt::join(e.shape, ","),
                        e.begin, e.end);
  }
  text += '}';
  const std::size_t pad = (8 - (8 + text.size()) % 8) % 8;
  text.append(pad, ' ');
  TG_CHECK(text.size() <= kSafetensorsMaxHeaderBytes, "{}: the header would have {} bytes, more than the limit of {}",
           prefix, text.size(), kSafetensorsMaxHeaderBytes);
  const std::uint64_t n = text.size();
  std::string out(8, '\0');
  std::memcpy(out.data(), &n, 8);
  out += text;
  return out;
}

}  // namespace tg
