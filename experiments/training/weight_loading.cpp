#include "experiments/training/weight_loading.h"

#include <fmt/format.h>

#include <algorithm>

#include "engine/error.h"
#include "engine/tape.h"

namespace tg {

WeightPlan all_parameters(const ParameterTable& params) {
  WeightPlan plan;
  for (std::size_t i = 0; i < params.size(); ++i) plan[params.name(i)] = params.name(i);
  return plan;
}

WeightPlan selected_parameters(const std::vector<std::string>& names) {
  WeightPlan plan;
  for (const std::string& n : names) plan[n] = n;
  return plan;
}

WeightPlan parse_weight_plan(const std::string& text) {
  WeightPlan plan;
  std::size_t at = 0;
  while (at <= text.size()) {
    const std::size_t comma = std::min(text.find(',', at), text.size());
    const std::string entry = text.substr(at, comma - at);
    at = comma + 1;
    if (entry.empty()) {
      TG_CHECK(comma == text.size() && !plan.empty(), "weight plan '{}': empty entry", text);
      continue;
    }
    const std::size_t eq = entry.find('=');
    const std::string param = entry.substr(0, eq);
    const std::string tensor = eq == std::string::npos ? param : entry.substr(eq + 1);
    TG_CHECK(!param.empty() && !tensor.empty() && tensor.find('=') == std::string::npos,
             "weight plan '{}': entry '{}' must be 'parameter' or 'parameter=tensor'", text, entry);
    TG_CHECK(!plan.count(param), "weight plan '{}': parameter '{}' appears twice", text, param);
    plan[param] = tensor;
  }
  return plan;
}

std::vector<std::string> load_weights(const SafetensorsFile& file, const ParameterTable& params,
                                      const WeightPlan& plan, WeightLoadOptions options) {
  TG_CHECK(!plan.empty(), "loading weights from {}: nothing to load (empty plan)", file.path);
  // 1. validate every entry
  std::vector<std::pair<std::size_t, const Tensor*>> copies;
  for (const auto& [param, tensor] : plan) {
    TG_CHECK(params.contains(param), "loading weights from {}: the model has no parameter '{}' (to be loaded from "
             "tensor '{}')", file.path, param, tensor);
    const std::size_t i = params.index_of(param);
    const Shape& want = params[i].shape();
    const auto it = file.tensors.find(tensor);
    TG_CHECK(it != file.tensors.end(), "loading weights from {}: tensor '{}' is missing but parameter '{}' needs {} {}",
             file.path, tensor, param, shape_str(want), dtype_name(params.dtype()));
    const Tensor& t = it->second;
    TG_CHECK(is_floating(t.dtype()), "loading weights from {}: tensor '{}' is {} but parameter '{}' is floating ({})",
             file.path, tensor, t.str(), param, dtype_name(params.dtype()));
    TG_CHECK(options.convert_dtype || t.dtype() == params.dtype(),
             "loading weights from {}: tensor '{}' has dtype {} but parameter '{}' is {} (dtype conversion is off)",
             file.path, tensor, dtype_name(t.dtype()), param, dtype_name(params.dtype()));
    TG_CHECK(t.shape() == want, "loading weights from {}: tensor '{}' has shape {} but parameter '{}' needs {}",
             file.path, tensor, shape_str(t.shape()), param, shape_str(want));
    copies.emplace_back(i, &t);
  }
  // 2. apply
  NoGradGuard no_grad;
  std::sort(copies.begin(), copies.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::string> loaded;
  for (const auto& [i, t] : copies) {
    Tensor dst = params[i];
    dst.copy_from_(t->dtype() == params.dtype() ? *t : t->to(params.dtype()));
    loaded.push_back(params.name(i));
  }
  return loaded;
}

std::vector<std::string> load_weights(const std::string& path, const ParameterTable& params, const WeightPlan& plan,
                                      WeightLoadOptions options) {
  return load_weights(load_safetensors(path), params, plan, options);
}

}  // namespace tg
