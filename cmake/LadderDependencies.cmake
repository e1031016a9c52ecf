# Finds every third-party dependency once and exposes it as a target:
#   ladder::torch   LibTorch 2.15 from PyPI's torch wheel (launch/setup.sh installs it in LADDER_VENV)
#   ladder::nccl    the wheel's NCCL and CUDA runtime (the Communicator's CUDA backend)
#   MPI::MPI_CXX    Open MPI
#   ladder::hdf5    parallel HDF5 (the Open MPI flavour)
#   tomlplusplus::tomlplusplus, spdlog::spdlog, CLI11::CLI11, nlohmann_json::nlohmann_json
#   ladder::sentencepiece (processor + trainer)
#   GTest::gtest, GTest::gtest_main (tests only)

# --- LibTorch -------------------------------------------------------------------------------------
# One LibTorch: PyPI's torch==2.15.0 wheel (CUDA 13 build; it runs on machines without a GPU too),
# installed by launch/setup.sh into a virtual environment outside the clone, LADDER_VENV. Torch_DIR
# may point at another copy of the same wheel. Its headers need C++20.
set(LADDER_TORCH_VERSION 2.15.0)
set(LADDER_VENV "$ENV{HOME}/.cache/ladder/torch-${LADDER_TORCH_VERSION}" CACHE PATH
    "Virtual environment holding the pinned torch wheel (launch/setup.sh creates it)")
if(NOT Torch_DIR)
  file(GLOB _ladder_torch_dirs "${LADDER_VENV}/lib/python3*/site-packages/torch/share/cmake/Torch")
  if(NOT _ladder_torch_dirs)
    message(FATAL_ERROR
      "LibTorch ${LADDER_TORCH_VERSION} not found in ${LADDER_VENV}. Run launch/setup.sh (it installs "
      "the pinned torch wheel there), or pass -DTorch_DIR=<site-packages>/torch/share/cmake/Torch.")
  endif()
  list(GET _ladder_torch_dirs 0 _ladder_torch_dir)
  set(Torch_DIR "${_ladder_torch_dir}" CACHE PATH "TorchConfig.cmake of the pinned wheel" FORCE)
endif()
get_filename_component(LADDER_TORCH_PREFIX "${Torch_DIR}/../../.." ABSOLUTE)  # site-packages/torch
get_filename_component(LADDER_SITE_PACKAGES "${LADDER_TORCH_PREFIX}/.." ABSOLUTE)
set(LADDER_NVIDIA "${LADDER_SITE_PACKAGES}/nvidia")  # the wheel's CUDA runtime, cuDNN, NCCL
# Caffe2Config.cmake beside it, not a system copy.
set(Caffe2_DIR "${LADDER_TORCH_PREFIX}/share/cmake/Caffe2" CACHE PATH "" FORCE)
list(PREPEND CMAKE_PREFIX_PATH "${LADDER_TORCH_PREFIX}")

# The wheel's CUDA runtime (13.2) and NCCL (2.30) are what libtorch_cuda was built against; the
# toolkit's older libcudart/libnccl lack symbols it needs, so the toolkit is never used. Defining
# torch::cudart as the wheel's runtime makes torch's CUDA set-up (cuda.cmake) stand down, with its
# toolkit search and its GPU-architecture try_run that fails on a machine without a GPU.
# The CUDA runtime headers for the NCCL backend: the wheel's, where it ships them whole (2.15 does),
# else the toolkit's (declarations only: the library linked is still the wheel's).
find_path(LADDER_CUDA_INCLUDE crt/host_defines.h
          PATHS ${LADDER_NVIDIA}/cu13/include $ENV{CUDA_HOME}/include /usr/local/cuda/include
          NO_DEFAULT_PATH REQUIRED)
find_library(LADDER_CUDART_LIB NAMES libcudart.so.13 PATHS ${LADDER_NVIDIA}/cu13/lib NO_DEFAULT_PATH
             REQUIRED)
add_library(torch::cudart INTERFACE IMPORTED)
set_property(TARGET torch::cudart PROPERTY INTERFACE_LINK_LIBRARIES ${LADDER_CUDART_LIB})
find_package(Torch REQUIRED CONFIG)
# For checks on a machine that has another LibTorch and no registry to install the pinned one (a lent
# GPU machine whose image carries its own PyTorch): -DLADDER_ALLOW_OTHER_TORCH=ON builds against it.
option(LADDER_ALLOW_OTHER_TORCH "Build against a LibTorch other than the pinned version" OFF)
if(NOT Torch_VERSION VERSION_EQUAL LADDER_TORCH_VERSION)
  if(LADDER_ALLOW_OTHER_TORCH)
    message(WARNING "LibTorch ${Torch_VERSION} at ${Torch_DIR}, not the pinned ${LADDER_TORCH_VERSION}")
  else()
    message(FATAL_ERROR "LibTorch ${Torch_VERSION} at ${Torch_DIR}; ladder pins ${LADDER_TORCH_VERSION}")
  endif()
endif()
foreach(_lib ${TORCH_LIBRARY} ${C10_LIBRARY})
  if(NOT _lib MATCHES "^${LADDER_TORCH_PREFIX}")
    message(FATAL_ERROR "LibTorch library ${_lib} is not from ${LADDER_TORCH_PREFIX}")
  endif()
endforeach()

# The wheel's library folders (CUDA runtime, cuDNN, NCCL) go in the run path, so that one copy of each
# library is loaded per process, the one LibTorch expects.
file(GLOB LADDER_NVIDIA_LIB_DIRS LIST_DIRECTORIES true "${LADDER_NVIDIA}/*/lib")
add_library(ladder::torch INTERFACE IMPORTED)
target_link_libraries(ladder::torch INTERFACE ${TORCH_LIBRARIES})
# c10/cuda's headers (CUDA streams, the caching allocator) include the CUDA runtime's.
target_include_directories(ladder::torch INTERFACE ${TORCH_INCLUDE_DIRS} ${LADDER_CUDA_INCLUDE})
foreach(_dir ${LADDER_NVIDIA_LIB_DIRS})
  target_link_options(ladder::torch INTERFACE "LINKER:-rpath,${_dir}")
endforeach()
# TORCH_CXX_FLAGS carries -D_GLIBCXX_USE_CXX11_ABI=1, which must match the wheel.
separate_arguments(_ladder_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
target_compile_options(ladder::torch INTERFACE ${_ladder_torch_flags})
message(STATUS "ladder: LibTorch ${Torch_VERSION} from ${LADDER_TORCH_PREFIX}")

# torch's include folder carries fmt 12 headers; Debian's spdlog is built against Debian's fmt 9. A
# folder of our own in which `fmt` is Debian's goes before torch's, so that spdlog (and we) compile
# against the fmt it links. fmt versions live in distinct inline namespaces (fmt::v9, fmt::v12):
# the two never clash inside LibTorch's libraries.
find_path(LADDER_SYSTEM_FMT_INCLUDE fmt/core.h PATHS /usr/include NO_DEFAULT_PATH REQUIRED)
set(LADDER_FMT_SHIM "${CMAKE_BINARY_DIR}/fmt_shim")
file(MAKE_DIRECTORY "${LADDER_FMT_SHIM}")
file(CREATE_LINK "${LADDER_SYSTEM_FMT_INCLUDE}/fmt" "${LADDER_FMT_SHIM}/fmt" SYMBOLIC)
include_directories(BEFORE SYSTEM "${LADDER_FMT_SHIM}")

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

# --- NCCL ----------------------------------------------------------------------------------------
# The Communicator's backend for CUDA tensors, always built: the wheel's NCCL (headers and library),
# the same libnccl.so.2 that libtorch_cuda loads, with the wheel's CUDA runtime.
find_path(LADDER_NCCL_INCLUDE nccl.h PATHS ${LADDER_NVIDIA}/nccl/include NO_DEFAULT_PATH REQUIRED)
find_library(LADDER_NCCL_LIB NAMES libnccl.so.2 nccl PATHS ${LADDER_NVIDIA}/nccl/lib NO_DEFAULT_PATH
             REQUIRED)
add_library(ladder::nccl INTERFACE IMPORTED)
target_include_directories(ladder::nccl INTERFACE ${LADDER_NCCL_INCLUDE})
target_link_libraries(ladder::nccl INTERFACE ${LADDER_NCCL_LIB} ${LADDER_CUDART_LIB})
message(STATUS "ladder: NCCL backend with ${LADDER_NCCL_LIB}")

# The Python side (benchmarks against PyTorch, tests that read outputs with h5py) uses the same
# virtual environment.
get_filename_component(_ladder_venv_root "${LADDER_SITE_PACKAGES}/../../.." ABSOLUTE)
set(LADDER_PYTHON "${_ladder_venv_root}/bin/python3" CACHE FILEPATH "Python with torch, h5py, numpy")

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

# zstd-compressed inputs of `ladder prep` (*.jsonl.zst, the form FineWeb, DCLM and the Pile ship in).
find_path(LADDER_ZSTD_INCLUDE zstd.h)
find_library(LADDER_ZSTD_LIB zstd)
if(NOT LADDER_ZSTD_INCLUDE OR NOT LADDER_ZSTD_LIB)
  message(FATAL_ERROR "zstd not found: install libzstd-dev (launch/setup.sh does).")
endif()
add_library(ladder::zstd INTERFACE IMPORTED)
target_include_directories(ladder::zstd INTERFACE ${LADDER_ZSTD_INCLUDE})
target_link_libraries(ladder::zstd INTERFACE ${LADDER_ZSTD_LIB})

# Parquet inputs of `ladder prep` (data/parquet_module.h): the Arrow and Parquet C++ libraries and
# headers that PyPI's pyarrow wheel ships, in LADDER_VENV (launch/setup.sh installs it). Optional:
# without pyarrow the Parquet module is not built and reading a .parquet file says so.
file(GLOB _ladder_pyarrow_dirs "${LADDER_VENV}/lib/python3*/site-packages/pyarrow")
set(LADDER_PARQUET FALSE)
if(_ladder_pyarrow_dirs)
  list(GET _ladder_pyarrow_dirs 0 LADDER_PYARROW_DIR)
  file(GLOB LADDER_PARQUET_LIB "${LADDER_PYARROW_DIR}/libparquet.so.[0-9]*")
  file(GLOB LADDER_ARROW_LIB "${LADDER_PYARROW_DIR}/libarrow.so.[0-9]*")
  if(LADDER_PARQUET_LIB AND LADDER_ARROW_LIB AND EXISTS "${LADDER_PYARROW_DIR}/include/parquet/arrow/reader.h")
    list(GET LADDER_PARQUET_LIB 0 LADDER_PARQUET_LIB)
    list(GET LADDER_ARROW_LIB 0 LADDER_ARROW_LIB)
    set(LADDER_PARQUET TRUE)
    add_library(ladder::parquet INTERFACE IMPORTED)
    target_include_directories(ladder::parquet INTERFACE "${LADDER_PYARROW_DIR}/include")
    target_link_libraries(ladder::parquet INTERFACE "${LADDER_PARQUET_LIB}" "${LADDER_ARROW_LIB}")
    message(STATUS "Parquet: Arrow C++ from ${LADDER_PYARROW_DIR}")
  endif()
endif()
if(NOT LADDER_PARQUET)
  message(STATUS "Parquet: pyarrow not found in ${LADDER_VENV}; .parquet inputs unsupported "
                 "(launch/setup.sh installs it)")
endif()

# Hugging Face tokenizer.json files (data/hf_tokenizer.h): Oniguruma, the regex engine `tokenizers`
# itself runs its pre-tokenizer patterns on, and utf8proc for the Unicode normalization forms.
find_path(LADDER_ONIG_INCLUDE oniguruma.h)
find_library(LADDER_ONIG_LIB onig)
find_path(LADDER_UTF8PROC_INCLUDE utf8proc.h)
find_library(LADDER_UTF8PROC_LIB utf8proc)
if(NOT LADDER_ONIG_INCLUDE OR NOT LADDER_ONIG_LIB OR NOT LADDER_UTF8PROC_INCLUDE OR NOT LADDER_UTF8PROC_LIB)
  message(FATAL_ERROR "Oniguruma or utf8proc not found: install libonig-dev and libutf8proc-dev "
                      "(launch/setup.sh does).")
endif()
add_library(ladder::hf_tokenizer_deps INTERFACE IMPORTED)
target_include_directories(ladder::hf_tokenizer_deps INTERFACE ${LADDER_ONIG_INCLUDE}
                           ${LADDER_UTF8PROC_INCLUDE})
target_link_libraries(ladder::hf_tokenizer_deps INTERFACE ${LADDER_ONIG_LIB} ${LADDER_UTF8PROC_LIB})

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
