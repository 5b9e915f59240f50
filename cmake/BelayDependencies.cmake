# Finds belay's dependencies, all installed from Debian packages by scripts/deps.sh.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)

find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_program(BELAY_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(RocksDB CONFIG REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
find_package(spdlog CONFIG REQUIRED)
find_package(tomlplusplus CONFIG REQUIRED)
find_package(nlohmann_json CONFIG REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)  # belayd's /metrics
find_package(GTest CONFIG REQUIRED)
find_package(OpenMP REQUIRED COMPONENTS CXX)
find_package(MPI REQUIRED COMPONENTS CXX)

pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)

set(BLA_VENDOR OpenBLAS)
find_package(BLAS REQUIRED)
find_path(BELAY_CBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas REQUIRED)

# Debian ships libslurm without a pkg-config file or CMake package.
find_path(SLURM_INCLUDE_DIR slurm/slurm.h REQUIRED)
find_library(SLURM_LIBRARY NAMES slurm REQUIRED)
if(NOT TARGET Slurm::slurm)
  add_library(Slurm::slurm UNKNOWN IMPORTED)
  set_target_properties(Slurm::slurm PROPERTIES
    IMPORTED_LOCATION "${SLURM_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${SLURM_INCLUDE_DIR}")
endif()
file(STRINGS "${SLURM_INCLUDE_DIR}/slurm/slurm_version.h" _slurm_version_line
     REGEX "^#define SLURM_VERSION_NUMBER")
string(REGEX REPLACE ".*(0x[0-9a-fA-F]+).*" "\\1" _slurm_version_hex "${_slurm_version_line}")
math(EXPR _slurm_major "(${_slurm_version_hex} >> 16) & 255")
math(EXPR _slurm_minor "(${_slurm_version_hex} >> 8) & 255")
math(EXPR _slurm_micro "${_slurm_version_hex} & 255")
if(_slurm_minor LESS 10)
  set(_slurm_minor "0${_slurm_minor}")
endif()
set(BELAY_SLURM_VERSION "${_slurm_major}.${_slurm_minor}.${_slurm_micro}")
