// Loading named tensors from a safetensors file into a model's ParameterTable: how a run starts from
// weights trained elsewhere (a tapegrok checkpoint, or a PyTorch state dict saved with
// safetensors.torch.save_file), and the general pass under GrokTransfer's embedding transfer.
//
//   SafetensorsFile f = load_safetensors("pytorch_model.safetensors");
//   load_weights(f, params, all_parameters(params));                    // every parameter, same names
//   load_weights(f, params, selected_parameters({"head.weight"}));      // some of them
//   load_weights(f, params, {{"token_embeddings.A", "token_embeddings.weight"}});  // renamed
//
// A plan maps parameter names (the table's) to tensor names (the file's). Every entry is checked
// first (the parameter exists, the tensor exists, dtype and shape agree); only when all entries pass
// is anything copied, so a failed load leaves the parameters untouched. Errors name the file, the
// tensor and the parameter. Tensors of the file the plan does not mention are ignored (a run
// checkpoint also holds optimizer and sampler state).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "engine/parameters.h"
#include "engine/safetensors.h"

namespace tg {

// parameter name -> tensor name in the file
using WeightPlan = std::map<std::string, std::string>;

WeightPlan all_parameters(const ParameterTable& params);                 // every parameter, same name
WeightPlan selected_parameters(const std::vector<std::string>& names);   // these parameters, same name
// "param=tensor,param2=tensor2" or "name" (same name on both sides); throws on a malformed entry.
WeightPlan parse_weight_plan(const std::string& text);

struct WeightLoadOptions {
  bool convert_dtype = false;  // allow f32 <-> f64 (e.g. PyTorch f32 weights into an f64 gradient check)
};

// Checks the whole plan, then copies. Returns the parameter names loaded, in the table's order.
std::vector<std::string> load_weights(const SafetensorsFile& file, const ParameterTable& params,
                                      const WeightPlan& plan, WeightLoadOptions options = {});
std::vector<std::string> load_weights(const std::string& path, const ParameterTable& params, const WeightPlan& plan,
                                      WeightLoadOptions options = {});

}  // namespace tg
