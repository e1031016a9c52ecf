#include "parallel/diloco.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <sstream>
#include <stdexcept>

#include "core/format.h"

namespace ladder::parallel {

namespace {

int64_t blocks_of(int64_t n) {
  return (n + kQuantBlock - 1) / kQuantBlock;
}

// The largest code: 8-bit values in [-127, 127], 4-bit ones in [-7, 7] (symmetric, so that zero
// stays exact and the scale is absmax / qmax).
double qmax(PseudoGradDtype dtype) {
  return dtype == PseudoGradDtype::Int8 ? 127.0 : 7.0;
}

int64_t code_bytes(PseudoGradDtype dtype, int64_t n) {
  return dtype == PseudoGradDtype::Int8 ? n : (n + 1) / 2;
}

}  // namespace

int64_t encoded_bytes(PseudoGradDtype dtype, int64_t n) {
  switch (dtype) {
    case PseudoGradDtype::Fp32:
      return 4 * n;
    case PseudoGradDtype::Bf16:
      return 2 * n;
    case PseudoGradDtype::Int8:
    case PseudoGradDtype::Int4:
      return 4 * blocks_of(n) + code_bytes(dtype, n);
  }
  return 0;
}

void encode_pseudo_grad(const torch::Tensor& values, PseudoGradDtype dtype, torch::Tensor out) {
  torch::NoGradGuard no_grad;
  const int64_t n = values.numel();
  if (out.scalar_type() != torch::kUInt8 || out.numel() != encoded_bytes(dtype, n))
    throw std::invalid_argument("encode_pseudo_grad: the output must be uint8 of encoded_bytes");
  const torch::Tensor x = values.reshape(-1).to(torch::kFloat32);
  if (dtype == PseudoGradDtype::Fp32) {
    out.view(torch::kFloat32).copy_(x);
    return;
  }
  if (dtype == PseudoGradDtype::Bf16) {
    out.view(torch::kBFloat16).copy_(x);  // round to nearest even
    return;
  }
  // [scales: fp32 x blocks][codes]; a block's scale is absmax / qmax (0 for an all-zero block).
  const int64_t blocks = blocks_of(n);
  const torch::Tensor padded =
      torch::constant_pad_nd(x, {0, blocks * kQuantBlock - n}).view({blocks, kQuantBlock});
  const torch::Tensor scale = padded.abs().amax(1) / qmax(dtype);
  out.narrow(0, 0, 4 * blocks).view(torch::kFloat32).copy_(scale);
  const torch::Tensor safe = torch::where(scale > 0, scale, torch::ones_like(scale));
  torch::Tensor codes = torch::round(padded / safe.unsqueeze(1))
                            .clamp(-qmax(dtype), qmax(dtype))
                            .view(-1)
                            .narrow(0, 0, n);
  torch::Tensor bytes = out.narrow(0, 4 * blocks, code_bytes(dtype, n));
  if (dtype == PseudoGradDtype::Int8) {
    bytes.view(torch::kInt8).copy_(codes);
    return;
  }
  // 4 bits: code + 8 in [1, 15], two to a byte, the first in the low nibble.
  torch::Tensor nibbles = (codes + 8).to(torch::kUInt8);
  if (n % 2) nibbles = torch::cat({nibbles, torch::full({1}, 8, nibbles.options())});
  nibbles = nibbles.view({-1, 2});
  bytes.copy_(
      torch::bitwise_or(nibbles.select(1, 0), torch::bitwise_left_shift(nibbles.select(1, 1), 4)));
}

torch::Tensor decode_pseudo_grad(const torch::Tensor& bytes, PseudoGradDtype dtype, int64_t n) {
  torch::NoGradGuard no_grad;
  if (bytes.scalar_type() != torch::kUInt8 || bytes.numel() != encoded_bytes(dtype, n))
    throw std::invalid_argument("decode_pseudo_grad: expected uint8 of encoded_bytes");
  const torch::Tensor b = bytes.contiguous();
  if (dtype == PseudoGradDtype::Fp32) return b.view(torch::kFloat32).clone();
  if (dtype == PseudoGradDtype::Bf16) return b.view(torch::kBFloat16).to(torch::kFloat32);
  const int64_t blocks = blocks_of(n);
  const torch::Tensor scale = b.narrow(0, 0, 4 * blocks).view(torch::kFloat32);
  const torch::Tensor packed = b.narrow(0, 4 * blocks, code_bytes(dtype, n));
  torch::Tensor codes;
  if (dtype == PseudoGradDtype::Int8) {
    codes = packed.view(torch::kInt8).to(torch::kFloat32);
  } else {
    const torch::Tensor low = torch::bitwise_and(packed, 15);
    const torch::Tensor high = torch::bitwise_right_shift(packed, 4);
    codes = torch::stack({low, high}, 1).view(-1).narrow(0, 0, n).to(torch::kFloat32) - 8;
  }
  codes = torch::constant_pad_nd(codes, {0, blocks * kQuantBlock - n}).view({blocks, kQuantBlock});
  return (codes * scale.unsqueeze(1)).view(-1).narrow(0, 0, n).contiguous();
}

// One fragment's pseudo-gradient on its way: an all-reduce of pending_'s range in place (fp32), or
// an all-gather of every island's encoding.
struct DiLoCo::Exchange {
  int64_t fragment = 0;
  int64_t apply_after = 0;  // the step after which the outer update is applied
  bool received = false;    // pending_ holds the average
  torch::Tensor encodings;  // [islands, encoded bytes] (compressed only)
  PendingCollective collective;
};

DiLoCo::DiLoCo(std::vector<torch::Tensor> params, const Communicator& islands,
               DilocoOptions options, int64_t total_steps)
    : params_(std::move(params)), islands_(islands), options_(options), total_steps_(total_steps) {
  if (options_.inner_steps < 1 || options_.fragments < 1 || options_.overlap_steps < 0 ||
      options_.overlap_steps >= options_.inner_steps)
    throw std::invalid_argument(
        "DiLoCo: needs inner_steps >= 1, fragments >= 1 and "
        "0 <= overlap_steps < inner_steps");
  torch::NoGradGuard no_grad;
  int64_t n = 0;
  for (const auto& p : params_) {
    if (p.scalar_type() != torch::kFloat32 || !p.is_contiguous())
      throw std::invalid_argument("DiLoCo: parameters must be contiguous fp32 tensors");
    offset_.push_back(n);
    n += p.numel();
  }
  const auto options_f32 = torch::TensorOptions(torch::kFloat32)
                               .device(params_.empty() ? torch::kCPU : params_[0].device());
  global_ = torch::empty({n}, options_f32);
  for (size_t k = 0; k < params_.size(); ++k)
    global_.narrow(0, offset_[k], params_[k].numel()).copy_(params_[k].reshape(-1));
  momentum_ = torch::zeros({n}, options_f32);
  pending_ = torch::zeros({n}, options_f32);
  for (int64_t f = 0; f <= options_.fragments; ++f)
    fragment_begin_.push_back(n * f / options_.fragments);
  clean_at_.assign(static_cast<size_t>(options_.fragments), 0);
}

DiLoCo::~DiLoCo() = default;

int64_t DiLoCo::shift(int64_t fragment) const {
  return fragment * options_.inner_steps / fragments();
}

torch::Tensor DiLoCo::gather(int64_t begin, int64_t end) const {
  std::vector<torch::Tensor> pieces;
  for (size_t k = 0; k < params_.size(); ++k) {
    const int64_t a = std::max(begin, offset_[k]);
    const int64_t b = std::min(end, offset_[k] + params_[k].numel());
    if (a < b) pieces.push_back(params_[k].view(-1).narrow(0, a - offset_[k], b - a));
  }
  if (pieces.empty()) return torch::empty({0}, global_.options());
  return torch::cat(pieces);
}

void DiLoCo::scatter(int64_t begin, int64_t end, const torch::Tensor& values) {
  for (size_t k = 0; k < params_.size(); ++k) {
    const int64_t a = std::max(begin, offset_[k]);
    const int64_t b = std::min(end, offset_[k] + params_[k].numel());
    if (a < b)
      params_[k]
          .view(-1)
          .narrow(0, a - offset_[k], b - a)
          .copy_(values.narrow(0, a - begin, b - a));
  }
}

void DiLoCo::start(int64_t fragment, int64_t apply_after) {
  const int64_t begin = fragment_begin_[fragment], end = fragment_begin_[fragment + 1];
  const int64_t n = end - begin;
  const int m = islands_.size();
  Exchange e;
  e.fragment = fragment, e.apply_after = apply_after;
  torch::Tensor delta = pending_.narrow(0, begin, n);
  torch::sub_out(delta, global_.narrow(0, begin, n), gather(begin, end));
  if (options_.dtype == PseudoGradDtype::Fp32) {
    e.collective = islands_.all_reduce_start(delta, ReduceOp::Avg);
    stats_.bytes += 2 * (m - 1) * 4 * n / m;
  } else {
    const int64_t bytes = encoded_bytes(options_.dtype, n);
    e.encodings = torch::empty({m, bytes}, global_.options().dtype(torch::kUInt8));
    encode_pseudo_grad(delta, options_.dtype, e.encodings[islands_.rank()]);
    e.collective = islands_.all_gather_in_place_start(e.encodings);
    stats_.bytes += (m - 1) * bytes;
  }
  ++stats_.collectives;
  exchanges_.push_back(std::move(e));
}

void DiLoCo::finish(Exchange& e) {
  if (e.received) return;
  e.collective.wait();
  if (e.encodings.defined()) {
    // Every island decodes all encodings and adds them in island order: the same sum everywhere.
    const int64_t begin = fragment_begin_[e.fragment];
    const int64_t n = fragment_begin_[e.fragment + 1] - begin;
    torch::Tensor sum = decode_pseudo_grad(e.encodings[0], options_.dtype, n);
    for (int64_t i = 1; i < e.encodings.size(0); ++i)
      sum.add_(decode_pseudo_grad(e.encodings[i], options_.dtype, n));
    pending_.narrow(0, begin, n).copy_(sum.div_(static_cast<double>(e.encodings.size(0))));
    e.encodings = torch::Tensor();
  }
  e.received = true;
}

void DiLoCo::apply(int64_t fragment, bool mix) {
  const int64_t begin = fragment_begin_[fragment], end = fragment_begin_[fragment + 1];
  const int64_t n = end - begin;
  const double mu = options_.outer_momentum;
  torch::Tensor delta = pending_.narrow(0, begin, n);
  torch::Tensor m = momentum_.narrow(0, begin, n);
  torch::Tensor theta = global_.narrow(0, begin, n);
  // Nesterov SGD on the averaged pseudo-gradient, as torch.optim.SGD(nesterov=True).
  m.mul_(mu).add_(delta);
  theta.sub_(delta.add(m, mu), options_.outer_lr);
  delta.zero_();
  if (mix) {
    const double alpha = options_.mixing;
    scatter(begin, end, gather(begin, end).mul_(alpha).add_(theta, 1.0 - alpha));
  } else {
    scatter(begin, end, theta);
  }
  ++outer_updates_;
}

bool DiLoCo::after_inner_step(int64_t done) {
  torch::NoGradGuard no_grad;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t before = outer_updates_;
  const int64_t h = options_.inner_steps, tau = options_.overlap_steps;
  for (int64_t f = 0; f < fragments(); ++f) {
    const int64_t s = shift(f);
    if (done >= s && (done - s) % h == 0 && done < total_steps_)
      start(f, std::min(done + tau, total_steps_));
  }
  // Due exchanges, in the order they started; with tau = 0 the ones just started.
  for (size_t i = 0; i < exchanges_.size();) {
    Exchange& e = exchanges_[i];
    if (e.apply_after > done) {
      e.collective.test();  // let MPI move it along
      ++i;
      continue;
    }
    finish(e);
    const bool mix = tau > 0;
    apply(e.fragment, mix);
    if (!mix) clean_at_[e.fragment] = done;
    exchanges_.erase(exchanges_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  if (done == total_steps_) {
    // The run ends on the global model: every fragment not just synchronised meets once more.
    for (int64_t f = 0; f < fragments(); ++f) {
      if (clean_at_[f] == done) continue;
      start(f, done);
      finish(exchanges_.back());
      apply(f, false);
      exchanges_.pop_back();
      clean_at_[f] = done;
    }
  }
  stats_.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return outer_updates_ > before;
}

void DiLoCo::swap_global() {
  torch::NoGradGuard no_grad;
  const int64_t n = global_.numel();
  torch::Tensor island = gather(0, n);
  scatter(0, n, global_);
  global_.copy_(island);
}

torch::Tensor DiLoCo::global(size_t k) const {
  return global_.narrow(0, offset_[k], params_[k].numel());
}
torch::Tensor DiLoCo::momentum(size_t k) const {
  return momentum_.narrow(0, offset_[k], params_[k].numel());
}
torch::Tensor DiLoCo::pending(size_t k) const {
  return pending_.narrow(0, offset_[k], params_[k].numel());
}

std::string DiLoCo::pending_state() {
  std::string text;
  for (Exchange& e : exchanges_) {
    finish(e);
    text += (text.empty() ? "" : " ") + std::to_string(e.fragment) + ":" +
            std::to_string(e.apply_after);
  }
  return text;
}

void DiLoCo::set_pending_state(const std::string& text) {
  exchanges_.clear();
  std::istringstream in(text);
  for (std::string item; in >> item;) {
    const auto colon = item.find(':');
    if (colon == std::string::npos)
      throw std::invalid_argument("DiLoCo: bad pending state " + text);
    Exchange e;
    e.fragment = std::stoll(item.substr(0, colon));
    e.apply_after = std::stoll(item.substr(colon + 1));
    if (e.fragment < 0 || e.fragment >= fragments())
      throw std::invalid_argument("DiLoCo: pending state names fragment " +
                                  std::to_string(e.fragment) + " of " +
                                  std::to_string(fragments()));
    e.received = true;
    exchanges_.push_back(std::move(e));
  }
}

void DiLoCo::agree(torch::Tensor& values) {
  const int m = islands_.size();
  if (m == 1) return;
  islands_.all_reduce(values);
  stats_.bytes += 2 * (m - 1) * values.numel() * values.element_size() / m;
  ++stats_.collectives;
}

CommStats DiLoCo::take_stats() {
  const CommStats s = stats_;
  stats_ = CommStats{};
  return s;
}

double DiLoCo::data_parallel_bytes_per_step() const {
  const int m = islands_.size();
  return 2.0 * (m - 1) / m * 4.0 * static_cast<double>(global_.numel());
}

std::string describe_diloco(const DilocoOptions& o, int64_t islands, int ranks_per_island,
                            int64_t rows_per_step, bool reset_inner_state) {
  auto plural = [](int64_t n) { return n == 1 ? "" : "s"; };
  return fmt::format(
      "DiLoCo: {} island{} of {} ranks, each on its own {} sequences per step; outer step every "
      "{} inner steps: pseudo-gradients in {}, Nesterov SGD lr {} momentum {}, inner AdamW state "
      "{}{}",
      islands, plural(islands), ranks_per_island, rows_per_step, o.inner_steps,
      choice_name(kPseudoGradDtypeNames, o.dtype), shortest_float(o.outer_lr),
      shortest_float(o.outer_momentum), reset_inner_state ? "reset" : "kept",
      o.fragments > 1
          ? fmt::format("; streaming: {} fragments on staggered steps, exchanges overlapping {} "
                        "inner step{} (mixing {})",
                        o.fragments, o.overlap_steps, plural(o.overlap_steps),
                        shortest_float(o.mixing))
      : o.overlap_steps > 0
          ? fmt::format("; exchanges overlapping {} inner step{} (mixing {})", o.overlap_steps,
                        plural(o.overlap_steps), shortest_float(o.mixing))
          : std::string());
}

std::string describe_diloco_interval(int64_t step, int64_t outer_updates, bool streaming,
                                     double bytes_per_token, double dp_bytes_per_token,
                                     double outer_seconds) {
  return fmt::format(
      "diloco step {} | {} {}{} since the last line | across islands {}B per token{} | outer step "
      "{}",
      step, outer_updates, streaming ? "fragment update" : "outer step",
      outer_updates == 1 ? "" : "s", human_count(bytes_per_token),
      dp_bytes_per_token > 0
          ? fmt::format(" (data parallel: {}B, ratio {:.4f})", human_count(dp_bytes_per_token),
                        bytes_per_token / dp_bytes_per_token)
          : std::string(),
      outer_updates > 0 ? fmt::format("{:.0f} ms", 1e3 * outer_seconds) : std::string("none"));
}

Attributes diloco_attributes(const DilocoOptions& o, int64_t islands, bool active,
                             bool reset_inner_state) {
  return {{"islands", islands},
          {"diloco", int64_t{active}},
          {"diloco_inner_steps", o.inner_steps},
          {"diloco_outer_lr", o.outer_lr},
          {"diloco_outer_momentum", o.outer_momentum},
          {"diloco_fragments", o.fragments},
          {"diloco_overlap_steps", o.overlap_steps},
          {"diloco_mixing", o.mixing},
          {"diloco_pseudo_grad_dtype", std::string(choice_name(kPseudoGradDtypeNames, o.dtype))},
          {"diloco_inner_state", std::string(reset_inner_state ? "reset" : "keep")}};
}

}  // namespace ladder::parallel
