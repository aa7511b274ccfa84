"""How the training harness drives SFD (``iqa train sfd``): SR shards in, two exports out.

* Batches: each shard row's HR patch is decoded on the worker's device and its LR input made there from
  the row's recorded recipe (``bicubic``, or the second-order ``realworld`` pipeline with the row's seed
  and config: ``iqa shards --kind sr --realworld-fraction F``), see
  :func:`iqa_plugin.data.materialize.materialize_sr_batch`.
* Validation (rank 0): PSNR and SSIM on the Y channel (BasicSR's convention, pyiqa's weight-free metrics)
  of the generator that is exported (the EMA copy when ``ema_decay`` is set) on central crops of the
  held-out photos, bicubic upscaling next to it (:class:`iqa_plugin.training.sr_validate.SRValidation`).
* Export: ``<name>-disc.safetensors`` + card (kind ``discriminator``: Feat-D + LPP, layout in
  :func:`iqa_plugin.training.export.sfd_discriminator_card`, plus ``tg_d.text_features``, the LPP's text
  features, so the metric needs no text tower) and, over the same file, ``<name>-iqa.yaml``: the SFD-IQA
  metric card (``pyiqa.create_metric('<name>-iqa')`` after ``iqa models add`` / ``--register-to``), then
  ``<name>.safetensors`` + card (kind ``sr``: ``create_sr_model(name)``, ``iqa upscale --model name``).
  The SR card is written last: its existence marks the run finished.
"""

from __future__ import annotations

from typing import Any

from ray_jobs.train.recipes import ExportWriter, RecipeSpec

DISCRIMINATOR_SUFFIX = "-disc"
IQA_SUFFIX = "-iqa"


def _build(config: Any, steps: int, device: str) -> Any:
    from iqa_plugin.training.sfd import SFDTrainer

    return SFDTrainer(config, device=device)


def _materialize(rows: dict, device: str) -> dict[str, Any]:
    from iqa_plugin.data.materialize import materialize_sr_batch

    hr, lr = materialize_sr_batch(rows, device)
    return {"hr": hr, "lr": lr}


def _validator(config: Any, images: list[str], crop: int, seed: int) -> Any:
    from iqa_plugin.data.images import load_image
    from iqa_plugin.training.sr_validate import SRValidation

    check = SRValidation([load_image(p) for p in images], crop=crop, scale=config.scale)

    def validate(recipe: Any) -> dict[str, float]:
        generator = recipe.export_generator()
        return check(lambda lr: generator(lr.to(recipe.device)))

    return validate


def _export(recipe: Any, name: str, provenance: dict[str, Any], write: ExportWriter) -> str:
    from iqa_plugin.training.export import sfd_discriminator_card, sr_card
    from iqa_plugin.training.sfd_iqa_export import sfd_iqa_card, sfd_iqa_options, sfd_iqa_tensors

    disc_name, iqa_name = name + DISCRIMINATOR_SUFFIX, name + IQA_SUFFIX
    disc_options = recipe.discriminator_options()
    iqa_description = (f"SFD-IQA metric over the discriminators trained by `iqa train sfd` (run card {name!r}; NOT "
                       "the paper's weights): mean of Feat-D's real map and TG-D's real-prompt probability.")
    _, disc_card = write(disc_name, sfd_iqa_tensors(recipe),
                         lambda uri, sha, size: sfd_discriminator_card(disc_name, uri, sha, size, disc_options, provenance),
                         {iqa_name: lambda uri, sha, size: sfd_iqa_card(iqa_name, uri, sha, size,
                                                                        sfd_iqa_options(recipe), iqa_description)})
    gen_options = recipe.generator_options()
    provenance = {**provenance, "discriminators": disc_card}
    return write(name, recipe.generator_state(),
                 lambda uri, sha, size: sr_card(name, uri, sha, size, gen_options, provenance))[1]


def _progress(item: dict[str, Any]) -> str:
    if item.get("phase", 0.0) < 0.5:
        line = f"[warm-up] L1 {item['loss_pixel']:.4f} lr {item['lr_g']:.2e}"
    else:
        line = (f"[gan] L1 {item['loss_pixel']:.4f} perc {item['loss_perceptual']:.4f} adv feat "
                f"{item['loss_g_feat']:.4f} tg {item['loss_g_tg']:.4f} | D feat {item['loss_d_feat']:.3f} "
                f"(real {item['d_feat_real']:.2f} fake {item['d_feat_fake']:.2f}) tg {item['loss_d_tg']:.3f}")
    if "val_psnr" in item:
        line += (f" | val PSNR-Y {item['val_psnr']:.2f} dB (bicubic {item['val_psnr_bicubic']:.2f}) "
                 f"SSIM-Y {item['val_ssim']:.4f} (bicubic {item['val_ssim_bicubic']:.4f})")
    return line


def _summary(metrics: dict[str, Any]) -> str:
    if not isinstance(metrics.get("val_psnr"), float):
        return ""
    return (f", held-out PSNR-Y {metrics['val_psnr']:.2f} dB vs bicubic {metrics['val_psnr_bicubic']:.2f} dB "
            f"(margin {metrics['val_psnr_margin']:+.2f} dB), SSIM-Y {metrics['val_ssim']:.4f} vs "
            f"{metrics['val_ssim_bicubic']:.4f}")


def _check_shards(manifest: dict[str, Any], config: Any) -> None:
    shards = manifest.get("config", {})
    if manifest.get("kind") != "sr":
        raise ValueError(f"these shards are of kind {manifest.get('kind')!r}; SFD trains on SR shards: "
                         "build them with `iqa shards --kind sr`")
    if shards.get("scale", config.scale) != config.scale:
        raise ValueError(f"the shards were made for x{shards['scale']} but recipe.scale is {config.scale}: set "
                         f"`recipe: {{scale: {shards['scale']}}}` or build x{config.scale} shards (iqa shards --scale)")
    if config.degradation == "realworld" and not shards.get("realworld_fraction", 1.0):
        raise ValueError("recipe.degradation is 'realworld' but every sample of these shards is bicubic (their "
                         "realworld_fraction is 0): the job takes each LR recipe from the shard rows; rebuild "
                         "them with `iqa shards --kind sr --realworld-fraction 1`")


def _resolve(recipe: dict[str, Any]) -> dict[str, Any]:
    """``perceptual_backbone: auto`` made concrete here (VGG19 when its file is on this machine, else
    CLIP): each worker resolving it alone could pick different losses on a cluster of unequal caches."""
    from iqa_plugin.losses.pixel import resolve_backbone

    return {**recipe, "perceptual_backbone": resolve_backbone(recipe.get("perceptual_backbone", "auto"))}


def spec() -> RecipeSpec:
    from iqa_plugin.training.sfd import SFDConfig

    return RecipeSpec(
        shards_kind="sr",
        config_class=SFDConfig,
        build=_build,
        materialize=_materialize,
        excluded=lambda config: (),
        validator=_validator,
        export=_export,
        progress=_progress,
        summary=_summary,
        front_door=("iqa_plugin.create_sr_model('{name}') or iqa upscale --model {name}; the SFD-IQA metric "
                    "pyiqa.create_metric('{name}-iqa') after `iqa models add <export>/{name}-iqa.yaml`"),
        check_shards=_check_shards,
        resolve=_resolve,
    )
