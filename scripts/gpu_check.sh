#!/usr/bin/env bash
# Device check on a lent GPU machine (its own python3/torch): build the extension with the CUDA kernels for
# Hopper, run the op tests on every backend (CPU, CUDA, Triton) and the op benchmarks; logs and JSON go to
# $OUT (or ./gpu_out). Stages have their own time limits so a slow one still leaves the others' files.
#   usage: bash scripts/gpu_check.sh [build|tests|bench|models|loader|augmix|commands|precision|paper|study]...   (default: build tests bench)
# Fashion-MNIST is read from $DIFFAUG_FAST_FASHION_MNIST, else gpu_data/fashion-mnist (carry it: the machine has no
# dataset package); the precision benchmark needs guided-diffusion in benchmarks/third_party/ (carry it too).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} DIFFAUG_FAST_CUDA_ARCHS=${DIFFAUG_FAST_CUDA_ARCHS:-90}
export CMAKE_BUILD_PARALLEL_LEVEL=16 MAX_JOBS=16
export DIFFAUG_FAST_FASHION_MNIST=${DIFFAUG_FAST_FASHION_MNIST:-$PWD/gpu_data/fashion-mnist}
stages=${*:-build tests bench}
# a run the limit cut returns its checkpoint in 15 MB parts ($OUT brings back 16 MB a file); a finished one needs none
checkpoint_back() { [ -f "$1/metrics.json" ] || { [ -f "$1/checkpoint.pt" ] && split -b 15M "$1/checkpoint.pt" "$OUT/paper-ckpt-"; }; }
for stage in $stages; do
  start=$(date +%s)
  case $stage in
    build)
      { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; python3 -c "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__)"; } > "$OUT/machine.txt" 2>&1
      timeout 90 python3 -m pip install -q --no-build-isolation --no-deps -e . > "$OUT/build.log" 2>&1
      python3 -c "import diffaug_fast, json; print(json.dumps(diffaug_fast.build_info(), indent=1, default=str))" >> "$OUT/build.log" 2>&1
      ;;
    tests)
      timeout ${TESTS_S:-120} python3 -m pytest -q python_tests/ops python_tests/diffusion/test_guided_ddim_reference.py \
        -p no:cacheprovider -m "not slow" -k "${TESTS_K:-cuda or triton}" \
        --deselect python_tests/ops/test_layout.py::test_compiled_op_checks_the_column_count > "$OUT/tests-ops.log" 2>&1 ;;
    probe)  # seen once: a segfault when the C++ op raises inside torch 2.11's custom-op autograd path (CPU tensors)
      timeout 30 python3 -X faulthandler -m pytest -q -p no:cacheprovider \
        python_tests/ops/test_layout.py::test_compiled_op_checks_the_column_count > "$OUT/probe.log" 2>&1 ;;
    bench)
      timeout ${BENCH_S:-60} python3 -m pytest -q benchmarks/test_bench_ops.py -k "cuda or triton or fused" \
        --benchmark-json "$OUT/ops-h.json" > "$OUT/bench-ops.log" 2>&1 ;;
    models)
      timeout 240 python3 -m pytest -q benchmarks/test_bench_models.py --benchmark-json "$OUT/models-h.json" > "$OUT/bench-models.log" 2>&1 ;;
    loader)
      timeout ${LOADER_S:-130} python3 -m pytest -q benchmarks/test_bench_loader.py --benchmark-json "$OUT/loader-h.json" > "$OUT/bench-loader.log" 2>&1 ;;
    commands)  # sample / eval with --device cuda against the same command on the CPU (needs Fashion-MNIST)
      timeout ${COMMANDS_S:-300} python3 -m pytest -q -p no:cacheprovider python_tests/cli/test_devices.py \
        > "$OUT/tests-commands.log" 2>&1 ;;
    augmix)  # the batched AugMix on the GPU: equal to the CPU's pixels, and its speed beside torchvision per image
      timeout ${AUGMIX_S:-90} python3 -m pytest -q -p no:cacheprovider python_tests/train/test_augmix.py -k cuda \
        > "$OUT/tests-augmix.log" 2>&1
      timeout ${AUGMIX_S:-90} python3 -m pytest -q benchmarks/test_bench_augmix.py --benchmark-json "$OUT/augmix-h.json" \
        > "$OUT/bench-augmix.log" 2>&1 ;;
    precision)  # PRECISION_K selects rows (pytest -k): compiling every row takes minutes on a fresh machine
      timeout ${PRECISION_S:-240} python3 -m pytest -q benchmarks/test_bench_precision.py -k "${PRECISION_K:-not nothing}" \
        --benchmark-json "$OUT/precision-h.json" > "$OUT/bench-precision.log" 2>&1 ;;
    paper)  # `--preset paper` (WRN-16-4, 30 epochs; PAPER_DIFFAUG=off for its baseline): alone on an H200 ~45 steps/s,
      # ~6 min with the evaluation. The run stays in $RUNS_DIR (8 files come back); its text returns as a tgz, and a
      # run cut by the limit returns its checkpoint in 15 MB parts (`cat paper-ckpt-* > DIR/checkpoint.pt`, then
      # `diffaug-fast train --out DIR --resume --device cpu` continues it anywhere)
      R=${RUNS_DIR:-/tmp/gpu_runs}; P="$R/paper-${PAPER_DIFFAUG:-on}"; mkdir -p "$R"
      timeout -k 30 ${PAPER_S:-480} python3 -m diffaug_fast.cli train --preset paper --diffaug ${PAPER_DIFFAUG:-on} \
        --device cuda --out "$P" > "$R/paper.log" 2>&1
      tar czf "$OUT/paper.tgz" --exclude='checkpoint.pt*' -C "$R" "$(basename "$P")" paper.log
      checkpoint_back "$P" ;;
    study)  # a declared study on the GPU (STUDY=main_job by default, its optional evaluations too, e.g. main_job's
      # certification at n = 1 000, 3.3 CPU hours a run): `diffaug-fast study run` with --jobs 3 (a 28x28 run leaves
      # the GPU mostly idle), then its report; the runs stay in $RUNS_DIR, their text and the report come back as a tgz.
      # Back here: untar, then `diffaug-fast study report experiments/$STUDY.toml --runs <untarred runs>`.
      R=${RUNS_DIR:-/tmp/gpu_runs}; mkdir -p "$R"
      timeout ${STUDY_S:-500} python3 -m diffaug_fast.cli study run "experiments/${STUDY:-main_job}.toml" --jobs ${JOBS:-3} \
        --optional ${OPTIONAL:-all} --runs "$R/runs" --results "$R/results" -- --device cuda > "$OUT/study.log" 2>&1
      python3 -m diffaug_fast.cli study report "experiments/${STUDY:-main_job}.toml" --runs "$R/runs" \
        --results "$R/results" >> "$OUT/study.log" 2>&1
      tar czf "$OUT/study.tgz" --exclude='checkpoint.pt*' -C "$R" . ;;
  esac
  echo "stage $stage: rc=$? $(( $(date +%s) - start )) s" | tee -a "$OUT/stages.txt"
done
for f in "$OUT"/*.log; do echo "== $f"; tail -n 3 "$f"; done
