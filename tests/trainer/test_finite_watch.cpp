// The sync-free step's deferred finite check (trainer/run/finite_watch.h): the device keeps the
// first non-finite step among those noted since the last read, and the read names it.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "core/error.h"
#include "trainer/run/finite_watch.h"

namespace ladder {
namespace {

torch::Tensor scalar(double v) {
  return torch::tensor(v, torch::kFloat64);
}

std::string check_message(FiniteWatch& watch) {
  try {
    watch.check();
  } catch (const AgreedError& e) {
    return e.what();
  }
  return "";
}

TEST(FiniteWatch, FiniteStepsPassAndNothingNotedReadsNothing) {
  FiniteWatch watch;
  EXPECT_FALSE(watch.pending());
  EXPECT_EQ(watch.check(), 0.0);
  for (int64_t step = 0; step < 7; ++step)
    watch.note(step, scalar(2.5 - 0.1 * static_cast<double>(step)), scalar(0.3));
  EXPECT_TRUE(watch.pending());
  EXPECT_EQ(check_message(watch), "");
  EXPECT_FALSE(watch.pending());
}

TEST(FiniteWatch, TheFirstNonFiniteStepSinceTheLastReadIsNamed) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  FiniteWatch watch;
  // Steps 0-3 read clean; then 4, 5 finite, 6 has an infinite norm, 7 a NaN loss: step 7 (1-based)
  // is named, with the norm, and the read after step 9.
  for (int64_t step = 0; step < 4; ++step)
    watch.note(step, scalar(1.0), scalar(1.0));
  EXPECT_EQ(check_message(watch), "");
  watch.note(4, scalar(1.0), scalar(1.0));
  watch.note(5, scalar(1.0), scalar(1.0));
  watch.note(6, scalar(1.0), scalar(inf));
  watch.note(7, scalar(nan), scalar(nan));
  watch.note(8, scalar(1.0), scalar(1.0));
  const std::string message = check_message(watch);
  EXPECT_NE(message.find("step 7: the gradient norm is inf"), std::string::npos) << message;
  EXPECT_NE(message.find("read after step 9"), std::string::npos) << message;
  EXPECT_NE(message.find("stopping without writing a checkpoint"), std::string::npos) << message;
  // A read resets the watch: the next steps are judged on their own.
  watch.note(9, scalar(1.0), scalar(1.0));
  EXPECT_EQ(check_message(watch), "");
  watch.note(10, scalar(nan), scalar(1.0));
  const std::string loss = check_message(watch);
  EXPECT_NE(loss.find("step 11: the training loss is nan"), std::string::npos) << loss;
  EXPECT_EQ(loss.find("read after"), std::string::npos) << loss;  // read at its own step
}

}  // namespace
}  // namespace ladder
