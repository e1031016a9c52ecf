# Finds every third-party dependency once and exposes it as a target:
#   ladder::torch   LibTorch (Debian's libtorch-dev layout, or a TorchConfig.cmake via Torch_DIR/CMAKE_PREFIX_PATH)
#   MPI::MPI_CXX    Open MPI
#   ladder::hdf5    parallel HDF5 (the Open MPI flavour)
#   tomlplusplus::tomlplusplus, spdlog::spdlog, CLI11::CLI11, nlohmann_json::nlohmann_json
#   ladder::sentencepiece (processor + trainer)
#   GTest::gtest, GTest::gtest_main (tests only)

# --- LibTorch -------------------------------------------------------------------------------------
# A CUDA LibTorch (PyPI's torch wheel) ships TorchConfig.cmake and is found through Torch_DIR or
# CMAKE_PREFIX_PATH. Debian's libtorch-dev ships no TorchConfig.cmake, so for the default CPU build we look
# for its headers and libraries directly. We only call find_package(Torch) when the user points at one, so
# that the CPU build never picks up the CUDA toolkit installed on the machine by accident.
add_library(ladder::torch INTERFACE IMPORTED)
if(Torch_DIR OR LADDER_CUDA)
  # TorchConfig.cmake looks for libtorch/libc10 with PATHS, which CMake searches after the system
  # folders: with Debian's libtorch-dev installed it would silently mix in /usr/lib's 1.13 libraries.
  # The LibTorch's own prefix goes first, and a mixed result is refused below.
  if(Torch_DIR)
    get_filename_component(_ladder_torch_prefix "${Torch_DIR}/../../.." ABSOLUTE)
    list(PREPEND CMAKE_PREFIX_PATH "${_ladder_torch_prefix}")
  endif()
  if(LADDER_CUDA)
    # CUDA 12.9+ ships NVTX 3 as headers only, without the nvToolsExt library that older
    # TorchConfig.cmake files link: an empty target stands in for it.
    find_package(CUDAToolkit REQUIRED)
    if(NOT TARGET CUDA::nvToolsExt)
      add_library(CUDA::nvToolsExt INTERFACE IMPORTED)
    endif()
  endif()
  find_package(Torch REQUIRED CONFIG)
  foreach(_lib ${TORCH_LIBRARY} ${C10_LIBRARY})
    if(_ladder_torch_prefix AND NOT _lib MATCHES "^${_ladder_torch_prefix}")
      message(FATAL_ERROR "LibTorch library ${_lib} is not from ${_ladder_torch_prefix}")
    endif()
  endforeach()
  target_link_libraries(ladder::torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(ladder::torch INTERFACE ${TORCH_INCLUDE_DIRS})
  # TORCH_CXX_FLAGS carries -D_GLIBCXX_USE_CXX11_ABI=0/1, which must match the wheel.
  separate_arguments(_ladder_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(ladder::torch INTERFACE ${_ladder_torch_flags})
  set(LADDER_TORCH_SOURCE "TorchConfig.cmake (${Torch_DIR})")
else()
  find_path(LADDER_TORCH_INCLUDE torch/torch.h PATHS /usr/include/torch/csrc/api/include
            NO_DEFAULT_PATH)
  find_path(LADDER_ATEN_INCLUDE ATen/ATen.h PATHS /usr/include)
  find_library(LADDER_TORCH_LIB torch)
  find_library(LADDER_TORCH_CPU_LIB torch_cpu)
  find_library(LADDER_C10_LIB c10)
  if(NOT LADDER_TORCH_INCLUDE OR NOT LADDER_ATEN_INCLUDE OR NOT LADDER_TORCH_LIB
     OR NOT LADDER_TORCH_CPU_LIB OR NOT LADDER_C10_LIB)
    message(FATAL_ERROR
      "LibTorch not found. Install Debian's libtorch-dev (launch/setup.sh does), or point Torch_DIR at a "
      "LibTorch that ships TorchConfig.cmake.")
  endif()
  target_include_directories(ladder::torch INTERFACE ${LADDER_ATEN_INCLUDE} ${LADDER_TORCH_INCLUDE})
  target_link_libraries(ladder::torch INTERFACE ${LADDER_TORCH_LIB} ${LADDER_TORCH_CPU_LIB}
                                                ${LADDER_C10_LIB})
  set(LADDER_TORCH_SOURCE "Debian layout (${LADDER_TORCH_CPU_LIB})")
endif()
message(STATUS "ladder: LibTorch from ${LADDER_TORCH_SOURCE}")

# --- MPI and parallel HDF5 ------------------------------------------------------------------------
find_package(MPI REQUIRED COMPONENTS C)
# ladder uses MPI's C API only; keep mpi.h from pulling in the deprecated C++ bindings (libmpi_cxx).
add_compile_definitions(OMPI_SKIP_MPICXX=1 MPICH_SKIP_MPICXX=1)
set(HDF5_PREFER_PARALLEL TRUE)
find_package(HDF5 REQUIRED COMPONENTS C)
if(NOT HDF5_IS_PARALLEL)
  message(FATAL_ERROR
    "HDF5 at ${HDF5_INCLUDE_DIRS} is serial; ladder writes checkpoints with parallel HDF5. "
    "Install libhdf5-openmpi-dev (launch/setup.sh does).")
endif()
add_library(ladder::hdf5 INTERFACE IMPORTED)
target_include_directories(ladder::hdf5 INTERFACE ${HDF5_INCLUDE_DIRS})
target_link_libraries(ladder::hdf5 INTERFACE ${HDF5_C_LIBRARIES} MPI::MPI_C)
target_compile_definitions(ladder::hdf5 INTERFACE ${HDF5_DEFINITIONS})

# --- NCCL (optional) ------------------------------------------------------------------------------
# -DLADDER_NCCL=ON builds the NCCL backend of the Communicator for CUDA tensors. It needs the CUDA runtime
# and NCCL (both ship with the CUDA toolkit here); with Debian's CPU LibTorch it compiles and links but has
# no CUDA tensors to serve, so pair it with a CUDA LibTorch (Torch_DIR) to use it.
option(LADDER_NCCL "Build the NCCL backend for CUDA tensors" ${LADDER_CUDA})
if(LADDER_NCCL)
  find_package(CUDAToolkit REQUIRED)
  find_path(LADDER_NCCL_INCLUDE nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} ENV NCCL_HOME
            PATH_SUFFIXES include)
  find_library(LADDER_NCCL_LIB nccl HINTS ${CUDAToolkit_LIBRARY_DIR} ${CUDAToolkit_LIBRARY_ROOT}/lib
               ENV NCCL_HOME PATH_SUFFIXES lib lib64)
  if(NOT LADDER_NCCL_INCLUDE OR NOT LADDER_NCCL_LIB)
    message(FATAL_ERROR "LADDER_NCCL=ON but NCCL was not found; set NCCL_HOME")
  endif()
  add_library(ladder::nccl INTERFACE IMPORTED)
  target_include_directories(ladder::nccl INTERFACE ${LADDER_NCCL_INCLUDE})
  target_link_libraries(ladder::nccl INTERFACE ${LADDER_NCCL_LIB} CUDA::cudart)
  message(STATUS "ladder: NCCL backend with ${LADDER_NCCL_LIB}")
endif()

# --- Header and small libraries -------------------------------------------------------------------
find_package(tomlplusplus REQUIRED CONFIG)
find_package(spdlog REQUIRED CONFIG)
find_package(CLI11 REQUIRED CONFIG)
find_package(nlohmann_json REQUIRED CONFIG)
find_package(ZLIB REQUIRED)

find_path(LADDER_SP_INCLUDE sentencepiece_processor.h)
find_library(LADDER_SP_LIB sentencepiece)
find_library(LADDER_SP_TRAIN_LIB sentencepiece_train)
if(NOT LADDER_SP_INCLUDE OR NOT LADDER_SP_LIB OR NOT LADDER_SP_TRAIN_LIB)
  message(FATAL_ERROR "SentencePiece not found: install libsentencepiece-dev (launch/setup.sh does).")
endif()
add_library(ladder::sentencepiece INTERFACE IMPORTED)
target_include_directories(ladder::sentencepiece INTERFACE ${LADDER_SP_INCLUDE})
target_link_libraries(ladder::sentencepiece INTERFACE ${LADDER_SP_TRAIN_LIB} ${LADDER_SP_LIB})

if(LADDER_TESTS)
  find_package(GTest REQUIRED CONFIG)
endif()

# --- Precompiled LibTorch header ------------------------------------------------------------------
# torch/torch.h costs ~20 s per translation unit on this 2-core machine. One object library compiles it
# once; every target that includes LibTorch reuses it (ladder_use_torch_pch).
function(ladder_use_torch_pch target)
  if(LADDER_PCH)
    target_precompile_headers(${target} REUSE_FROM ladder_torch_pch)
  endif()
endfunction()
