"""IDDM / improved-/guided-diffusion / DiT flag names accepted as aliases of difforge's flags.

Kept in one table so the CLI, its help and the README's alias table cannot drift apart.
"""

ALIASES = {
    # data
    "--data": ["--dataset_path", "--data_dir", "--data-path"],
    "--image-size": ["--image_size"],
    "--num-classes": ["--num_classes"],
    "--num-workers": ["--num_workers"],
    # run folder
    "--run": ["--run-name", "--run_name"],  # --run-name also under torchrun, whose --run-path makes --run ambiguous
    "--runs-dir": ["--result_path", "--results-dir"],
    # network / diffusion
    "--network": ["--network_name"],
    "--noise-schedule": ["--noise_schedule"],
    "--diffusion-steps": ["--diffusion_steps"],
    "--learn-sigma": ["--learn_sigma"],
    "--use-kl": ["--use_kl"],
    "--rescale-learned-sigmas": ["--rescale_learned_sigmas"],
    "--schedule-sampler": ["--schedule_sampler"],
    "--p2-gamma": ["--p2_gamma"],
    "--p2-k": ["--p2_k"],
    "--snr-gamma": ["--snr_gamma"],
    "--base-channels": ["--num_channels"],
    "--num-res-blocks": ["--num_res_blocks"],
    "--attention-resolutions": ["--attention_resolutions"],
    # optimisation
    "--batch-size": ["--batch_size"],
    "--lr-schedule": ["--lr_func", "--lr_anneal"],
    "--optimizer": ["--optim"],
    "--ema-decay": ["--ema_rate"],
    "--grad-accum": ["--microbatch_accum"],
    "--seed": ["--global-seed"],
    "--weight-decay": ["--weight_decay"],
    # checkpoints / previews
    "--save-every-epochs": ["--save_model_interval_epochs"],
    "--save-start": ["--start_model_interval"],
    "--save-every": ["--save_interval"],
    "--checkpoint-every": ["--ckpt-every"],
    "--log-every": ["--log_interval"],
    "--preview-num": ["--num_vis"],
    "--preview-sampler": ["--sample"],  # IDDM's train.py --sample: the sampler of its previews
    "--image-format": ["--image_format"],
    "--pretrain": ["--pretrain_path"],
    # sampling
    "--sampler": ["--sample"],
    "--cfg": ["--cfg_scale"],
    "--num": ["--num_images", "--num_samples"],
    "--class": ["--class_name"],
    "--model": ["--weight_path", "--model_path"],
    "--out": ["--generate_name"],
    "--steps": ["--timestep_respacing", "--sample_steps"],
    "--clip-x0": ["--clip_denoised"],
    # VAE and latent diffusion
    "--train": ["--train_dataset_path"],
    "--val": ["--val_dataset_path"],
    "--latent-channels": ["--latent_channels"],
    "--vae": ["--autoencoder_ckpt"],
    # classifier guidance (guided-diffusion)
    "--classifier": ["--classifier_path"],
    "--classifier-scale": ["--classifier_scale"],
    "--classifier-width": ["--classifier_width"],
    "--classifier-depth": ["--classifier_depth"],
    "--classifier-attention-resolutions": ["--classifier_attention_resolutions"],
    "--max-steps": ["--iterations"],
}


def option_strings(flag: str) -> list:
    """``flag`` followed by its IDDM / improved-diffusion aliases."""
    return [flag, *ALIASES.get(flag, [])]


def alias_table_markdown() -> str:
    rows = ["| difforge | IDDM / improved-/guided-diffusion / DiT |", "| --- | --- |"]
    rows += [f"| `{k}` | {', '.join(f'`{a}`' for a in v)} |" for k, v in ALIASES.items()]
    return "\n".join(rows)
