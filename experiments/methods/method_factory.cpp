#include "experiments/methods/method_factory.h"

#include <fmt/format.h>

#include "engine/error.h"

namespace tg {

// Each defined in its method's file.
std::unique_ptr<GradientMethod> make_grokfast_ema(const MethodSetup&);
std::unique_ptr<GradientMethod> make_grokfast_ma(const MethodSetup&);
std::unique_ptr<GradientMethod> make_neuralgrok(const MethodSetup&);
std::unique_ptr<GradientMethod> make_perp_grad(const MethodSetup&);
std::unique_ptr<GradientMethod> make_per_tensor_normalization(const MethodSetup&);

namespace {

struct MethodEntry {
  const char* name;  // --method NAME
  std::unique_ptr<GradientMethod> (*make)(const MethodSetup&);
};

constexpr MethodEntry kMethods[] = {
    {"standard", nullptr},  // the optimizer gets the raw gradient
    {"grokfast-ema", make_grokfast_ema},
    {"grokfast-ma", make_grokfast_ma},
    {"neuralgrok", make_neuralgrok},
    {"perp-grad", make_perp_grad},
};

}  // namespace

std::string gradient_method_names() {
  std::string names;
  for (const MethodEntry& m : kMethods) names += names.empty() ? m.name : fmt::format(" | {}", m.name);
  return names;
}

MethodList make_gradient_methods(const MethodSetup& setup) {
  const std::string& method = setup.config.method;
  const MethodEntry* entry = nullptr;
  for (const MethodEntry& m : kMethods) {
    if (method == m.name) entry = &m;
  }
  TG_CHECK(entry != nullptr, "--method '{}': expected {}", method, gradient_method_names());
  MethodList methods;
  if (entry->make != nullptr) methods.push_back(entry->make(setup));
  if (setup.config.grad_normalize > 0) methods.push_back(make_per_tensor_normalization(setup));
  // A recorded step (--meta-grad unrolled) runs every method's recorded form: refuse a combination with
  // a method that has none here, before the run writes anything.
  bool records = false;
  for (const auto& m : methods) records |= m->records_steps();
  for (const auto& m : methods) {
    TG_CHECK(!records || m->has_recorded_form(),
             "gradient method '{}' has no recorded form, so it cannot run inside a recorded step "
             "(--meta-grad unrolled){}",
             m->name(), setup.config.grad_normalize > 0 ? "; leave out --grad-normalize" : "");
  }
  return methods;
}

}  // namespace tg
