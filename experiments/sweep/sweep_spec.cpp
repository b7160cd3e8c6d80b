#include "experiments/sweep/sweep_spec.h"

#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "engine/error.h"
#include "experiments/cli/train_command.h"

namespace tg {

namespace {

using Json = nlohmann::ordered_json;

// TOML tables are kept sorted by key; a sweep's axes and flags keep the order they were written in.
Json toml_to_json(const toml::node& node, const std::string& where) {
  if (const toml::table* table = node.as_table()) {
    std::vector<std::pair<const toml::key*, const toml::node*>> entries;
    for (const auto& [key, value] : *table) entries.emplace_back(&key, &value);
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      const toml::source_position pa = a.first->source().begin, pb = b.first->source().begin;
      return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
    });
    Json object = Json::object();
    for (const auto& [key, value] : entries) {
      object[std::string(key->str())] = toml_to_json(*value, where + "." + std::string(key->str()));
    }
    return object;
  }
  if (const toml::array* array = node.as_array()) {
    Json list = Json::array();
    for (std::size_t i = 0; i < array->size(); ++i) {
      list.push_back(toml_to_json(*array->get(i), fmt::format("{}[{}]", where, i)));
    }
    return list;
  }
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return i->get();
  if (const auto* f = node.as_floating_point()) return f->get();
  if (const auto* b = node.as_boolean()) return b->get();
  throw Error(fmt::format("{} (line {}): dates and times are not sweep values", where.substr(1),
                          node.source().begin.line));
}

Json read_document(const std::string& path) {
  std::error_code ec;
  TG_CHECK(std::filesystem::is_regular_file(path, ec), "sweep file {}: not a readable file", path);
  const std::string extension = std::filesystem::path(path).extension().string();
  if (extension == ".toml") {
    try {
      return toml_to_json(toml::parse_file(path), "");
    } catch (const toml::parse_error& e) {
      throw Error(fmt::format("sweep file {}, line {}, column {}: {}", path, e.source().begin.line,
                              e.source().begin.column, e.description()));
    }
  }
  if (extension == ".json") {
    std::ifstream in(path);
    try {
      return Json::parse(in);
    } catch (const Json::exception& e) {
      throw Error(fmt::format("sweep file {}: {}", path, e.what()));
    }
  }
  throw Error(fmt::format("sweep file {}: expected a .toml or .json file", path));
}

// Flags a sweep sets itself for every run, or that would make runs collide.
const std::set<std::string> kReservedFlags = {"seed", "run-dir", "resume", "config", "no-progress", "help"};

// A scalar as `tapegrok train` reads it; a true boolean is a switch, a false one is left out.
std::optional<TrainFlag> flag_from(const std::string& name, const Json& value, const std::string& where) {
  if (kReservedFlags.count(name)) {
    throw Error(fmt::format("{}: '{}' is set by the sweep for each run and cannot be given", where, name));
  }
  TrainFlag flag{name, "", false};
  if (value.is_boolean()) {
    if (!value.get<bool>()) return std::nullopt;
    flag.is_switch = true;
  } else if (value.is_string()) {
    flag.value = value.get<std::string>();
  } else if (value.is_number_integer()) {
    flag.value = std::to_string(value.get<std::int64_t>());
  } else if (value.is_number_float()) {
    flag.value = fmt::format("{}", value.get<double>());  // shortest text that reads back the same
  } else {
    throw Error(fmt::format("{}: expected a string, number or boolean, got {}", where, value.dump()));
  }
  return flag;
}

std::vector<TrainFlag> flags_from_table(const Json& table, const std::string& where, const char* skip = nullptr) {
  std::vector<TrainFlag> flags;
  for (const auto& [key, value] : table.items()) {
    if (skip != nullptr && key == skip) continue;
    if (auto flag = flag_from(key, value, where + "." + key)) flags.push_back(*flag);
  }
  return flags;
}

std::string scalar_label(const Json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

void expect_keys(const Json& object, const std::set<std::string>& allowed, const std::string& where) {
  TG_CHECK(object.is_object(), "{}: expected a table", where);
  for (const auto& [key, value] : object.items()) {
    (void)value;
    if (!allowed.count(key)) {
      std::string list;
      for (const auto& k : allowed) list += (list.empty() ? "" : ", ") + k;
      throw Error(fmt::format("{}: unknown key '{}' (expected: {})", where, key, list));
    }
  }
}

SweepAxis read_axis(const std::string& name, const Json& values, const std::string& where) {
  TG_CHECK(values.is_array() && !values.empty(), "{}: expected a non-empty list of values", where);
  SweepAxis axis{name, {}};
  std::set<std::string> labels;
  for (std::size_t i = 0; i < values.size(); ++i) {
    const Json& v = values[i];
    const std::string at = fmt::format("{}[{}]", where, i);
    AxisValue value;
    if (v.is_object()) {  // a named variant: label and any flags
      TG_CHECK(v.contains("label") && v["label"].is_string() && !v["label"].get<std::string>().empty(),
               "{}: a table value needs a non-empty string 'label'", at);
      value.label = v["label"].get<std::string>();
      value.flags = flags_from_table(v, at, "label");
    } else {  // a plain value of the flag the axis is named after
      value.label = scalar_label(v);
      if (auto flag = flag_from(name, v, at)) value.flags.push_back(*flag);
    }
    TG_CHECK(labels.insert(value.label).second, "{}: the label '{}' appears twice", at, value.label);
    axis.values.push_back(std::move(value));
  }
  return axis;
}

}  // namespace

std::string label_path(const std::string& label) {
  std::string out;
  for (char ch : label) {
    const bool plain = std::isalnum(static_cast<unsigned char>(ch)) || std::string_view("._+=-").find(ch) !=
                                                                           std::string_view::npos;
    out += ch == '*' ? 'x' : plain ? ch : '_';
  }
  return out;
}

SweepSpec read_sweep_file(const std::string& path, const std::string& runs_dir_override) {
  const Json doc = read_document(path);
  const std::string where = "sweep file " + path;
  expect_keys(doc, {"name", "runs", "seeds", "train", "grid", "slurm"}, where);
  SweepSpec spec;
  spec.file = path;
  spec.name = doc.value("name", std::filesystem::path(path).stem().string());
  TG_CHECK(!spec.name.empty() && label_path(spec.name) == spec.name,
           "{}: name '{}' must be a plain word ([A-Za-z0-9._+=-])", where, spec.name);
  spec.runs_dir = !runs_dir_override.empty() ? runs_dir_override : doc.value("runs", "runs/" + spec.name);

  TG_CHECK(doc.contains("seeds"), "{}: 'seeds' is missing (a list such as [0, 1, 2], or a count)", where);
  const Json& seeds = doc["seeds"];
  if (seeds.is_number_unsigned() || seeds.is_number_integer()) {
    const std::int64_t count = seeds.get<std::int64_t>();
    TG_CHECK(count >= 1 && count <= 100000, "{}: seeds = {} must be a count in [1, 100000]", where, count);
    for (std::int64_t s = 0; s < count; ++s) spec.seeds.push_back(static_cast<std::uint64_t>(s));
  } else {
    TG_CHECK(seeds.is_array() && !seeds.empty(), "{}: 'seeds' must be a non-empty list or a count", where);
    for (const Json& s : seeds) {
      TG_CHECK(s.is_number_unsigned() || (s.is_number_integer() && s.get<std::int64_t>() >= 0),
               "{}: seed {} is not a non-negative integer", where, s.dump());
      spec.seeds.push_back(s.get<std::uint64_t>());
    }
    std::set<std::uint64_t> unique(spec.seeds.begin(), spec.seeds.end());
    TG_CHECK(unique.size() == spec.seeds.size(), "{}: a seed appears twice in 'seeds'", where);
  }

  if (doc.contains("train")) {
    TG_CHECK(doc["train"].is_object(), "{}: [train] must be a table of train flags", where);
    spec.base = flags_from_table(doc["train"], where + ": train");
  }
  if (doc.contains("grid")) {
    TG_CHECK(doc["grid"].is_object(), "{}: [grid] must be a table of axes", where);
    for (const auto& [name, values] : doc["grid"].items()) {
      spec.axes.push_back(read_axis(name, values, where + ": grid." + name));
    }
  }
  if (doc.contains("slurm")) {
    const Json& s = doc["slurm"];
    expect_keys(s, {"partition", "time", "mem", "cpus-per-task", "max-parallel", "extra"}, where + ": slurm");
    spec.slurm.partition = s.value("partition", "");
    spec.slurm.time = s.value("time", "");
    spec.slurm.mem = s.value("mem", "");
    spec.slurm.cpus_per_task = s.value("cpus-per-task", std::int64_t{1});
    spec.slurm.max_parallel = s.value("max-parallel", std::int64_t{0});
    TG_CHECK(spec.slurm.cpus_per_task >= 1, "{}: slurm.cpus-per-task must be >= 1", where);
    TG_CHECK(spec.slurm.max_parallel >= 0, "{}: slurm.max-parallel must be >= 0", where);
    if (s.contains("extra")) {
      TG_CHECK(s["extra"].is_array(), "{}: slurm.extra must be a list of sbatch options", where);
      for (const Json& line : s["extra"]) {
        TG_CHECK(line.is_string() && line.get<std::string>().find('\n') == std::string::npos,
                 "{}: slurm.extra entries must be one-line strings", where);
        spec.slurm.extra_lines.push_back(line.get<std::string>());
      }
    }
  }
  return spec;
}

std::vector<SweepRun> expand_sweep(const SweepSpec& spec) {
  std::size_t cells = 1;
  for (const SweepAxis& axis : spec.axes) cells *= axis.values.size();
  TG_CHECK(cells * spec.seeds.size() <= 1000000, "sweep file {}: {} runs is too many", spec.file,
           cells * spec.seeds.size());
  std::vector<SweepRun> runs;
  std::map<std::string, std::string> directories;  // run directory -> run, to refuse collisions
  for (std::uint64_t seed : spec.seeds) {
    for (std::size_t c = 0; c < cells; ++c) {
      SweepRun run;
      run.index = runs.size();
      run.seed = seed;
      std::vector<TrainFlag> flags = spec.base;
      std::set<std::string> set_by_axes;
      std::filesystem::path dir(spec.runs_dir);
      std::size_t rest = c;
      std::vector<const AxisValue*> picked(spec.axes.size());
      for (std::size_t a = spec.axes.size(); a-- > 0;) {  // the last axis varies fastest
        picked[a] = &spec.axes[a].values[rest % spec.axes[a].values.size()];
        rest /= spec.axes[a].values.size();
      }
      for (std::size_t a = 0; a < spec.axes.size(); ++a) {
        run.labels.push_back(picked[a]->label);
        run.cell += (a ? "/" : "") + picked[a]->label;
        dir /= label_path(picked[a]->label);
        for (const TrainFlag& f : picked[a]->flags) {
          TG_CHECK(set_by_axes.insert(f.name).second, "sweep file {}: two axes set '{}' in cell '{}'", spec.file,
                   f.name, run.cell);
          std::erase_if(flags, [&](const TrainFlag& b) { return b.name == f.name; });  // a cell's value wins
          flags.push_back(f);
        }
      }
      run.name = (run.cell.empty() ? "" : run.cell + "/") + fmt::format("seed{}", seed);
      run.run_dir = (dir / fmt::format("seed{}", seed)).string();
      for (const TrainFlag& f : flags) {
        run.train_args.push_back("--" + f.name);
        if (!f.is_switch) run.train_args.push_back(f.value);
      }
      run.train_args.insert(run.train_args.end(), {"--seed", std::to_string(seed), "--run-dir", run.run_dir});
      try {
        run.config = parse_train_flags(run.train_args).config;
      } catch (const Error& e) {
        throw Error(fmt::format("sweep file {}: run '{}': {}", spec.file, run.name, e.what()));
      }
      const auto [it, fresh] = directories.emplace(run.run_dir, run.name);
      TG_CHECK(fresh, "sweep file {}: runs '{}' and '{}' would share the directory {}", spec.file, it->second,
               run.name, run.run_dir);
      runs.push_back(std::move(run));
    }
  }
  return runs;
}

}  // namespace tg
