"""The base layer and the public API: named random streams (the same numbers as before, lanes that never
overlap), the package's error type, and the top-level names."""
import pytest
import torch

import diffaug_fast
from diffaug_fast import streams


def test_streams_keep_the_numbers_runs_were_made_with():
    # the formulas earlier versions wrote inline; shipped results and resumed runs depend on them
    earlier = {("train_step", 7): 3 * 1_000_003 + 7, ("epoch_order", 2): 3 * 7_919 + 2, ("labeled_subset", 0): 3 * 7919 + 17,
               ("eval_noise", 0): 3 + 1, ("eval_timesteps", 0): 3 + 2, ("eval_eps", 4): 3 + 1000 + 4,
               ("tc_timesteps", 0): 3 + 3, ("tc_eps", 0): 3 + 5000, ("ood", 0): 3 + 77, ("certify", 0): 3 + 4242,
               ("corruption", 23): 3 * 1_000_003 + 23, ("denoiser_order", 9): 3 * 1_000_003 + 9}
    for (purpose, index), seed in earlier.items():
        a = torch.randint(0, 2**31, (5,), generator=streams.generator(3, purpose, index))
        b = torch.randint(0, 2**31, (5,), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a, b), purpose


def test_unknown_stream_is_named():
    with pytest.raises(ValueError, match="unknown random stream 'weather'"):
        streams.generator(0, "weather")


@pytest.mark.parametrize("world", [1, 2, 4])
def test_philox_lanes_and_shards_never_overlap(world):
    b, numel, lanes = 8, 784, 3
    spans = []
    for step in range(3):
        for lane in range(lanes):
            for rank in range(world):
                first = rank * b // world
                count = (rank + 1) * b // world - first
                start = streams.batch_offset(step, b, first, numel, lane=lane, lanes=lanes)
                spans.append((start, start + count * numel))
    spans.sort()
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    assert spans[-1][1] - spans[0][0] == 3 * lanes * b * numel  # and they tile the stream without gaps


def test_top_level_api():
    for name in ("DiffAug", "DiffAugEnsemble", "sample", "pretrained", "diffuse", "denoise_epilogue", "guided_step",
                 "dual_fusion", "DiffAugError", "build_info"):
        assert name in diffaug_fast.__all__ and getattr(diffaug_fast, name) is not None, name
    den = diffaug_fast.pretrained("fmnist")
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    out = diffaug_fast.DiffAug(den, seed=0)(x)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_user_errors_share_one_type():
    from diffaug_fast.diffusion.checkpoints import CheckpointError

    assert issubclass(CheckpointError, diffaug_fast.DiffAugError) and issubclass(CheckpointError, ValueError)
