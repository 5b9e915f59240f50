# One summary of what configure found and what it will build.
set(_lines
  "belay ${PROJECT_VERSION} (${CMAKE_BUILD_TYPE}), ${CMAKE_CXX_COMPILER_ID} ${CMAKE_CXX_COMPILER_VERSION}"
  "  protobuf        ${Protobuf_VERSION}"
  "  gRPC            ${gRPC_VERSION}"
  "  RocksDB         ${RocksDB_VERSION}"
  "  CLI11           ${CLI11_VERSION}"
  "  spdlog          ${spdlog_VERSION}"
  "  toml++          ${tomlplusplus_VERSION}"
  "  nlohmann-json   ${nlohmann_json_VERSION}"
  "  xxHash          ${XXHASH_VERSION}"
  "  GoogleTest      ${GTest_VERSION}"
  "  MPI             ${MPI_CXX_VERSION} (${MPI_CXX_COMPILER})"
  "  OpenMP          ${OpenMP_CXX_VERSION}"
  "  BLAS            ${BLAS_LIBRARIES}"
  "  libslurm        ${BELAY_SLURM_VERSION} (${SLURM_LIBRARY})"
  "  CUDA path       ${BELAY_HAVE_CUDA} (${BELAY_CUDA_REASON})"
  "  sanitizers      ${BELAY_SANITIZE}"
  "will build: belayd, belay, belay-worker, unit and system tests")
if(BELAY_HAVE_CUDA)
  list(APPEND _lines "           + CUDA kernels and gpu tests (label 'gpu', they skip without a device)")
endif()
list(JOIN _lines "\n" _summary)
message(STATUS "\n${_summary}\n")
