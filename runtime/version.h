// The version string of this build, in --version and in checkpoints.
#pragma once

namespace mt {

inline constexpr const char* kMoetrainVersion = "0.1.0";

}  // namespace mt
