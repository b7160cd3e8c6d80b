// safetensors files: round trips, the byte layout checked against hand-built bytes and an
// independent parse of what we write, every validation error, and atomic saves.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>
#include <nlohmann/json.hpp>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/safetensors.h"
#include "engine/safetensors_format.h"
#include "engine/tensor.h"
#include "support.h"

using namespace tg;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at the end.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    path_ = fs::temp_directory_path() /
            ("tapegrok_safetensors_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  std::set<std::string> listing() const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(path_)) names.insert(e.path().filename().string());
    return names;
  }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Little-endian encodings written out by shifts, independent of the host's memory layout.
std::string le(std::uint64_t v, int bytes) {
  std::string out;
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}
std::uint64_t read_le64(const std::string& s) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  return v;
}

// A safetensors file from a header JSON text and a data section, built by hand.
std::string file_bytes(const std::string& header, const std::string& data) {
  return le(header.size(), 8) + header + data;
}

SafetensorsHeader parse(const std::string& bytes, const std::string& origin = "mem.safetensors") {
  return parse_safetensors_header(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size(), origin);
}

// The header JSON of one entry.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape, std::uint64_t begin,
                  std::uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
         std::to_string(begin) + "," + std::to_string(end) + "]}";
}

}  // namespace

TEST_CASE("safetensors round trip of f32, f64 and i32 tensors with metadata", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  const Tensor a = Tensor::from_vector<float>({1.f, -2.5f, 3.25f, 0.f, 1e-30f, -7.f}, {2, 3});
  const Tensor b = Tensor::from_vector<double>({0.1, -1e300, 3.0, 4.5}, {4});
  const Tensor c = Tensor::from_vector<std::int32_t>({7, -1, 2147483647}, {3, 1});
  const Tensor s = Tensor::scalar(3.5, DType::f32);
  const Tensor e = Tensor::zeros({0, 5}, DType::f32);
  const Tensor e2 = Tensor::zeros({0}, DType::i32);
  const Tensor at = a.as_strided({3, 2}, {1, 3}, 0);  // a transposed view: saved in contiguous order
  const std::map<std::string, std::string> meta = {{"format", "pt"}, {"step", "1200"}, {"note", "h\u00e9llo \"q\"\n"}};
  save_safetensors(path, {{"a", a}, {"b", b}, {"c", c}, {"s", s}, {"e", e}, {"e2", e2}, {"a.T", at}}, meta);
  CHECK(dir.listing() == std::set<std::string>{"ckpt.safetensors"});

  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.path == path);
  CHECK(f.names == std::vector<std::string>{"a", "b", "c", "s", "e", "e2", "a.T"});
  CHECK(f.metadata == meta);
  CHECK(f.at("a").dtype() == DType::f32);
  CHECK(f.at("a").shape() == Shape{2, 3});
  CHECK(f.at("a").to_vector<float>() == a.to_vector<float>());
  CHECK(f.at("b").dtype() == DType::f64);
  CHECK(f.at("b").to_vector<double>() == b.to_vector<double>());
  CHECK(f.at("c").dtype() == DType::i32);
  CHECK(f.at("c").shape() == Shape{3, 1});
  CHECK(f.at("c").to_vector<std::int32_t>() == c.to_vector<std::int32_t>());
  CHECK(f.at("s").shape().empty());
  CHECK(f.at("s").item() == 3.5);
  CHECK(f.at("e").shape() == Shape{0, 5});
  CHECK(f.at("e").numel() == 0);
  CHECK(f.at("e2").shape() == Shape{0});
  CHECK(f.at("e2").dtype() == DType::i32);
  CHECK(f.at("a.T").shape() == Shape{3, 2});
  CHECK(f.at("a.T").to_vector<float>() == std::vector<float>{1.f, 0.f, -2.5f, 1e-30f, 3.25f, -7.f});
  CHECK(f.at("a").device().is_cpu());
  CHECK_NOTHROW(expect_tensor(f, "a", DType::f32, {2, 3}));

  // Saving again replaces the file.
  save_safetensors(path, {{"only", Tensor::from_vector<float>({9.f}, {1})}});
  const SafetensorsFile g = load_safetensors(path);
  CHECK(g.names == std::vector<std::string>{"only"});
  CHECK(g.metadata.empty());
  CHECK(g.at("only").item() == 9.0);
  CHECK(dir.listing() == std::set<std::string>{"ckpt.safetensors"});

  // No tensors at all is a valid file too.
  save_safetensors(path, {}, {{"empty", "yes"}});
  const SafetensorsFile h = load_safetensors(path);
  CHECK(h.names.empty());
  CHECK(h.metadata.at("empty") == "yes");
}

TEST_CASE("safetensors round trip from the GPU", "[safetensors][cuda]") {
  if (!cuda_is_available()) SKIP("no GPU: " << cuda_unavailable_reason());
  TempDir dir;
  const std::string path = dir.file("gpu.safetensors");
  const Tensor a = Tensor::from_vector<float>({1.f, 2.f, 3.f, 4.f, 5.f, 6.f}, {2, 3}, Device::cuda());
  const Tensor ids = Tensor::from_vector<std::int32_t>({4, 5}, {2}, Device::cuda());
  save_safetensors(path, {{"a", a}, {"a.T", a.as_strided({3, 2}, {1, 3}, 0)}, {"ids", ids}});
  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.at("a").device().is_cpu());
  CHECK(f.at("a").to_vector<float>() == std::vector<float>{1.f, 2.f, 3.f, 4.f, 5.f, 6.f});
  CHECK(f.at("a.T").to_vector<float>() == std::vector<float>{1.f, 4.f, 2.f, 5.f, 3.f, 6.f});
  CHECK(f.at("ids").to_vector<std::int32_t>() == std::vector<std::int32_t>{4, 5});
}

TEST_CASE("safetensors: a file built byte by byte loads with the right values", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  // Unaligned header (no padding), keys not in data order, an unknown field (ignored, as the
  // reference implementation does), F64 data written as IEEE bit patterns.
  const std::string header =
      "{\"ids\":{\"dtype\":\"I32\",\"shape\":[3],\"data_offsets\":[16,28]},"
      "\"__metadata__\":{\"format\":\"pt\"},"
      "\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16],\"extra\":{\"x\":[1,{}]}},"
      "\"d\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[28,36]}}";
  const std::string data = le(0x3f800000u, 4) + le(0x40000000u, 4) + le(0xbf000000u, 4) + le(0x40500000u, 4) +  //
                           le(7, 4) + le(0xffffffffu, 4) + le(65536, 4) +                                        //
                           le(0xc004000000000000ull, 8);
  write_bytes(path, file_bytes(header, data));
  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.names == std::vector<std::string>{"w", "ids", "d"});  // data order
  CHECK(f.metadata == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(f.at("w").shape() == Shape{2, 2});
  CHECK(f.at("w").to_vector<float>() == std::vector<float>{1.f, 2.f, -0.5f, 3.25f});
  CHECK(f.at("ids").to_vector<std::int32_t>() == std::vector<std::int32_t>{7, -1, 65536});
  CHECK(f.at("d").shape().empty());
  CHECK(f.at("d").item() == -2.5);

  // Trailing spaces after the JSON object are allowed; so is whitespace inside it.
  const std::string padded = "{ \"x\" : { \"dtype\" : \"F32\", \"shape\" : [ 1 ], \"data_offsets\" : [ 0, 4 ] } }     ";
  write_bytes(path, file_bytes(padded, le(0x3fc00000u, 4)));
  CHECK(load_safetensors(path).at("x").item() == 1.5);

  // Known dtypes tapegrok cannot hold still parse at the format level (sub-byte ones included).
  const std::string sub_byte = "{" + entry("h", "BF16", "[3]", 0, 6) + "," + entry("q", "F4", "[2,3]", 6, 9) + "}";
  const SafetensorsHeader h = parse(file_bytes(sub_byte, std::string(9, '\0')));
  CHECK(h.data_start == 8 + sub_byte.size());
  REQUIRE(h.entries.size() == 2);
  CHECK(h.entries[0].dtype == "BF16");
  CHECK(h.entries[1].shape == std::vector<std::int64_t>{2, 3});
}

TEST_CASE("safetensors: files we write have the documented layout", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("layout.safetensors");
  save_safetensors(path,
                   {{"x", Tensor::from_vector<float>({1.5f, -2.f, 0.25f}, {3})},
                    {"y", Tensor::from_vector<std::int32_t>({5, -6}, {2, 1})},
                    {"z", Tensor::from_vector<double>({1.0}, {})}},
                   {{"k", "v"}});
  const std::string bytes = read_bytes(path);
  REQUIRE(bytes.size() >= 8);
  const std::uint64_t n = read_le64(bytes);
  CHECK((8 + n) % 8 == 0);  // the data section starts 8-byte aligned
  REQUIRE(8 + n + 12 + 8 + 8 == bytes.size());
  const std::string header = bytes.substr(8, n);
  CHECK(header.front() == '{');
  const auto last = header.find_last_of('}');
  REQUIRE(last != std::string::npos);
  CHECK(header.find_first_not_of(' ', last + 1) == std::string::npos);  // only spaces after the object
  const nlohmann::json j = nlohmann::json::parse(header);
  CHECK(j.size() == 4);
  CHECK(j["__metadata__"] == nlohmann::json({{"k", "v"}}));
  CHECK(j["x"]["dtype"] == "F32");
  CHECK(j["x"]["shape"] == nlohmann::json::array({3}));
  CHECK(j["x"]["data_offsets"] == nlohmann::json::array({0, 12}));
  CHECK(j["y"]["dtype"] == "I32");
  CHECK(j["y"]["shape"] == nlohmann::json::array({2, 1}));
  CHECK(j["y"]["data_offsets"] == nlohmann::json::array({12, 20}));
  CHECK(j["z"]["dtype"] == "F64");
  CHECK(j["z"]["shape"] == nlohmann::json::array());
  CHECK(j["z"]["data_offsets"] == nlohmann::json::array({20, 28}));
  const std::string data = bytes.substr(8 + n);
  CHECK(data == le(0x3fc00000u, 4) + le(0xc0000000u, 4) + le(0x3e800000u, 4) + le(5, 4) + le(0xfffffffau, 4) +
                    le(0x3ff0000000000000ull, 8));
}

TEST_CASE("safetensors: truncated files are rejected at every cut", "[safetensors]") {
  TempDir dir;
  const std::string good = dir.file("good.safetensors");
  save_safetensors(good, {{"w", Tensor::from_vector<float>({1.f, 2.f, 3.f, 4.f}, {2, 2})},
                          {"b", Tensor::from_vector<double>({5.0}, {1})}});
  const std::string bytes = read_bytes(good);
  const std::size_t n = read_le64(bytes);
  const std::string path = dir.file("cut.safetensors");
  for (const std::size_t cut : {std::size_t{0}, std::size_t{3}, std::size_t{7}, std::size_t{8}, 8 + n / 2, 8 + n - 1,
                                8 + n, 8 + n + 5, bytes.size() - 1}) {
    INFO("cut at " << cut << " of " << bytes.size());
    write_bytes(path, bytes.substr(0, cut));
    CHECK_THROWS_WITH(load_safetensors(path), ContainsSubstring(path) && ContainsSubstring("truncated"));
  }
  write_bytes(path, bytes + "x");
  CHECK_THROWS_WITH(load_safetensors(path), ContainsSubstring(path) && ContainsSubstring("trailing bytes"));
  write_bytes(path, bytes);
  CHECK_NOTHROW(load_safetensors(path));
  CHECK_THROWS_WITH(parse_safetensors_header(nullptr, 0, "nothing"), ContainsSubstring("nothing") &&
                                                                          ContainsSubstring("fewer than the 8"));
}

TEST_CASE("safetensors: malformed headers name the file and the problem", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    write_bytes(path, bytes);
    CHECK_THROWS_WITH(load_safetensors(path), ContainsSubstring(path) && ContainsSubstring(what));
  };
  auto expect_header_error = [&](const std::string& header, const std::string& data, const std::string& what) {
    INFO(header);
    expect_error(file_bytes(header, data), what);
  };
  const std::string f4 = le(0x3f800000u, 4);

  SECTION("header length") {
    expect_error(le(1000, 8) + "{}" + std::string(90, ' '), "header length 1000 reaches past the end of the file");
    expect_error(le(1ull << 40, 8) + "{}", "larger than the limit");
    expect_error(le(~0ull, 8) + "{}", "larger than the limit");
    expect_error(le(0, 8), "does not start with '{'");
  }
  SECTION("not JSON, not an object") {
    expect_header_error("{\"a\":", "", "not valid JSON");
    expect_header_error("{\"a\":", "", "parse error");  // nlohmann's own message is included
    expect_header_error("{} x", "", "not valid JSON");
    expect_header_error("{}{}", "", "not valid JSON");
    expect_header_error("[1, 2]", "", "does not start with '{'");
    expect_header_error(" {}", "", "does not start with '{'");
    expect_header_error("{\"\xff\":1}", "", "not valid JSON");  // ill-formed UTF-8
    expect_header_error("{\"a\":5}", "", "tensor 'a' must be an object, not a number");
    expect_header_error("{\"a\":[]}", "", "tensor 'a' must be an object, not an array");
  }
  SECTION("duplicates") {
    expect_header_error("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("a", "F32", "[1]", 4, 8) + "}", f4 + f4,
                        "names 'a' twice");
    expect_header_error("{\"__metadata__\":{},\"__metadata__\":{}}", "", "names '__metadata__' twice");
    expect_header_error("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", "", "key 'k' twice");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", f4,
                        "field 'dtype' appears twice");
  }
  SECTION("entry fields") {
    expect_header_error("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", f4, "tensor 'a': the entry has no 'dtype'");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", f4, "has no 'shape'");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", f4, "has no 'data_offsets'");
    expect_header_error("{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", f4, "dtype must be a string");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", f4,
                        "shape must be an array");
    expect_header_error("{" + entry("a", "F32", "[-1]", 0, 4) + "}", f4, "non-negative integers, not a negative");
    expect_header_error("{" + entry("a", "F32", "[1.5]", 0, 4) + "}", f4, "not a non-integer number (1.5)");
    expect_header_error("{" + entry("a", "F32", "[1.0]", 0, 4) + "}", f4, "non-integer");
    expect_header_error("{" + entry("a", "F32", "[\"1\"]", 0, 4) + "}", f4, "not a string");
    expect_header_error("{" + entry("a", "F32", "[[1]]", 0, 4) + "}", f4, "not an array");
    expect_header_error("{" + entry("a", "F32", "[99999999999999999999]", 0, 4) + "}", f4, "non-integer");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", f4, "two numbers");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", f4, "two numbers");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,4]}}", f4, "non-negative");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", f4, "must be an array");
    std::string big_rank = "[1";
    for (std::size_t i = 1; i <= kSafetensorsMaxRank; ++i) big_rank += ",1";
    expect_header_error("{" + entry("a", "F32", big_rank + "]", 0, 4) + "}", f4, "more than 1024 dimensions");
  }
  SECTION("dtypes") {
    expect_header_error("{" + entry("a", "F33", "[1]", 0, 4) + "}", f4, "dtype 'F33' is not a safetensors dtype");
    expect_header_error("{" + entry("a", "f32", "[1]", 0, 4) + "}", f4, "not a safetensors dtype");
    expect_header_error("{" + entry("a", "BF16", "[2]", 0, 4) + "}", f4,
                        "tensor 'a' has dtype BF16, which is not supported by tapegrok");
    expect_header_error("{" + entry("a", "I64", "[1]", 0, 8) + "}", f4 + f4, "dtype I64, which is not supported");
    expect_header_error("{" + entry("a", "F4", "[3]", 0, 2) + "}", "ab", "do not fill a whole number of bytes");
  }
  SECTION("sizes and offsets") {
    expect_header_error("{" + entry("a", "F32", "[2,2]", 0, 12) + "}", std::string(12, 'x'),
                        "tensor 'a': data_offsets [0, 12] span 12 bytes but shape [2, 2] of F32 needs 16 bytes");
    expect_header_error("{" + entry("a", "F32", "[2]", 0, 8) + "}", f4, "reach past the end of the data section");
    expect_header_error("{" + entry("a", "F32", "[1]", 8, 4) + "}", f4 + f4, "end before they begin");
    expect_header_error("{" + entry("a", "F32", "[4611686018427387904,4]", 0, 4) + "}", f4, "overflow");
    expect_header_error("{" + entry("a", "F32", "[0,4611686018427387904,4]", 0, 0) + "}", "", "overflow");
    expect_header_error("{" + entry("a", "F64", "[2305843009213693952]", 0, 4) + "}", f4, "overflow");
    expect_header_error("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 4, 12) + "}",
                        f4 + f4 + f4, "tensor 'b' (bytes [4, 12)) overlaps tensor 'a' (bytes [0, 8))");
    expect_header_error("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 0, 4) + "}", f4,
                        "overlaps");
    expect_header_error("{" + entry("a", "F32", "[1]", 0, 4) + "," + entry("b", "F32", "[1]", 8, 12) + "}",
                        f4 + f4 + f4, "bytes [4, 8) of the data section belong to no tensor");
    expect_header_error("{" + entry("a", "F32", "[1]", 4, 8) + "}", f4 + f4, "belong to no tensor");
    expect_header_error("{" + entry("a", "F32", "[1]", 0, 4) + "}", f4 + "xx", "trailing bytes");
  }
  SECTION("metadata") {
    expect_header_error("{\"__metadata__\":{\"k\":1}}", "", "__metadata__ value of 'k' must be a string, not a number");
    expect_header_error("{\"__metadata__\":{\"k\":{}}}", "", "must be a string, not an object");
    expect_header_error("{\"__metadata__\":[]}", "", "__metadata__ must be an object of strings");
    write_bytes(path, file_bytes("{\"__metadata__\":null}", ""));
    CHECK(load_safetensors(path).metadata.empty());
  }
  SECTION("names in messages are escaped and clipped") {
    const std::string long_name(5000, 'n');
    write_bytes(path, file_bytes("{\"" + long_name + "\":7}", ""));
    try {
      load_safetensors(path);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()).size() < 600);
      CHECK_THAT(e.what(), ContainsSubstring("5000 bytes in all"));
    }
    expect_header_error("{\"a\\nb\":7}", "", "tensor 'a\\x0ab'");
  }
}

TEST_CASE("safetensors: missing tensors, files and mismatched shapes", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"head.weight", Tensor::zeros({99, 128}, DType::f32)},
                          {"tok", Tensor::zeros({3}, DType::i32)}});
  const SafetensorsFile f = load_safetensors(path);
  CHECK(f.contains("tok"));
  CHECK_FALSE(f.contains("zz"));
  CHECK_THROWS_WITH(f.at("zz"), ContainsSubstring(path) && ContainsSubstring("no tensor named 'zz'") &&
                                    ContainsSubstring("'head.weight', 'tok'"));
  CHECK_THROWS_WITH(expect_tensor(f, "head.weight", DType::f32, {101, 128}),
                    ContainsSubstring("checkpoint " + path +
                                      ": tensor 'head.weight' has shape [99, 128] f32 but the model needs [101, 128] f32"));
  CHECK_THROWS_WITH(expect_tensor(f, "tok", DType::f32, {3}),
                    ContainsSubstring("tensor 'tok' has shape [3] i32 but the model needs [3] f32"));
  CHECK_THROWS_WITH(expect_tensor(f, "bias", DType::f32, {7}),
                    ContainsSubstring(path) && ContainsSubstring("'bias' is missing") && ContainsSubstring("[7] f32"));
  CHECK_NOTHROW(expect_tensor(f, "tok", DType::i32, {3}));

  const std::string missing = dir.file("nope.safetensors");
  CHECK_THROWS_WITH(load_safetensors(missing),
                    ContainsSubstring(missing) && ContainsSubstring("No such file or directory"));
  CHECK_THROWS_WITH(load_safetensors(dir.file("")), ContainsSubstring("not a regular file"));
}

TEST_CASE("safetensors: failed saves leave the old file intact and no temp files", "[safetensors]") {
  TempDir dir;
  const std::string path = dir.file("ckpt.safetensors");
  save_safetensors(path, {{"w", Tensor::from_vector<float>({1.f, 2.f}, {2})}}, {{"step", "1"}});
  const std::string old_bytes = read_bytes(path);
  const std::set<std::string> old_listing{"ckpt.safetensors"};
  const Tensor big = Tensor::zeros({100000}, DType::f32);

  SECTION("directory does not exist") {
    const std::string bad = dir.file("no/such/dir/ckpt.safetensors");
    CHECK_THROWS_WITH(save_safetensors(bad, {{"w", big}}),
                      ContainsSubstring(bad) && ContainsSubstring("No such file or directory"));
  }
  SECTION("the write fails halfway (file size limit)") {
    std::string message;
    {
      const tgtest::FileSizeLimit limit(4096);  // the temp file's write fails at 4 KiB
      try {
        save_safetensors(path, {{"w", big}});
      } catch (const Error& e) {
        message = e.what();
      }
    }
    CHECK_THAT(message, ContainsSubstring(path) && ContainsSubstring("File too large"));
  }
  SECTION("the rename fails (a directory is in the way)") {
    const std::string blocked = dir.file("blocked.safetensors");
    fs::create_directory(blocked);
    write_bytes(blocked + "/inside", "keep");
    CHECK_THROWS_WITH(save_safetensors(blocked, {{"w", big}}),
                      ContainsSubstring(blocked) && ContainsSubstring("renaming"));
    CHECK(read_bytes(blocked + "/inside") == "keep");
    fs::remove_all(blocked);
  }
  SECTION("the directory is read-only") {
    if (::geteuid() != 0) {  // root ignores directory permissions
      fs::permissions(fs::path(path).parent_path(), fs::perms::owner_write, fs::perm_options::remove);
      CHECK_THROWS_WITH(save_safetensors(path, {{"w", big}}),
                        ContainsSubstring(path) && ContainsSubstring("Permission denied"));
      fs::permissions(fs::path(path).parent_path(), fs::perms::owner_write, fs::perm_options::add);
    }
  }
  SECTION("bad arguments fail before touching the disk") {
    CHECK_THROWS_WITH(save_safetensors(path, {{"w", big}, {"w", big}}), ContainsSubstring("two tensors are named 'w'"));
    CHECK_THROWS_WITH(save_safetensors(path, {{"__metadata__", big}}), ContainsSubstring("reserved"));
    CHECK_THROWS_WITH(save_safetensors(path, {{"u", Tensor()}}), ContainsSubstring("tensor 'u' is undefined"));
    CHECK_THROWS_WITH(save_safetensors(path, {{"bad\xff", big}}), ContainsSubstring("not valid UTF-8"));
    CHECK_THROWS_WITH(save_safetensors(path, {{"w", big}}, {{"k", "\xc3"}}), ContainsSubstring("not valid UTF-8"));
  }
  CHECK(read_bytes(path) == old_bytes);
  CHECK(dir.listing() == old_listing);
  CHECK(load_safetensors(path).at("w").to_vector<float>() == std::vector<float>{1.f, 2.f});
}

TEST_CASE("safetensors: the header builder and parser agree", "[safetensors]") {
  const std::vector<SafetensorsEntry> entries = {
      {"a", "F32", {2, 3}, 0, 24}, {"b", "BF16", {}, 24, 26}, {"c", "U8", {0}, 26, 26}, {"d", "F6_E2M3", {4}, 26, 29}};
  const std::map<std::string, std::string> meta = {{"x", "1"}};
  const std::string header = build_safetensors_header(entries, meta, "built");
  CHECK(header.size() % 8 == 0);
  const SafetensorsHeader h = parse(header + std::string(29, '\0'), "built");
  CHECK(h.entries == entries);
  CHECK(h.metadata == meta);
  CHECK(h.data_start == header.size());
  CHECK_THROWS_WITH(build_safetensors_header({{"a", "F32", {2}, 0, 4}}, {}, "built"),
                    ContainsSubstring("built") && ContainsSubstring("tensor 'a'"));
  CHECK_THROWS_WITH(build_safetensors_header({{"a", "X", {2}, 0, 4}}, {}, "built"), ContainsSubstring("unknown dtype"));
}
