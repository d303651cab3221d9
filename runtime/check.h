// The one set of error checks. Each reports file, line and rank, and throws
// mt::Error; launch/main.cpp turns an Error on any rank into MPI_Abort so that
// no rank is left waiting in a collective.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace mt {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// The rank printed in error messages; set once by Topology at start-up.
void set_error_rank(int rank);
int error_rank();

[[noreturn]] void throw_error(const char* file, int line, const std::string& msg);

// What HDF5's error stack says about the last failure, as " (HDF5: the
// innermost cause; in the outermost call)", or "" when it says nothing;
// clears the stack.
std::string hdf5_error_detail();

}  // namespace mt

#define MT_CHECK(cond, ...)                                                   \
  do {                                                                        \
    if (!(cond)) ::mt::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
  } while (0)

#define MT_FAIL(...) ::mt::throw_error(__FILE__, __LINE__, fmt::format(__VA_ARGS__))

#define MPI_CHECK(call)                                                       \
  do {                                                                        \
    int mt_mpi_rc_ = (call);                                                  \
    if (mt_mpi_rc_ != MPI_SUCCESS) {                                          \
      char mt_mpi_msg_[MPI_MAX_ERROR_STRING];                                 \
      int mt_mpi_len_ = 0;                                                    \
      MPI_Error_string(mt_mpi_rc_, mt_mpi_msg_, &mt_mpi_len_);                \
      ::mt::throw_error(__FILE__, __LINE__,                                   \
                        fmt::format("{} failed: {}", #call,                   \
                                    std::string(mt_mpi_msg_, mt_mpi_len_)));  \
    }                                                                         \
  } while (0)

// HDF5 calls return a negative value (herr_t or hid_t) on failure.
#define H5_CHECK(call, ...)                                                   \
  ([&]() {                                                                    \
    auto mt_h5_rc_ = (call);                                                  \
    if (mt_h5_rc_ < 0)                                                        \
      ::mt::throw_error(__FILE__, __LINE__,                                   \
                        fmt::format("{} failed: {}{}", #call, fmt::format(__VA_ARGS__), \
                                    ::mt::hdf5_error_detail()));              \
    return mt_h5_rc_;                                                         \
  }())
