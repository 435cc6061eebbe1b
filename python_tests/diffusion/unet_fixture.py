"""Shared by the UNet compatibility test and the script that recorded its reference outputs."""
import zlib

import torch

# Small configurations covering every structural flag; (ours, theirs) constructor arguments.
CONFIGS = {
    "unet_updown_scaleshift_legacy": dict(
        kind="unet", ours=dict(image_size=16, in_channels=3, num_channels=32, num_res_blocks=1,
                               attention_resolutions="8", channel_mult=(1, 2), learn_sigma=True, class_cond=True,
                               num_classes=3, num_head_channels=16, resblock_updown=True,
                               use_scale_shift_norm=True),
        theirs=dict(image_size=16, in_channels=3, model_channels=32, out_channels=6, num_res_blocks=1,
                    attention_resolutions=(2,), channel_mult=(1, 2), num_classes=3, num_head_channels=16,
                    resblock_updown=True, use_scale_shift_norm=True)),
    "unet_plain_new_order": dict(
        kind="unet", ours=dict(image_size=16, in_channels=1, num_channels=32, num_res_blocks=2,
                               attention_resolutions="16,8", channel_mult=(1, 2, 2), num_heads=2,
                               use_scale_shift_norm=False, use_new_attention_order=True),
        theirs=dict(image_size=16, in_channels=1, model_channels=32, out_channels=1, num_res_blocks=2,
                    attention_resolutions=(1, 2), channel_mult=(1, 2, 2), num_heads=2,
                    use_scale_shift_norm=False, use_new_attention_order=True)),
    "encoder_attention_pool": dict(
        kind="encoder", ours=dict(image_size=16, in_channels=3, model_channels=32, out_channels=5,
                                  num_res_blocks=1, attention_resolutions="8,4", channel_mult=(1, 2, 2),
                                  num_head_channels=16, pool="attention"),
        theirs=dict(image_size=16, in_channels=3, model_channels=32, out_channels=5, num_res_blocks=1,
                    attention_resolutions=(2, 4), channel_mult=(1, 2, 2), num_head_channels=16,
                    use_scale_shift_norm=True, resblock_updown=True, pool="attention")),
    "encoder_adaptive_pool": dict(
        kind="encoder", ours=dict(image_size=16, in_channels=1, model_channels=32, out_channels=10,
                                  num_res_blocks=1, attention_resolutions="8", channel_mult=(1, 2),
                                  num_head_channels=32, resblock_updown=False, pool="adaptive"),
        theirs=dict(image_size=16, in_channels=1, model_channels=32, out_channels=10, num_res_blocks=1,
                    attention_resolutions=(2,), channel_mult=(1, 2), num_head_channels=32,
                    use_scale_shift_norm=True, resblock_updown=False, pool="adaptive")),
}


def deterministic_state(state: dict) -> dict:
    """Weights that depend only on each key's name and shape (the zero-initialised layers included)."""
    out = {}
    for key, value in state.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        w = torch.randn(value.shape, generator=g) * 0.2
        out[key] = (1 + w) if key.endswith("norm.weight") or ".0.weight" in key and value.dim() == 1 else w
    return out


def inputs(config):
    g = torch.Generator().manual_seed(0)
    ours = config["ours"]
    x = torch.randn(2, ours["in_channels"], ours["image_size"], ours["image_size"], generator=g)
    t = torch.tensor([3, 741])
    y = torch.tensor([0, 2]) if ours.get("class_cond") else None
    return x, t, y


# The same check against improved-diffusion's UNet (its own constructor arguments).
IMPROVED = {
    "improved_unet_class_cond": dict(
        kind="unet", ours=dict(image_size=16, in_channels=3, num_channels=32, num_res_blocks=2,
                               attention_resolutions="8", channel_mult=(1, 2), learn_sigma=True, class_cond=True,
                               num_classes=4, num_heads=2, use_scale_shift_norm=True),
        theirs=dict(in_channels=3, model_channels=32, out_channels=6, num_res_blocks=2, attention_resolutions=(2,),
                    channel_mult=(1, 2), num_classes=4, num_heads=2, use_scale_shift_norm=True)),
}

# Flags of released checkpoints (from guided-diffusion's README); only names and shapes are recorded.
RELEASED = {
    "256x256_diffusion_uncond": dict(
        kind="unet", ours=dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                               learn_sigma=True, num_head_channels=64, resblock_updown=True,
                               use_scale_shift_norm=True, use_fp16=True),
        theirs=dict(image_size=256, num_channels=256, num_res_blocks=2, attention_resolutions="32,16,8",
                    learn_sigma=True, num_head_channels=64, resblock_updown=True, use_scale_shift_norm=True,
                    use_fp16=True, class_cond=False, channel_mult="", num_heads=4, num_heads_upsample=-1,
                    dropout=0.0, use_checkpoint=False, use_new_attention_order=False)),
    "64x64_classifier": dict(
        kind="encoder", ours=dict(image_size=64, model_channels=128, num_res_blocks=4,
                                  attention_resolutions="32,16,8", num_head_channels=64, resblock_updown=True,
                                  use_scale_shift_norm=True, pool="attention", use_fp16=True),
        theirs=dict(image_size=64, classifier_use_fp16=True, classifier_width=128, classifier_depth=4,
                    classifier_attention_resolutions="32,16,8", classifier_use_scale_shift_norm=True,
                    classifier_resblock_updown=True, classifier_pool="attention")),
}
