"""What a classifier sees at each step, from keyed random streams only (streams.py): the same step gives the
same images, crops, timesteps and noise whether the run is fresh, resumed, or split over processes (each
rank takes a contiguous shard of the global batch and its Philox offsets)."""
from __future__ import annotations

import torch

from diffaug_fast import streams
from diffaug_fast.augment import diffuse_and_denoise, partner_timesteps, sample_timesteps
from diffaug_fast.ops import diffuse
from diffaug_fast.train.transforms import augmix, crop_flip, crop_flip_params


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    return torch.randperm(n, generator=streams.generator(seed, "epoch_order", epoch))


class Batches:
    """Batches of one run: ``supervised(step)`` (clean / DiffAug / noisy / DA) and ``semi_supervised(step)``."""

    def __init__(self, config, images, labels, *, denoiser, fast_net, device, rank: int, world: int, t_max: int,
                 labeled: torch.Tensor | None = None):
        self.config, self.images, self.labels = config, images, labels
        self.denoiser, self.fast_net, self.device = denoiser, fast_net, device
        self.rank, self.world, self.t_max, self.labeled = rank, world, t_max, labeled
        self.batch = config.optim.batch_size
        self.steps_per_epoch = len(images) // self.batch
        self.per_image = images[0].numel()

    def _shard(self) -> slice:
        b = self.batch
        return slice(self.rank * b // self.world, (self.rank + 1) * b // self.world)

    def supervised(self, step: int) -> tuple[tuple, torch.Tensor]:
        """This rank's shard of step ``step``: (the classifier's inputs, labels). Inputs: (clean [+ DiffAug]
        images,) in clean mode, (x_t, t) for noisy, (x_t, t, x0_hat) for DA."""
        config, b, shard = self.config, self.batch, self._shard()
        epoch, k = divmod(step, self.steps_per_epoch)
        idx = epoch_order(len(self.images), config.run.seed, epoch)[k * b:(k + 1) * b][shard]
        gen = streams.generator(config.run.seed, "train_step", step)
        crops = crop_flip_params(b, gen)
        ts = sample_timesteps(b, config.diffaug.t_min, self.t_max, gen)
        augmix_seeds = torch.randint(0, 2**62, (b,), generator=gen)
        x = crop_flip(self.images[idx], crops[shard]).to(self.device)
        y = self.labels[idx].to(self.device)
        if config.diffaug.augmix:
            x = augmix(x, augmix_seeds[shard])
        offset = streams.batch_offset(step, b, shard.start, self.per_image)
        if config.model.mode != "clean":  # a classifier of noisy images: t over the whole chain
            t_all = sample_timesteps(b, 0, len(self.denoiser.schedule) - 1, gen)[shard].to(self.device)
            return self.noisy_inputs(x, t_all, offset), y
        if config.diffaug.mode == "off":
            return (x,), y
        x_hat = diffuse_and_denoise(self.denoiser, x, ts[shard], seed=config.run.seed, offset=offset,
                                    net=self.fast_net)
        if config.diffaug.mode == "only":
            return (x_hat,), y
        return (torch.cat([x, x_hat]),), torch.cat([y, y])

    def noisy_inputs(self, x: torch.Tensor, t: torch.Tensor, offset: int) -> tuple:
        """(x_t, t) for a noisy classifier, (x_t, t, x̂0) for a DA classifier; noise at ``offset``. The noisy
        mode sees the same x_t as the DA mode would, without running the denoiser."""
        seed = self.config.run.seed
        if self.config.model.mode == "noisy":
            a, s = self.denoiser.schedule.coefficients(t, device=self.device)
            return diffuse(x, a, s, seed=seed, offset=offset), t
        x_t, x_hat = diffuse_and_denoise(self.denoiser, x, t, seed=seed, net=self.fast_net, offset=offset,
                                         return_noisy=True)
        return x_t, t, x_hat

    def semi_supervised(self, step: int) -> dict:
        """This rank's shard of step ``step``: labeled inputs + labels, and (with the consistency term or PU)
        the unlabeled images at t and at t'. Three Philox lanes: labeled, unlabeled, fresh-ε partners."""
        config, b, shard = self.config, self.batch, self._shard()
        semi, seed = config.semi, config.run.seed
        epoch, k = divmod(step, self.steps_per_epoch)
        gen = streams.generator(seed, "train_step", step)
        last = len(self.denoiser.schedule) - 1
        lab = self.labeled[torch.randint(len(self.labeled), (b,), generator=gen)][shard]
        x = crop_flip(self.images[lab], crop_flip_params(b, gen)[shard]).to(self.device)
        t_lab = sample_timesteps(b, 0, last, gen)[shard].to(self.device)
        y = torch.ones(len(lab), dtype=torch.long) if semi.pu else self.labels[lab]
        lane = lambda i: streams.batch_offset(step, b, shard.start, self.per_image, lane=i, lanes=3)  # noqa: E731
        out = {"labeled": self.noisy_inputs(x, t_lab, lane(0)), "y": y.to(self.device)}
        if not (semi.consistency or semi.pu):
            return out
        unl = epoch_order(len(self.images), seed, epoch)[k * b:(k + 1) * b][shard]
        u = crop_flip(self.images[unl], crop_flip_params(b, gen)[shard]).to(self.device)
        t_u = sample_timesteps(b, 0, last, gen)
        t_pair = partner_timesteps(t_u, semi.tc_radius, last, gen)
        out["unlabeled"] = self.noisy_inputs(u, t_u[shard].to(self.device), lane(1))
        if semi.consistency:
            pair_offset = lane(1) if semi.tc_noise == "same" else lane(2)
            out["pair"] = self.noisy_inputs(u, t_pair[shard].to(self.device), pair_offset)
        return out
