"""Checkpoint loading: safe formats only, flags in every spelling, and errors that say what differs."""
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from diffaug_fast.diffusion.checkpoints import (CheckpointError, load_guided_diffusion_classifier,
                                                load_guided_diffusion_unet, load_state_dict, parse_flags,
                                                unet_from_flags)

FLAGS = "--image_size 16 --num_channels 32 --num_res_blocks 1 --attention_resolutions 8 --channel_mult 1,2 " \
        "--learn_sigma True --num_head_channels 16 --resblock_updown True --in_channels 1"


def _saved(tmp_path, model, kind):
    path = tmp_path / f"model.{kind}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path)) if kind == "safetensors" else torch.save(state, path)
    return path


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
def test_round_trip_with_cli_and_json_flags(tmp_path, kind):
    model = unet_from_flags(FLAGS)
    torch.nn.init.normal_(model.out[2].weight)
    path = _saved(tmp_path, model, kind)
    for flags in (FLAGS, parse_flags(FLAGS), str(parse_flags(FLAGS)).replace("'", '"').replace("True", "true")):
        loaded = load_guided_diffusion_unet(path, flags)
        x, t = torch.randn(2, 1, 16, 16), torch.tensor([1, 900])
        with torch.no_grad():
            torch.testing.assert_close(loaded(x, t), model(x, t))


def test_classifier_flags_use_guided_diffusions_spelling(tmp_path):
    flags = ("--image_size 16 --classifier_width 32 --classifier_depth 1 --classifier_attention_resolutions 8 "
             "--classifier_pool attention --in_channels 1 --out_channels 10 --channel_mult 1,2 "
             "--num_head_channels 16")
    from diffaug_fast.diffusion.checkpoints import classifier_from_flags

    path = _saved(tmp_path, classifier_from_flags(flags), "pt")
    assert load_guided_diffusion_classifier(path, flags)(torch.zeros(1, 1, 16, 16), torch.tensor([3])).shape == (1, 10)


def test_mismatch_lists_keys_and_flags(tmp_path):
    path = _saved(tmp_path, unet_from_flags(FLAGS), "pt")
    wrong = FLAGS.replace("--learn_sigma True", "--learn_sigma False") + " --class_cond True --num_classes 3"
    with pytest.raises(CheckpointError) as err:
        load_guided_diffusion_unet(path, wrong)
    message = str(err.value)
    assert "missing keys: label_emb.weight" in message
    assert "out.2.weight [2, 32, 3, 3] vs [1, 32, 3, 3]" in message
    assert "class_cond" in message and "learn_sigma" in message


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/diffaug_fast_pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"weight": _Payload()}, f)
    with pytest.raises(CheckpointError, match="refused: loading it would run code"):
        load_state_dict(path)
    assert not os.path.exists("/tmp/diffaug_fast_pwned")


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="'--name value' pairs"):
        parse_flags("--image_size")
