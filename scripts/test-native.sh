#!/usr/bin/env bash
# The fused native kernel at the ISA levels users' CPUs have (issue 11). For each x86-64
# level this CPU can run (v2: SSE4.2, v3: AVX2, v4: AVX-512 where it has it), build the
# kernel with lenet's strict flags and run its tests with that build forced
# (LENET_NATIVE_MARCH, LENET_NATIVE=1: no guard); then cross-compile it for aarch64 (NEON)
# with the same flags, with and without OpenMP. The same for the shared-memory gradient
# sum of several processes (shm_reduce.c), the OOD detectors' kernels (knn.c, pixels.c) and
# SGD's step (sgd.c). The unforced build (-march=native) is tested by `make test`. Each
# level has its own cache key, so they share the cache.
set -euo pipefail
python=${1:-.venv/bin/python}

levels=()
if [ "$(uname -m)" = x86_64 ]; then
  levels=(x86-64-v2 x86-64-v3)
  flags=" $(grep -m1 '^flags' /proc/cpuinfo || true) "
  if [[ $flags == *" avx512f "* && $flags == *" avx512bw "* && $flags == *" avx512dq "* \
        && $flags == *" avx512vl "* ]]; then
    levels+=(x86-64-v4)
  fi
fi
for level in "${levels[@]}"; do
  echo "== the kernel at -march=$level"
  LENET_NATIVE_MARCH=$level "$python" -m lenet.native.build
  # (test_bf16.py: no level here has AVX512-BF16, so bf16 must change nothing; the native
  # build, where the CPU has it, is tested against its float64 reference by `make test`)
  LENET_NATIVE=1 LENET_NATIVE_MARCH=$level "$python" -m pytest -q -p no:cacheprovider \
    tests/native/test_native.py tests/native/test_bf16.py
  echo "== the shared-memory gradient sum at -march=$level"
  LENET_NATIVE_MARCH=$level "$python" -m lenet.native.build --name shm_reduce
  LENET_NATIVE_MARCH=$level "$python" -m pytest -q -p no:cacheprovider tests/native/test_shm_reduce.py
  echo "== the k-NN detector's kernel at -march=$level"
  LENET_NATIVE_MARCH=$level "$python" -m lenet.native.build --name knn
  LENET_NATIVE=1 LENET_NATIVE_MARCH=$level "$python" -m pytest -q -p no:cacheprovider \
    tests/native/test_knn_native.py
  echo "== SGD's step at -march=$level"
  LENET_NATIVE_MARCH=$level "$python" -m lenet.native.build --name sgd
  # x86-64-v2 has no FMA: ATen's own kernels without it (DEFAULT) are the floats to match
  aten=()
  if [ "$level" = x86-64-v2 ]; then aten=(ATEN_CPU_CAPABILITY=default); fi
  env "${aten[@]}" LENET_NATIVE_MARCH=$level "$python" -m pytest -q -p no:cacheprovider \
    tests/native/test_sgd.py
  echo "== the pixel statistics' sums at -march=$level"
  LENET_NATIVE_MARCH=$level "$python" -m lenet.native.build --name pixels
  LENET_NATIVE_MARCH=$level "$python" -m pytest -q -p no:cacheprovider tests/native/test_pixels_native.py
done

if command -v aarch64-linux-gnu-gcc >/dev/null 2>&1; then
  echo "== cross-compiling the kernel for aarch64"
  "$python" -m lenet.native.build --cross aarch64-linux-gnu-gcc
  "$python" -m lenet.native.build --name shm_reduce --cross aarch64-linux-gnu-gcc
  "$python" -m lenet.native.build --name knn --cross aarch64-linux-gnu-gcc
  "$python" -m lenet.native.build --name pixels --cross aarch64-linux-gnu-gcc
  "$python" -m lenet.native.build --name sgd --cross aarch64-linux-gnu-gcc
elif [ "${LENET_REQUIRE_CROSS:-0}" = 1 ]; then
  echo "aarch64-linux-gnu-gcc is missing (apt-get install gcc-aarch64-linux-gnu)" >&2
  exit 1
else
  echo "aarch64-linux-gnu-gcc not installed: cross-compiling skipped" \
       "(apt-get install gcc-aarch64-linux-gnu)"
fi
