#include "core/op_profile.h"

#include <chrono>
#include <mutex>
#include <string_view>
#include <unordered_map>

namespace ladder {

namespace {

using Clock = std::chrono::steady_clock;

// What every listening thread adds to.
struct Totals {
  std::mutex mutex;
  std::map<std::string, double> seconds, by_name;
  // The class of the forward operator that took each autograd sequence number: its backward node
  // is charged to the same class.
  std::unordered_map<int64_t, std::string> class_of_sequence;
};

Totals& totals() {
  static Totals t;
  return t;
}

// One running operator or scope on this thread.
struct Frame : at::ObserverContext {
  Clock::time_point start;
  double children = 0;  // seconds spent in the operators it called
  std::string op_class;
  const char* name = "";
  bool in_backward = false;
  Frame* parent = nullptr;
};

thread_local Frame* innermost = nullptr;

// The classes an operator has by its name, whatever scope it runs in ("" if none).
std::string class_of_name(std::string_view name) {
  static const std::string_view matmuls[] = {"aten::mm",      "aten::bmm",     "aten::addmm",
                                             "aten::baddbmm", "aten::addbmm",  "aten::matmul",
                                             "aten::linear",  "aten::_mm_out", "aten::mv"};
  for (const auto m : matmuls)
    if (name == m) return "matmul";
  if (name.find("scaled_dot_product") != std::string_view::npos ||
      name.find("ScaledDotProduct") != std::string_view::npos ||
      name.find("flash_attention") != std::string_view::npos)
    return "attention";
  if (name == "aten::to" || name == "aten::_to_copy" || name == "ToCopyBackward0") return "cast";
  return "";
}

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  auto frame = std::make_unique<Frame>();
  const std::string_view name = fn.name();
  const bool backward_node = fn.scope() == at::RecordScope::BACKWARD_FUNCTION ||
                             name.starts_with("autograd::engine::evaluate_function");
  frame->parent = innermost;
  frame->name = fn.name();
  frame->in_backward = backward_node || (innermost && innermost->in_backward);
  if (fn.scope() == at::RecordScope::USER_SCOPE && name.starts_with("ladder::"))
    frame->op_class = std::string(name.substr(8));
  else
    frame->op_class = class_of_name(name);
  Totals& t = totals();
  if (frame->op_class.empty() && backward_node && fn.seqNr() >= 0) {
    const std::lock_guard lock(t.mutex);
    const auto found = t.class_of_sequence.find(fn.seqNr());
    if (found != t.class_of_sequence.end()) frame->op_class = found->second;
  }
  if (frame->op_class.empty() && innermost) frame->op_class = innermost->op_class;
  if (frame->op_class.empty()) frame->op_class = frame->in_backward ? "autograd" : "other";
  if (!frame->in_backward && fn.scope() == at::RecordScope::FUNCTION && fn.seqNr() >= 0) {
    const std::lock_guard lock(t.mutex);
    t.class_of_sequence[fn.seqNr()] = frame->op_class;
  }
  innermost = frame.get();
  frame->start = Clock::now();
  return frame;
}

void on_end(const at::RecordFunction&, at::ObserverContext* context) {
  auto* frame = static_cast<Frame*>(context);
  if (!frame) return;
  const double took = std::chrono::duration<double>(Clock::now() - frame->start).count();
  if (frame->parent) frame->parent->children += took;
  innermost = frame->parent;
  Totals& t = totals();
  const std::lock_guard lock(t.mutex);
  t.seconds[frame->op_class] += took - frame->children;
  t.by_name[frame->name] += took - frame->children;
}

}  // namespace

OpProfile::OpProfile() {
  reset();
  handle_ = at::addGlobalCallback(at::RecordFunctionCallback(&on_start, &on_end));
}

OpProfile::~OpProfile() {
  at::removeCallback(handle_);
  Totals& t = totals();
  const std::lock_guard lock(t.mutex);
  t.class_of_sequence.clear();  // one entry per autograd node of the profiled steps
}

std::map<std::string, double> OpProfile::seconds() const {
  Totals& t = totals();
  const std::lock_guard lock(t.mutex);
  return t.seconds;
}

std::map<std::string, double> OpProfile::seconds_by_name() const {
  Totals& t = totals();
  const std::lock_guard lock(t.mutex);
  return t.by_name;
}

void OpProfile::reset() {
  Totals& t = totals();
  const std::lock_guard lock(t.mutex);
  t.seconds.clear();
  t.by_name.clear();
}

}  // namespace ladder
