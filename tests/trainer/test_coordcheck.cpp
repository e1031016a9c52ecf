#include <gtest/gtest.h>

#include <cmath>

#include "trainer/tools/coordcheck.h"

namespace ladder {
namespace {

TEST(Coordcheck, LogLogSlopeOfPowerLaws) {
  const std::vector<double> widths{64, 128, 256, 512, 1024};
  for (double exponent : {-0.5, 0.0, 0.13, 1.0, 2.0}) {
    std::vector<double> values;
    for (double w : widths)
      values.push_back(3.0 * std::pow(w, exponent));
    EXPECT_NEAR(loglog_slope(widths, values), exponent, 1e-12) << exponent;
  }
  // Least squares through ln-ln points: (ln 1, ln 1), (ln 2, ln 4), (ln 4, ln 4) -> slope 2/3 of
  // the log-ratio pattern [0, 2, 2] over [0, 1, 2] in units of ln 2: (3*6 - 3*4) / (3*5 - 9) = 1.
  EXPECT_NEAR(loglog_slope({1, 2, 4}, {1, 4, 4}), 1.0, 1e-12);
  // Zeros (a readout started at zero) and non-positive widths are left out; too few points: NaN.
  EXPECT_NEAR(loglog_slope({64, 128, 256}, {0.0, 2.0, 4.0}), 1.0, 1e-12);
  EXPECT_TRUE(std::isnan(loglog_slope({64, 128}, {0.0, 1.0})));
  EXPECT_TRUE(std::isnan(loglog_slope({64, 64}, {1.0, 2.0})));
}

}  // namespace
}  // namespace ladder
