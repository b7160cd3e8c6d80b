// The amplifier MLP as an exact piecewise-linear function of its input (CPU).
//
// NeuralGrok's MLP maps one scalar g to one score s(g) through Linear and ReLU layers. Every ReLU
// unit switches on or off at most once per linear piece of its input, so s is continuous and
// piecewise linear in g: the real line splits into M intervals, and on interval m
//     s(g) = slope[m] * g + intercept[m].
// The pieces are built layer by layer: on an interval where the units of the layers so far keep
// their on/off state, layer l's pre-activations are affine in g, z = A g + B ([out_l] each); unit j
// crosses zero at g = -B_j / A_j, and those crossings split the interval for the next layer.
// With hidden sizes (h1, h2) there are at most (h1 + 1)(h2 + 1) pieces (16,641 for (128, 128)).
//
// Why: the direct MLP costs sum_l in_l * out_l multiply-adds per entry (~16.6k for (128, 128)), for
// every one of the model's ~423k gradient entries, every step. The pieces cost about as much to
// build once per call as the direct MLP costs for a few hundred entries; each entry then costs a
// binary search and one multiply-add. The backward needs per piece only S0 = sum ds and
// S1 = sum ds * g over the entries that fall in it: the weight gradient of a piece is linear in
// (g, 1) with its on/off pattern held fixed, so it is backpropagated once per interval of each
// level (two "channels": the coefficient of g and the constant), not once per entry.
//
// Everything here is computed in double. Values agree with the direct MLP to rounding; derivatives
// agree except for entries lying exactly on a breakpoint, where the two sides' one-sided slopes
// differ (the direct path takes ReLU'(0) = 0; here the piece to the left is used).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace tg::cpu {

class AmplifierPieces {
 public:
  // The pieces of `mlp`, or nullopt when building them (and, later, backpropagating through them)
  // would take more than `max_work` multiply-adds: deep or wide MLPs can have very many pieces.
  template <class T>
  static std::optional<AmplifierPieces> build(const Mlp<T>& mlp, double max_work);

  // Multiply-adds of the direct MLP per entry: sum_l in_l * out_l.
  template <class T>
  static double direct_work_per_entry(const Mlp<T>& mlp);

  // What the kernels use for `path`: the pieces when asked for (any cost), none (null) for `direct`,
  // and for `automatic` the pieces when they cost 16x fewer multiply-adds than the MLP on every entry
  // of `runs` (their loops are scalar; the direct MLP's are GEMMs).
  // The last pieces built are kept and returned again while the MLP's weights are the same values:
  // NeuralGrok's amplifier changes only at its meta steps, but amplifies every step's gradient.
  template <class T>
  static std::shared_ptr<const AmplifierPieces> for_path(const Mlp<T>& mlp, const std::vector<Run>& runs,
                                                         MlpPath path);

  std::int64_t pieces() const { return static_cast<std::int64_t>(slope_.size()); }
  // The piece holding g: the m with upper[m - 1] < g <= upper[m] (NaN lands in piece 0 and stays NaN).
  std::int64_t piece_of(double g) const;
  double score(std::int64_t m, double g) const { return slope_[static_cast<std::size_t>(m)] * g + intercept_[static_cast<std::size_t>(m)]; }
  double slope(std::int64_t m) const { return slope_[static_cast<std::size_t>(m)]; }

  // The gradient of sum_m (slope[m] * s1[m] + intercept[m] * s0[m]) with respect to every weight and
  // bias, each piece's on/off pattern held fixed: with s0[m] = sum ds_i and s1[m] = sum ds_i g_i over
  // the entries in piece m this is sum_i ds_i ds(g_i)/dphi. dw[l], db[l] are shaped like mlp.w[l],
  // mlp.b[l] and overwritten.
  void weight_gradients(const std::vector<double>& s0, const std::vector<double>& s1,
                        std::vector<std::vector<double>>& dw, std::vector<std::vector<double>>& db) const;

 private:
  // Level l's intervals: on each, every unit of layers 0 .. l-1 is either on or off. Level 0 is the
  // whole line; level l + 1 splits each level-l interval at the zero crossings of layer l's units.
  struct Level {
    std::vector<std::int32_t> parent;  // [count]: the level l - 1 interval holding it (level 0: none)
    std::vector<std::uint8_t> on;      // [count, out_{l-1}]: layer l - 1's units that are on
    std::vector<double> a, b;          // [count, out_l]: layer l's pre-activations z = a g + b there (hidden l)
    std::int64_t count() const { return static_cast<std::int64_t>(parent.size()); }
  };

  // Layer l's input on level l's interval q, as a_in g + b_in ([in_l] each): for layer 0 the input g
  // itself (1, 0); above, the parent interval's pre-activations of layer l - 1 with the off units zeroed.
  void layer_input(std::size_t l, std::int64_t q, std::vector<double>& a_in, std::vector<double>& b_in) const;

  // Whether these pieces were built from exactly mlp's sizes and weight values.
  template <class T>
  bool built_from(const Mlp<T>& mlp) const;

  double work_ = 0;                         // the build's multiply-add count (as build's budget counts them)
  std::vector<std::vector<double>> w_, b_;  // the weights in double, [out_l, in_l] and [out_l]
  std::vector<std::int64_t> in_, out_;
  std::vector<Level> levels_;               // levels_[0 .. layers - 1]; the last holds the pieces
  std::vector<double> upper_;               // [pieces - 1]: ascending right ends of every piece but the last
  std::vector<double> slope_, intercept_;   // [pieces]
};

}  // namespace tg::cpu
