"""Peak memory of a short training run on an image folder of N and 4N images (96x96 RGB JPEGs), streamed
(this package) and, for comparison, with every image decoded into one float32 tensor first (what
load_image_folder did before streaming). Writes docs/results/streaming/peak_memory.json.

    python benchmarks/streaming_memory.py      # docs/results/streaming/peak_memory.json
"""
import json
import resource
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python_tests" / "data"))
from test_streaming import write_tree  # noqa: E402

RUN = textwrap.dedent("""
    import json, sys
    from diffaug_fast.config import train_config
    from diffaug_fast.train.classifier import train_classifier
    data, out, workers, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    config = train_config("quick", data=data, image_size=96, channels=3, batch_size=32, workers=workers,
                          diffaug="off", de_timesteps=[], compile="off", checkpoint_every=1000)
    kwargs = {}
    if mode == "in_memory":
        from diffaug_fast.data import load_image_folder
        kwargs["data"] = load_image_folder(data, "train", image_size=96, channels=3)
    train_classifier(config, out, progress=False, stop_after=4, evaluate_at_end=False, **kwargs)
    # VmHWM, not getrusage's ru_maxrss: that one keeps the parent's peak across fork + exec
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
    print(json.dumps({"peak_rss_mb": hwm / 1024}))
""")

if __name__ == "__main__":
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for per_class in (250, 1000):
            root = write_tree(Path(tmp) / f"x{per_class}", per_class=per_class, size=(96, 96), seed=per_class)
            for mode, workers in (("streamed", 0), ("streamed", 2), ("in_memory", 0)):
                run = subprocess.run([sys.executable, "-c", RUN, str(root), f"{tmp}/run{per_class}{mode}{workers}",
                                      str(workers), mode], capture_output=True, text=True, check=True)
                row = {"images": 3 * per_class, "train_images": 3 * per_class * 9 // 10, "mode": mode,
                       "workers": workers, **json.loads(run.stdout.strip().splitlines()[-1])}
                print(row, flush=True)
                rows.append(row)
    out = ROOT / "docs" / "results" / "streaming" / "peak_memory.json"
    out.write_text(json.dumps({"setting": "96x96 RGB JPEGs, 3 classes, batch 32, 4 steps, DiffAug off; peak RSS of "
                               "the training process", "rows": rows}, indent=1))
