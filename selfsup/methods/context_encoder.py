"""Context encoder (Pathak et al. 2016): hide a region of the image, encode the rest with the backbone,
decode the whole image with up-convolutions and score the hidden region and the visible rim around it
(L2, the rim weighted 10x), optionally plus an adversarial term from a critic trained against it on that
region (manual optimisation), the critic at a tenth of the generator's LR as in the reference."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from selfsup.data.batch_ops import denormalize
from selfsup.data.pretext import apply_mask, make_mask
from selfsup.errors import UserError
from selfsup.losses.context_encoder import ContextEncoderLoss
from selfsup.methods.base import StepOutput
from selfsup.methods.pretext_base import PretextMethod
from selfsup.models.decoders import PatchDiscriminator, UpConvDecoder
from selfsup.optim import build_optimizer, build_scheduler, parameter_groups, scaled_lr

MASKS = ("central", "random_block", "random_region")


class ContextEncoder(PretextMethod):
    losses = (ContextEncoderLoss,)
    separately_optimized = ("discriminator",)

    def __init__(self, cfg):
        super().__init__(cfg)
        method, resolution = cfg.method, cfg.data.resolution
        self.decoder = UpConvDecoder(self.feature_dim, 3, resolution, **method.decoder)
        # The hole is filled with the dataset mean; the loader normalises by (x - mean) / std, so in
        # the space the images live in here the mean is 0 in every channel.
        self.register_buffer("fill", torch.zeros(3), persistent=False)
        self.adversarial = bool(self.loss_fn.adversarial)
        if self.adversarial:
            self.automatic_optimization = False
            critic = method.discriminator
            self._critic_box = self._central_region_box(resolution) if method.mask.kind == "central" else None
            critic_size = resolution if self._critic_box is None else self._critic_box[1] - self._critic_box[0]
            self.discriminator = PatchDiscriminator(3, critic_size, critic.width, critic.max_width)
        self._critic_inputs: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def check_config(cls, cfg, world_size: int) -> None:
        super().check_config(cfg, world_size)
        mask, resolution = cfg.method.mask, cfg.data.resolution
        if mask.kind not in MASKS:
            raise UserError(f"method.mask.kind={mask.kind} is not a mask: use {' | '.join(MASKS)}")
        if not 0.0 < mask.area < 1.0:
            raise UserError(
                f"method.mask.area={mask.area} must be in (0, 1), the fraction of the image the mask "
                "hides (the paper: 0.25)"
            )
        side = round((mask.area * resolution * resolution) ** 0.5)
        if mask.kind in ("central", "random_block") and not 1 <= side <= resolution:
            raise UserError(
                f"a {mask.kind} mask of method.mask.area={mask.area} (side {side}px) does not fit the "
                f"{resolution}px image: lower method.mask.area or raise data.resolution"
            )
        if mask.kind == "random_region" and mask.block_size is not None and not 1 <= mask.block_size <= resolution:
            raise UserError(
                f"method.mask.block_size={mask.block_size} is larger than the {resolution}px image: "
                f"use 1..{resolution} or null"
            )
        if not cfg.loss.adversarial:
            return
        if cfg.trainer.accumulate_grad_batches != 1 or cfg.trainer.gradient_clip_val:
            raise UserError(
                "the adversarial context encoder optimises manually (two optimizers): leave "
                "trainer.accumulate_grad_batches=1 and trainer.gradient_clip_val=null, or set "
                "loss.adversarial=false"
            )
        strategy = cfg.strategy.strategy
        if world_size > 1 and isinstance(strategy, str) and "find_unused_parameters_true" not in strategy:
            spawn = "_spawn" if "spawn" in strategy else ""
            raise UserError(
                f"the adversarial context encoder steps the encoder/decoder and the critic in turn, so each "
                f"backward leaves the other's parameters unused, which strategy.strategy={strategy} refuses: set "
                f"strategy.strategy=ddp{spawn}_find_unused_parameters_true, or loss.adversarial=false"
            )

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        mask_cfg = self.cfg.method.mask
        batch, _, height, width = x.shape
        return make_mask(mask_cfg.kind, batch, height, width, x.device, mask_cfg.area, mask_cfg.block_size)

    def _central_region_box(self, resolution: int) -> tuple[int, int]:
        """[start, stop) of the square the decoder redraws around the central mask (the hole and the
        loss's overlap rim): what the critic judges, as the reference's netD judges the predicted centre."""
        region = self.loss_fn.pixel_weights(self._mask(torch.zeros(1, 3, resolution, resolution)))[0, 0] > 0
        rows = region.any(dim=1).nonzero().flatten()
        return int(rows[0]), int(rows[-1]) + 1

    def _critic_view(self, images: torch.Tensor) -> torch.Tensor:
        if self._critic_box is None or images.shape[-1] != self.cfg.data.resolution:
            return images
        start, stop = self._critic_box
        return images[..., start:stop, start:stop]

    def _inpaint(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(masked input, decoder output at the input's size)."""
        masked = apply_mask(x, mask, self.fill)
        pred = self.decoder(self.backbone(self._memory_format(masked)))
        if pred.shape[-2:] != x.shape[-2:]:  # crops at another size than data.resolution
            pred = F.interpolate(pred, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return masked, pred

    def training_loss(self, views: list[torch.Tensor]) -> StepOutput:
        x = views[0]
        mask = self._mask(x)
        _, pred = self._inpaint(x, mask)
        reconstruction = self.loss_fn(pred, x, mask)
        loss, logs = reconstruction, {"reconstruction_loss": reconstruction.detach()}
        if self.adversarial:
            # The critic judges the region the decoder redraws (hole + rim), the rest is given context;
            # with the central mask it sees that region alone, as the reference's netD sees the centre.
            redrawn = self.loss_fn.pixel_weights(mask) > 0
            fake = self._critic_view(torch.where(redrawn, pred.to(x.dtype), x))
            loss, adversarial = self.loss_fn.generator_loss(reconstruction, self.discriminator(fake))
            logs["adversarial_loss"] = adversarial.detach()
            self._critic_inputs = (self._critic_view(x).detach(), fake.detach())
        return StepOutput(loss=loss, features=self.full_image_features(x), logs=logs)

    # --- adversarial case: manual optimisation, generator step then critic step ------------------
    def training_step(self, batch, batch_idx):
        if self.automatic_optimization:
            return super().training_step(batch, batch_idx)
        opt_main, opt_critic = self.optimizers()
        self.toggle_optimizer(opt_main)  # the critic's parameters take no gradient from the generator loss
        total = super().training_step(batch, batch_idx)  # the base: loss + online probe, logging
        if total is None:  # a non-finite loss skipped (on_nonfinite=skip): no step for either network
            self.untoggle_optimizer(opt_main)
            self._critic_inputs = None
            return None
        opt_main.zero_grad(set_to_none=True)
        self.manual_backward(total)
        opt_main.step()
        self.untoggle_optimizer(opt_main)

        real, fake = self._critic_inputs
        self._critic_inputs = None
        self.toggle_optimizer(opt_critic)
        critic_loss = self.loss_fn.discriminator_loss(self.discriminator(real), self.discriminator(fake))
        opt_critic.zero_grad(set_to_none=True)
        self.manual_backward(critic_loss)
        # Through the strategy rather than opt_critic.step(): each LightningOptimizer.step() counts as a
        # global step in manual optimisation (Lightning issue #17958), which would halve max_steps.
        self.trainer.strategy.optimizer_step(opt_critic.optimizer, closure=lambda: None)
        self.untoggle_optimizer(opt_critic)
        for scheduler in self.lr_schedulers():
            scheduler.step()
        self.log("train/discriminator_loss", critic_loss.detach())
        return total.detach()

    def configure_optimizers(self):
        main = super().configure_optimizers()  # backbone + decoder + online probe, the run's LR schedule
        if not self.adversarial:
            return main
        cfg, trainer = self.cfg.method.discriminator.optimizer, self.trainer
        groups = parameter_groups(self.discriminator, cfg.weight_decay, cfg.exclude_bias_and_norm)
        global_batch = self.cfg.data.batch_size * trainer.world_size
        critic_opt = build_optimizer(cfg, groups, scaled_lr(cfg, global_batch))
        total_steps = trainer.estimated_stepping_batches
        steps_per_epoch = max(1, total_steps // max(1, trainer.max_epochs))
        critic_schedule = build_scheduler(self.cfg.scheduler, critic_opt, total_steps, steps_per_epoch)
        return (
            [main["optimizer"], critic_opt],
            [main["lr_scheduler"], {"scheduler": critic_schedule, "interval": "step"}],
        )

    # --- image grid ------------------------------------------------------------------------------
    def image_rows(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = self._mask(images)
        masked, pred = self._inpaint(images, mask)
        inpainted = torch.where(mask.bool(), pred.to(images.dtype), images)
        mean, std = self.cfg.data.mean, self.cfg.data.std
        return {
            "input": denormalize(images, mean, std),
            "masked": denormalize(masked, mean, std),
            "reconstruction": denormalize(inpainted, mean, std),
        }
