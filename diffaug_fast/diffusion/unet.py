"""UNet and half-UNet ("encoder") classifier whose parameter names, shapes and constructor flags follow
openai/guided-diffusion's ``UNetModel`` / ``EncoderUNetModel`` (and improved-diffusion's UNet), so
their released checkpoints load with ``load_state_dict(strict=True)``. 2-D images only; attention
runs through ``F.scaled_dot_product_attention``.

Module layout (what the checkpoint keys spell): ``time_embed.{0,2}``, ``label_emb``,
``input_blocks.N.K``, ``middle_block.{0,1,2}``, ``output_blocks.N.K``, ``out.*``; a ResBlock holds
``in_layers.{0,2}``, ``emb_layers.1``, ``out_layers.{0,3}``, ``skip_connection``; an attention block
``norm``, ``qkv``, ``proj_out``; resampling convs are ``op`` (down) and ``conv`` (up).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GroupNorm32(nn.GroupNorm):
    """GroupNorm(32) computed in float32 whatever the activation dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos | sin] of (possibly fractional) timesteps, zero-padded to odd dims."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)
        self.use_conv = use_conv

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op = (nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv
                   else nn.AvgPool2d(2))

    def forward(self, x):
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding (additively, or as scale/shift of the norm)."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = nn.Sequential(norm(out_channels), nn.SiLU(), nn.Dropout(dropout),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x, emb):
        if self.updown:  # resample between the norm/activation and the conv
            h = self.h_upd(self.in_layers[:-1](x))
            h = self.in_layers[-1](h)
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + e)
        return self.skip_connection(x) + h


def _attention(qkv: torch.Tensor, heads: int, legacy_order: bool) -> torch.Tensor:
    """qkv [B, 3C, T] -> [B, C, T]. Legacy order: heads outermost ([q k v] per head); else q | k | v."""
    b, width, length = qkv.shape
    ch = width // (3 * heads)
    if legacy_order:
        q, k, v = qkv.reshape(b * heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (t.reshape(b * heads, ch, length) for t in qkv.chunk(3, dim=1))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(b, heads * ch, length)


def _heads(channels: int, num_heads: int, num_head_channels: int) -> int:
    if num_head_channels == -1:
        return num_heads
    if channels % num_head_channels:
        raise ValueError(f"attention width {channels} is not divisible by num_head_channels={num_head_channels}")
    return channels // num_head_channels


class AttentionBlock(nn.Module):
    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1,
                 use_new_attention_order: bool = False):
        super().__init__()
        self.heads = _heads(channels, num_heads, num_head_channels)
        self.legacy_order = not use_new_attention_order
        self.norm = norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        h = self.proj_out(_attention(self.qkv(self.norm(x)), self.heads, self.legacy_order))
        return (x + h).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the mean token attends to all positions."""

    def __init__(self, spatial: int, channels: int, num_head_channels: int, out_channels: int):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(channels, spatial**2 + 1) / channels**0.5)
        self.qkv_proj = nn.Conv1d(channels, 3 * channels, 1)
        self.c_proj = nn.Conv1d(channels, out_channels, 1)
        self.heads = channels // num_head_channels

    def forward(self, x):
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1) + self.positional_embedding.to(x.dtype)
        return self.c_proj(_attention(self.qkv_proj(x), self.heads, legacy_order=False))[:, :, 0]


class TimestepEmbedSequential(nn.Sequential):
    """A Sequential whose ResBlocks also receive the time embedding."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


def _parse_levels(image_size: int, channel_mult: Sequence[float] | str | None) -> tuple[float, ...]:
    if channel_mult in (None, ""):  # guided-diffusion's defaults by resolution
        table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4),
                 32: (1, 2, 2, 2)}
        if image_size not in table:
            raise ValueError(f"no default channel_mult for image_size={image_size}; pass channel_mult")
        return table[image_size]
    if isinstance(channel_mult, str):
        return tuple(float(v) if "." in v else int(v) for v in channel_mult.split(","))
    return tuple(channel_mult)


class _Trunk(nn.Module):
    """Time embedding, input blocks and middle block shared by the UNet and the encoder."""

    def _build_trunk(self, *, image_size, in_channels, model_channels, num_res_blocks, attention_ds, dropout,
                     channel_mult, conv_resample, num_heads, num_head_channels, use_scale_shift_norm,
                     resblock_updown, use_new_attention_order):
        emb_dim = model_channels * 4
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels, ds = [ch], 1
        attn = dict(num_heads=num_heads, num_head_channels=num_head_channels,
                    use_new_attention_order=use_new_attention_order)
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                out = int(mult * model_channels)
                layers = [ResBlock(ch, emb_dim, dropout, out, use_scale_shift_norm)]
                ch = out
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, **attn))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = (ResBlock(ch, emb_dim, dropout, ch, use_scale_shift_norm, down=True) if resblock_updown
                        else Downsample(ch, conv_resample, ch))
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            ResBlock(ch, emb_dim, dropout, use_scale_shift_norm=use_scale_shift_norm),
            AttentionBlock(ch, **attn),
            ResBlock(ch, emb_dim, dropout, use_scale_shift_norm=use_scale_shift_norm))
        return ch, ds, skip_channels, emb_dim

    def _torso_to_fp16(self, modules):
        # convolutions only, as guided-diffusion's convert_to_fp16: the time-embedding projections stay float32
        for module in modules:
            for layer in module.modules():
                if isinstance(layer, (nn.Conv1d, nn.Conv2d)):
                    layer.half()


def _attention_ds(image_size: int, attention_resolutions) -> set[int]:
    """guided-diffusion's flag lists resolutions ("32,16,8"); the model wants downsample rates."""
    if isinstance(attention_resolutions, int):
        attention_resolutions = [attention_resolutions]
    elif isinstance(attention_resolutions, str):
        attention_resolutions = [int(r) for r in attention_resolutions.split(",") if r]
    return {image_size // int(r) for r in attention_resolutions}


class UNetModel(_Trunk):
    """guided-diffusion's UNet (same flags as its ``create_model``). ``forward(x, timesteps, y=None)``."""

    def __init__(self, image_size: int, in_channels: int = 3, num_channels: int = 128, out_channels: int | None = None,
                 num_res_blocks: int = 2, attention_resolutions="16,8", dropout: float = 0.0, channel_mult=None,
                 learn_sigma: bool = False, class_cond: bool = False, num_classes: int = 1000,
                 conv_resample: bool = True, num_heads: int = 4, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = True, resblock_updown: bool = False,
                 use_new_attention_order: bool = False, use_fp16: bool = False):
        super().__init__()
        levels = _parse_levels(image_size, channel_mult)
        attention_ds = _attention_ds(image_size, attention_resolutions)
        out_channels = out_channels or (in_channels * (2 if learn_sigma else 1))
        self.image_size, self.in_channels, self.out_channels = image_size, in_channels, out_channels
        self.size_multiple = 2 ** (len(levels) - 1)  # fully convolutional: any H, W divisible by this
        self.num_classes = num_classes if class_cond else None
        ch, ds, skips, emb_dim = self._build_trunk(
            image_size=image_size, in_channels=in_channels, model_channels=num_channels,
            num_res_blocks=num_res_blocks, attention_ds=attention_ds, dropout=dropout, channel_mult=levels,
            conv_resample=conv_resample, num_heads=num_heads, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown,
            use_new_attention_order=use_new_attention_order)
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(levels))):
            for i in range(num_res_blocks + 1):
                out = int(num_channels * mult)
                layers = [ResBlock(ch + skips.pop(), emb_dim, dropout, out, use_scale_shift_norm)]
                ch = out
                if ds in attention_ds:
                    layers.append(AttentionBlock(ch, heads_up, num_head_channels, use_new_attention_order))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, emb_dim, dropout, ch, use_scale_shift_norm, up=True)
                                  if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        first = int(levels[0] * num_channels)
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(first, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)
        self.dtype = torch.float16 if use_fp16 else torch.float32
        if use_fp16:
            self._torso_to_fp16([self.input_blocks, self.middle_block, self.output_blocks])

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """``y``: class labels [B], or class weights [B, num_classes] (their mix of the class embeddings)."""
        if (y is None) != (self.num_classes is None):
            raise ValueError("UNetModel: pass labels y if and only if the model is class-conditional")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + (y.to(emb.dtype) @ self.label_emb.weight if y.is_floating_point() else self.label_emb(y))
        h, skips = x.to(self.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.to(x.dtype))


class EncoderUNetModel(_Trunk):
    """guided-diffusion's half-UNet classifier (its ``create_classifier`` flags). ``forward(x, timesteps)``."""

    def __init__(self, image_size: int, in_channels: int = 3, model_channels: int = 128, out_channels: int = 1000,
                 num_res_blocks: int = 2, attention_resolutions="32,16,8", dropout: float = 0.0, channel_mult=None,
                 conv_resample: bool = True, use_fp16: bool = False, num_heads: int = 1,
                 num_head_channels: int = 64, use_scale_shift_norm: bool = True, resblock_updown: bool = True,
                 use_new_attention_order: bool = False, pool: str = "attention"):
        super().__init__()
        levels = _parse_levels(image_size, channel_mult)
        ch, ds, _, _ = self._build_trunk(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels,
            num_res_blocks=num_res_blocks, attention_ds=_attention_ds(image_size, attention_resolutions),
            dropout=dropout, channel_mult=levels, conv_resample=conv_resample, num_heads=num_heads,
            num_head_channels=num_head_channels, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order)
        self.pool = pool
        if pool == "adaptive":
            self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Conv2d(ch, out_channels, 1),
                                     nn.Flatten())
            nn.init.zeros_(self.out[3].weight)
            nn.init.zeros_(self.out[3].bias)
        elif pool == "attention":
            if num_head_channels == -1:
                raise ValueError("EncoderUNetModel: pool='attention' needs num_head_channels")
            self.out = nn.Sequential(norm(ch), nn.SiLU(),
                                     AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels))
        else:
            raise ValueError(f"EncoderUNetModel: argument 'pool' is {pool!r}; expected 'adaptive' or 'attention'")
        self.dtype = torch.float16 if use_fp16 else torch.float32
        if use_fp16:
            self._torso_to_fp16([self.input_blocks, self.middle_block])

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h = x.to(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
        h = self.middle_block(h, emb)
        return self.out(h.to(x.dtype))
