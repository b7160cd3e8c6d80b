// Sync-free training steps (--cuda-graph) and the pieces a CUDA graph of the step needs: the
// allocator's capture pools, device-scalar optimizer steps, the on-device count of correct
// predictions, and the trainer's sync-free mode, which on the CPU runs eagerly and must give exactly
// the normal mode's numbers. The last test captures and replays real graphs; it needs a GPU.
#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <unistd.h>

#include "engine/allocator.h"
#include "engine/backend.h"
#include "engine/captured_graph.h"
#include "engine/error.h"
#include "experiments/methods/neuralgrok.h"
#include "experiments/training/trainer.h"
#include "optim/optimizer.h"
#include "run_support.h"
#include "support.h"

using namespace tg;
using namespace tgtest;
using Catch::Matchers::ContainsSubstring;
namespace fs = std::filesystem;

namespace {

// ---- a host "device" for the allocator: malloc that fails above 1 MiB (out of memory on demand)
void* small_alloc(std::size_t nbytes) { return nbytes > (std::size_t{1} << 20) ? nullptr : std::malloc(nbytes); }
void small_free(void* p) { std::free(p); }

// The gradient-method variants a sync-free run must reproduce.
struct Variant {
  std::string name, optimizer, method;
};
const std::vector<Variant>& variants() {
  static const std::vector<Variant> v = {{"adam", "adam", "standard"},
                                         {"grokfast-ema", "adam", "grokfast-ema"},
                                         {"adamw-clip", "adamw", "standard"},
                                         {"sgd", "sgd", "standard"},
                                         {"grokfast-ma", "adam", "grokfast-ma"},
                                         {"neuralgrok-lookahead", "adam", "neuralgrok"},
                                         {"perp-grad", "adam", "perp-grad"},
                                         {"stablemax", "adamw", "standard"}};
  return v;
}

TrainConfig configure(const std::string& run_dir, const Variant& v) {
  TrainConfig c = tiny_run_config(run_dir);
  c.optimizer = v.optimizer;
  c.method = v.method;
  c.grokfast_window = 4;
  if (v.name == "stablemax") c.loss = "stablemax";
  if (v.name == "adamw-clip") {
    c.clip_grad_norm = 0.5;
    c.grad_normalize = 1.0;
  }
  if (v.method == "neuralgrok") {
    c.outer_fraction = 0.05;
    c.amp_hidden = "8,8";
    // T 3 with 4 batches an epoch (the last one partial) and evaluation every 8 steps: meta steps
    // fall on full and partial batches, evaluation steps on and off meta steps, so a run captures
    // several meta-step graphs and the logged outer loss must come from the latest one replayed.
    c.meta_every = 3;
    c.clip_grad_norm = 1.0;
  }
  return c;
}

// metrics.jsonl without the wall time: every other field must agree bit for bit (JSON prints doubles
// in their shortest round-trip form, so equal text means equal bits).
std::string metrics_without_time(const std::string& run_dir) {
  std::string out;
  std::istringstream lines(read_file(run_dir + "/metrics.jsonl"));
  for (std::string line; std::getline(lines, line);) {
    auto j = nlohmann::json::parse(line);
    j.erase("wall_time");
    out += j.dump() + "\n";
  }
  return out;
}

std::vector<double> flat(const Trainer& t) { return values(t.params().flat_values()); }

std::vector<double> optimizer_state(Trainer& t) {
  std::vector<double> v;
  for (const auto& [name, buffer] : t.optimizer().state()) {
    const auto b = values(buffer);
    v.insert(v.end(), b.begin(), b.end());
  }
  return v;
}

// Two tables with the same parameters and gradients.
ParameterTable table(std::uint64_t seed, DType dt, bool freeze_first = false) {
  Rng rng(seed);
  ParameterTable t({{"w", {3, 5}}, {"b", {7}}, {"c", {2, 2}}}, dt, Device::cpu());
  for (std::size_t i = 0; i < t.size(); ++i) {
    Tensor p = t[i];
    p.copy_from_(random(rng, p.shape(), dt));
  }
  if (freeze_first) t.set_frozen(0, true);
  return t;
}

void set_grads(const ParameterTable& t, std::uint64_t seed) {
  Rng rng(seed);
  for (std::size_t i = 0; i < t.size(); ++i) {
    Tensor g = t[i].grad();
    g.copy_from_(random(rng, t[i].shape(), t.dtype()));
  }
}


}  // namespace

TEST_CASE("a capture pool keeps the blocks of a graph to itself until it is released", "[graph][allocator]") {
  CachingAllocator a("test", small_alloc, small_free);
  void* before = a.allocate(1000);  // 1024-byte bucket
  a.deallocate(before, 1000);       // into the general cache

  const CachingAllocator::PoolId pool = a.begin_pool();
  CHECK(a.capturing());
  CHECK_THROWS_WITH(a.begin_pool(), ContainsSubstring("already active"));
  void* p1 = a.allocate(1000);
  CHECK(p1 == before);  // an idle block of the general cache may join the pool
  void* p2 = a.allocate(2000);
  a.deallocate(p2, 2000);
  void* p3 = a.allocate(2000);
  CHECK(p3 == p2);  // memory freed within the capture is reused within it
  // Out of memory while capturing: an error at once, no attempt to empty the cache.
  CHECK_THROWS_WITH(a.allocate(std::size_t{4} << 20), ContainsSubstring("while capturing a CUDA graph"));
  a.end_pool();
  CHECK_FALSE(a.capturing());
  CHECK(a.pool_blocks(pool) == 2);

  // Freed after the capture: back to the pool, never handed to other allocations.
  a.deallocate(p1, 1000);
  a.deallocate(p3, 2000);
  CHECK(a.stats().bytes_in_pools == 1024 + 2048);
  void* q1 = a.allocate(1000);
  void* q2 = a.allocate(2000);
  CHECK(q1 != p1);
  CHECK(q2 != p3);
  a.empty_cache();  // leaves the pool alone
  CHECK(a.stats().bytes_in_pools == 1024 + 2048);

  // The graph is gone: its blocks serve everyone again.
  a.release_pool(pool);
  CHECK(a.stats().bytes_in_pools == 0);
  CHECK(a.pool_blocks(pool) == 0);
  void* r1 = a.allocate(1000);
  CHECK(r1 == p1);

  // A block allocated before a capture and freed during it may be one the graph used: it joins the
  // pool, so nothing outside the graph gets it until the pool is released.
  void* older = a.allocate(3000);
  const CachingAllocator::PoolId third = a.begin_pool();
  a.deallocate(older, 3000);
  a.end_pool();
  CHECK(a.pool_blocks(third) == 1);
  CHECK(a.stats().bytes_in_pools == CachingAllocator::round_size(3000));
  void* outside = a.allocate(3000);
  CHECK(outside != older);
  a.deallocate(outside, 3000);
  a.release_pool(third);
  CHECK(a.stats().bytes_in_pools == 0);

  // A block still in use when its pool is released goes to the general cache when freed.
  const CachingAllocator::PoolId second = a.begin_pool();
  void* held = a.allocate(4096);
  a.end_pool();
  a.release_pool(second);
  a.deallocate(held, 4096);
  CHECK(a.stats().bytes_in_pools == 0);
  CHECK(a.allocate(4096) == held);
}

TEST_CASE("graph capture needs a CUDA device", "[graph][errors]") {
  bool ran = false;
  CHECK_THROWS_WITH(CapturedGraph::capture(Device::cpu(), [&] { ran = true; }),
                    ContainsSubstring("graph capture needs a CUDA device"));
  CHECK_FALSE(ran);
  CapturedGraph none;
  CHECK_FALSE(none.defined());
  CHECK_THROWS_WITH(none.replay(), ContainsSubstring("no graph was captured"));
}

TEST_CASE("a HostReadGuard turns every host read into an error naming its scope", "[graph][errors]") {
  const Tensor x = Tensor::full({2}, 1.5, DType::f32);
  {
    HostReadGuard outer("a test scope");
    CHECK_THROWS_WITH(x.to_vector<float>(), ContainsSubstring("inside a test scope, which must never wait"));
    CHECK_THROWS_WITH(sum(x).item(), ContainsSubstring("to_vector of [] f32 cpu"));
    {
      HostReadGuard inner("an inner scope");
      CHECK_THROWS_WITH(x.item(), ContainsSubstring("has 2 elements"));  // the shape check comes first
      CHECK_THROWS_WITH(sum(x).item(), ContainsSubstring("inside an inner scope"));
    }
    CHECK(std::string(host_reads_forbidden_in()) == "a test scope");
    // Device work without a host read is fine.
    CHECK_NOTHROW(add(x, x));
  }
  CHECK(host_reads_forbidden_in() == nullptr);
  CHECK(sum(x).item() == 3.0);
}

TEST_CASE("count_equal counts agreeing ids exactly, into a floating tensor", "[graph][ops]") {
  const Tensor a = Tensor::from_vector(std::vector<std::int32_t>{1, 2, 3, 4, 5, 6}, {2, 3});
  const Tensor b = Tensor::from_vector(std::vector<std::int32_t>{1, 0, 3, 4, 0, 6}, {2, 3});
  CHECK(count_equal(a, b).item() == 4.0);
  CHECK(count_equal(a, b, DType::f64).dtype() == DType::f64);
  CHECK(count_equal(a, b, DType::f64).item() == 4.0);
  CHECK(count_equal(transpose(a, 0, 1), transpose(b, 0, 1)).item() == 4.0);
  CHECK_THROWS_WITH(count_equal(a, reshape(b, {6})), ContainsSubstring("differ in shape"));
  CHECK_THROWS_WITH(count_equal(a, b, DType::i32), ContainsSubstring("must be floating"));
}

TEST_CASE("device-scalar optimizer steps give the same bits as host-scalar steps", "[graph][optim]") {
  struct Case {
    std::string name;
    bool sgd, decoupled;
    double momentum;
    bool freeze;
  };
  const std::vector<Case> cases = {{"adam", false, false, 0, false},   {"adamw", false, true, 0, false},
                                   {"adam-frozen", false, false, 0, true}, {"sgd-momentum", true, false, 0.9, false},
                                   {"sgd-plain", true, false, 0.0, false}};
  for (DType dt : {DType::f32, DType::f64}) {
    for (const Case& c : cases) {
      const std::string name = c.name + (dt == DType::f32 ? " f32" : " f64");
      CAPTURE(name);
      ParameterTable host = table(3, dt, c.freeze), device = table(3, dt, c.freeze);
      auto make = [&](const ParameterTable& t) {
        return c.sgd ? make_sgd(t, {c.momentum, 0.01}) : make_adam(t, {0.9, 0.98, 1e-8, 0.01, c.decoupled});
      };
      auto by_host = make(host), by_device = make(device);
      const auto count = static_cast<std::int64_t>(by_device->device_scalars(1e-3).size());
      const Tensor scalars = Tensor::zeros({count}, dt);
      for (int step = 0; step < 6; ++step) {
        const double lr = warmup_lr(3e-3, step, 4);  // changes every step during warm-up
        set_grads(host, 100 + step);
        set_grads(device, 100 + step);
        by_host->step(host, lr);
        by_device->upload_device_scalars(lr, scalars);  // as the trainer does
        by_device->step_from_device(device, scalars, GradClip{});
      }
      CHECK(values(host.flat_values()) == values(device.flat_values()));
      CHECK(by_host->steps_taken() == by_device->steps_taken());
      for (const auto& [key, buffer] : by_host->state()) CHECK(values(buffer) == values(by_device->state().at(key)));
    }
  }
  ParameterTable t = table(3, DType::f32);
  auto adam = make_adam(t, {});
  CHECK_THROWS_WITH(adam->step_from_device(t, Tensor::zeros({2}, DType::f32), GradClip{}),
                    ContainsSubstring("scalars must be 3 contiguous f32 values"));
}

TEST_CASE("sync-free runs reproduce the normal runs bit for bit", "[graph][trainer][determinism]") {
  const std::string dir = fresh_temp_dir("identical");
  for (const Variant& v : variants()) {
    const std::string variant = v.name;
    CAPTURE(variant);
    TrainConfig normal = configure(dir + "/normal_" + v.name, v);
    TrainConfig sync_free = normal;
    sync_free.run_dir = dir + "/syncfree_" + v.name;
    sync_free.cuda_graph = true;
    Trainer a(normal), b(sync_free);
    CHECK_FALSE(a.sync_free());
    CHECK(b.sync_free());
    a.run();
    b.run();
    CHECK(metrics_without_time(normal.run_dir) == metrics_without_time(sync_free.run_dir));
    CHECK(flat(a) == flat(b));
    CHECK(optimizer_state(a) == optimizer_state(b));
    CHECK(a.optimizer().steps_taken() == b.optimizer().steps_taken());
    if (v.method == "neuralgrok") {
      CHECK(values(a.method<NeuralGrok>()->amp_params().flat_values()) == values(b.method<NeuralGrok>()->amp_params().flat_values()));
      CHECK(a.method<NeuralGrok>()->meta_steps() == b.method<NeuralGrok>()->meta_steps());
    }
    CHECK(nlohmann::json::parse(read_file(sync_free.run_dir + "/config.json")).at("cuda_graph").get<bool>());
  }
}

TEST_CASE("sync-free step statistics stay on the device until read, then match the normal steps", "[graph][trainer]") {
  const std::string dir = fresh_temp_dir("stats");
  TrainConfig normal = tiny_run_config(dir + "/normal");
  normal.eval_every = 3;  // the ring holds 3 steps: 7 steps overflow it twice before the read
  TrainConfig sync_free = normal;
  sync_free.cuda_graph = true;
  Trainer a(normal), b(sync_free);
  std::vector<StepStats> expected;
  for (int i = 0; i < 7; ++i) {
    expected.push_back(a.step());
    const StepStats s = b.step();
    CHECK(s.on_device);
    CHECK(std::isnan(s.loss));
    CHECK(s.lr == expected.back().lr);
    CHECK(s.examples == expected.back().examples);
  }
  CHECK(a.read_step_stats().empty());  // the normal mode returned them from step()
  const std::vector<StepStats> got = b.read_step_stats();
  REQUIRE(got.size() == expected.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i].loss == expected[i].loss);
    CHECK(got[i].accuracy == expected[i].accuracy);
    CHECK(got[i].grad_norm == expected[i].grad_norm);
    CHECK(got[i].lr == expected[i].lr);
    CHECK(got[i].examples == expected[i].examples);
  }
  CHECK(got[3].examples == 7);  // the partial last batch of the epoch
  CHECK(b.read_step_stats().empty());
}

TEST_CASE("a diverging sync-free run names the step where the loss stopped being finite", "[graph][trainer][errors]") {
  const std::string dir = fresh_temp_dir("diverge");
  TrainConfig normal = tiny_run_config(dir + "/normal");
  normal.lr = 1e6;
  normal.optimizer = "sgd";
  normal.momentum = 0;
  normal.warmup_steps = 0;
  std::string normal_error;
  try {
    Trainer(normal).run();
  } catch (const Error& e) {
    normal_error = e.what();
  }
  std::smatch m;
  REQUIRE(std::regex_search(normal_error, m, std::regex("training diverged at step (\\d+): the loss is")));
  const std::string step = m[1];

  TrainConfig sync_free = normal;
  sync_free.run_dir = dir + "/syncfree";
  sync_free.cuda_graph = true;
  Trainer t(sync_free);
  CHECK_THROWS_WITH(t.run(),
                    ContainsSubstring("training diverged at step " + step + ": the loss is") &&
                        ContainsSubstring("found when the statistics of steps 1 to 8 were read from the device") &&
                        ContainsSubstring("lower the learning rate"));

  // A periodic checkpoint reads the statistics first: a diverged run never writes one.
  sync_free.run_dir = dir + "/checkpointing";
  sync_free.checkpoint_every = std::stoi(step) + 1;  // before the first evaluation (step 8) if it diverges early
  Trainer c(sync_free);
  const std::string read = sync_free.checkpoint_every < 8 ? std::to_string(sync_free.checkpoint_every) : "8";
  CHECK_THROWS_WITH(c.run(), ContainsSubstring("training diverged at step " + step + ": the loss is") &&
                                 ContainsSubstring("steps 1 to " + read + " were read"));
  CHECK_FALSE(fs::exists(sync_free.run_dir + "/checkpoint.safetensors"));
}

TEST_CASE("sync-free runs resume from checkpoints bit for bit, also across modes", "[graph][trainer][checkpoint]") {
  const std::string dir = fresh_temp_dir("resume");
  for (const Variant& v : variants()) {
    if (v.name != "adam" && v.name != "grokfast-ema" && v.name != "neuralgrok-lookahead") continue;
    for (bool first_sync_free : {true, false}) {
      const std::string variant = v.name + (first_sync_free ? " sync-free then sync-free" : " normal then sync-free");
      CAPTURE(variant);
      TrainConfig full = configure(dir + "/full_" + v.name + (first_sync_free ? "_sf" : "_normal"), v);
      full.max_steps = 21;  // not a multiple of the epoch: the resume point is mid-epoch
      full.cuda_graph = true;
      Trainer uninterrupted(full);
      uninterrupted.run();

      TrainConfig first = full;
      first.run_dir = dir + "/part_" + v.name + (first_sync_free ? "_sf" : "_normal");
      first.max_steps = 10;
      first.cuda_graph = first_sync_free;
      Trainer part(first);
      part.run();
      TrainConfig second = first;
      second.max_steps = 21;
      second.cuda_graph = true;
      Trainer resumed(second);
      resumed.load_checkpoint(first.run_dir + "/checkpoint.safetensors");
      CHECK(resumed.progress().step == 10);
      resumed.run();
      CHECK(flat(resumed) == flat(uninterrupted));
      CHECK(optimizer_state(resumed) == optimizer_state(uninterrupted));
      CHECK(resumed.progress().last_train_loss == uninterrupted.progress().last_train_loss);
      CHECK(resumed.progress().last_test_loss == uninterrupted.progress().last_test_loss);
    }
  }
}

TEST_CASE("sync-free mode says what it does on this device, never silently", "[graph][trainer]") {
  const std::string dir = fresh_temp_dir("notice");
  TrainConfig c = tiny_run_config(dir);
  CHECK(Trainer(c).sync_free_notice().empty());
  c.cuda_graph = true;
  CHECK_THAT(Trainer(c).sync_free_notice(), ContainsSubstring("CUDA graphs need a GPU"));
  c.method = "neuralgrok";
  c.outer_fraction = 0.05;
  c.amp_hidden = "8,8";
  c.meta_grad = "unrolled";
  Trainer unrolled(c);
  CHECK_FALSE(unrolled.sync_free());
  CHECK_THAT(unrolled.sync_free_notice(), ContainsSubstring("--meta-grad unrolled"));
  CHECK_THAT(unrolled.sync_free_notice(), ContainsSubstring("normal (synchronising) path"));
}

TEST_CASE("on a GPU, replayed CUDA graphs reproduce the eager run bit for bit", "[graph][cuda][long]") {
  if (!cuda_is_available()) SKIP("no CUDA GPU: " + cuda_unavailable_reason());
  const std::string dir = fresh_temp_dir("cuda");
  for (const Variant& v : variants()) {
    const std::string variant = v.name;
    CAPTURE(variant);
    TrainConfig normal = configure(dir + "/normal_" + v.name, v);
    normal.device = "cuda";
    normal.max_steps = 40;
    TrainConfig graphs = normal;
    graphs.run_dir = dir + "/graphs_" + v.name;
    graphs.cuda_graph = true;
    Trainer a(normal), b(graphs);
    CHECK_THAT(b.sync_free_notice(), ContainsSubstring("cuda"));
    a.run();
    b.run();
    CHECK(metrics_without_time(normal.run_dir) == metrics_without_time(graphs.run_dir));
    CHECK(flat(a) == flat(b));
    CHECK(optimizer_state(a) == optimizer_state(b));
  }
}

TEST_CASE("resuming a sync-free run with --cuda-graph=false switches its sync-free steps off", "[graph][cli]") {
  const std::string dir = fresh_temp_dir("cli_resume");
  auto run = [](const std::vector<std::string>& args) { return run_tapegrok(args).code; };
  const std::vector<std::string> tiny = {"--task", "a+b", "--layers", "1", "--width", "32", "--batch-size", "64",
                                         "--no-progress", "--run-dir", dir};
  std::vector<std::string> first = {"train", "--steps", "6", "--cuda-graph"};
  first.insert(first.end(), tiny.begin(), tiny.end());
  REQUIRE(run(first) == 0);
  CHECK(nlohmann::json::parse(read_file(dir + "/config.json"))["cuda_graph"] == true);
  std::vector<std::string> second = {"train", "--resume", dir + "/checkpoint.safetensors", "--steps", "10",
                                     "--cuda-graph=false", "--no-progress", "--run-dir", dir};
  REQUIRE(run(second) == 0);
  CHECK(nlohmann::json::parse(read_file(dir + "/config.json"))["cuda_graph"] == false);
  CHECK(nlohmann::json::parse(read_file(dir + "/summary.json"))["step"] == 10);
}
