#!/usr/bin/env bash
# Build the C++ kernels with AddressSanitizer + UndefinedBehaviorSanitizer and run the op tests (incl. the
# hypothesis fuzzers) against that build. CPU kernels only. Usage: bash scripts/sanitize.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
B=build-sanitize
DIFFAUG_FAST_CUDA=0 cmake -S . -B "$B" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDIFFAUG_FAST_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v python3)" > "$B.cmake.log"
cmake --build "$B" > "$B.build.log"
# A private copy of the package holding the sanitized _C; the editable install's import hook is dropped there.
rm -rf "$B/pkg" && mkdir -p "$B/pkg"
cp -r diffaug_fast "$B/pkg/" && cp "$B"/_C*.so "$B/pkg/diffaug_fast/"
cat > "$B/pkg/sitecustomize.py" <<'PY'
import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
PY
ROOT="$PWD"
cd "$B"  # not the repository root: there, `import diffaug_fast` would find the unsanitized checkout first
export PYTHONPATH="$ROOT/$B/pkg" LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
python3 -c "import diffaug_fast._C as c; assert '$B/pkg' in c.__file__, c.__file__; print('sanitized', c.__file__)"
T="$ROOT/python_tests/ops"
python3 -m pytest "$T/test_diffuse.py" "$T/test_epilogue.py" "$T/test_guided_step.py" "$T/test_fusion.py" \
  "$T/test_fuzz_ops.py" "$T/test_noise.py" -q -p no:cacheprovider -k "not triton" "$@"
