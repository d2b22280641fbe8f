"""CPU-sized STRIDE: dim 128 / rep 256 / depth 3 prior, trained and aligned on 2 CPU cores.

Variants: ``configs/cpu.py:runlocal`` is a tiny model for smoke tests;
``configs/cpu.py:ttt=<preset>`` picks a test-time-training preset of ``TTT_PRESETS``
(``default``, ``full``, ``paper``, ``prior``, ``quick``; docs/speed.md compares them).
"""

import ml_collections

from stride_jax.config_util import parse_arg, with_overrides

# Test-time-training presets: overrides of the ``ttt`` section below.
TTT_PRESETS = {
    "default": {},
    # 30 epochs on targets smoothed over 15 frames, the fine-tuned prediction everywhere
    # (the default until 2026-12-05): about 3.5x the default's time.
    "full": dict(epochs=30, lr=1e-4, schedule="exponential", warmup_epochs=0,
                 target_smoothing=15, smoothing_candidates=(), gap_output="ttt",
                 infill="linear", output_blend=0.0, adam_b1=0.9, interp_weight=0.3,
                 loss=dict(limb_var=200.0)),  # merged into the default's loss weights
    # The official STRIDE recipe: raw targets, the four losses with velocity, lr 2e-4,
    # in-filled frames as full-weight targets.
    "paper": dict(epochs=30, lr=2e-4, lr_decay=0.99, schedule="exponential", warmup_epochs=0,
                  adam_b1=0.9,
                  target_smoothing=0, smoothing_candidates=(), interp_weight=1.0,
                  infill="linear", output_blend=0.0,
                  gap_target="interp", gap_output="ttt",
                  loss=dict(mpjpe=1.0, n_mpjpe=0.5, velocity=20.0, limb_var=200.0)),
    # The prior alone: no fine-tuning (seconds instead of minutes on CPU).
    "prior": dict(epochs=0),
    # The prior's prediction blended halfway with the smoothed detections, no fine-tuning:
    # within 1 mm of the default on validation (all frames) at 1/19 of its time, worse on
    # the test split's slow motion (docs/speed.md).
    "quick": dict(epochs=0, output_blend=0.5),
}


def get_config(arg=None):
    arg = parse_arg(arg, runlocal=False, ttt="default")
    if arg.ttt not in TTT_PRESETS:
        raise ValueError(f"ttt={arg.ttt!r}: choose a preset of {sorted(TTT_PRESETS)}")
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.fps = 30.0

    config.model = dict(dim_feat=128, dim_rep=256, depth=3, num_heads=8, mlp_ratio=2.0,
                        maxlen=243, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0,
                        residual=True, dtype="float32", dim_in=3)
    # residual=True: output = input + correction (see stride_jax/model.py); a 2-core CPU
    # budget trains this to beat interpolation, the plain seq2seq head needs far longer.
    # dim_in=4: a 4th input channel says which joints were detected (1) or in-filled /
    # hidden / padding (0) (stride_jax/model_input.py); 3 = poses only (MotionBERT import).

    # Pretraining (BERT-style reconstruction of corrupted real mocap).
    config.pretrain = ml_collections.ConfigDict()
    config.pretrain.clip_len = 243          # frames per training clip
    config.pretrain.clip_stride = 27        # frames between clip starts in one epoch
    config.pretrain.batch_size = 8          # per device: global batch = 8 x devices
    config.pretrain.fsdp = False            # True: shard params/opt state over devices
    config.pretrain.num_steps = 6000
    config.pretrain.lr = 5e-4
    config.pretrain.weight_decay = 0.01
    config.pretrain.warmup_steps = 200
    config.pretrain.grad_clip = 1.0
    config.pretrain.speed_range = (0.8, 1.25)  # random playback-speed factor
    config.pretrain.mirror_prob = 0.5
    config.pretrain.bone_scale_std = 0.05   # relative std of per-bone length scaling
    config.pretrain.pitch_max_deg = 15.0    # random camera elevation
    config.pretrain.reverse_prob = 0.0      # play a clip backwards
    config.pretrain.mix_prob = 0.0          # lower body of a clip + upper body of another
    config.pretrain.spin_prob = 0.0         # whole body turning about the pelvis over time
    config.pretrain.spin_turns_per_s = 1.0  # its largest rate (turns per second, at 30 fps)
    config.pretrain.log_every_steps = 50
    config.pretrain.eval_every_steps = 500
    config.pretrain.checkpoint_every_steps = 500
    config.pretrain.keep_checkpoints = 3
    config.pretrain.loss = dict(mpjpe=1.0, n_mpjpe=0.5, velocity=20.0, limb_var=0.0)
    # hidden_weight: loss weight of hidden/in-filled joints (visible ones 1; the velocity and
    # limb terms weigh a pair of entries by the product of their weights).
    config.pretrain.hidden_weight = 1.0
    # init_from: a prior directory (e.g. stride_jax/assets/prior_cpu) whose params start a
    # fresh run (3 -> 4 input channels widened with a zero row); ignored when the workdir
    # has a checkpoint to resume (the log says which one was used).
    config.pretrain.init_from = ""
    # Corruption of the clean clip (see stride_jax/corrupt.py: corrupt_for_pretraining).
    # Occlusion pattern per clip: with protocol_prob the evaluation protocol (config.simulator
    # occ_span_s hidden per occ_window_s), with gap_prob repeated whole-frame gaps of gap_s
    # seconds hiding a gap_duty fraction, with visible_prob no hidden frame, else random
    # spans covering frame_mask_ratio.  Joint masks, noise, scale errors, outliers, depth
    # shifts and left/right swaps apply to all;
    # noise_level (lo, hi): per-clip factor on the noise, scale and depth errors.
    config.pretrain.corrupt = dict(joint_mask_ratio=0.05, frame_mask_ratio=0.4, span_min=5,
                                   span_max=60, noise_std=0.02, scale_std=0.03,
                                   outlier_prob=0.005, outlier_std=0.15,
                                   gap_prob=0.0, protocol_prob=0.0, gap_s=(0.5, 2.0),
                                   gap_duty=(0.25, 0.6), depth_std=0.0, swap_prob=0.0,
                                   noise_level=(1.0, 1.0), visible_prob=0.0)

    # Test-time alignment: the paper's four losses on pseudo-labels (detections, gaps
    # in-filled), with our additions marked; values chosen on the validation split, both
    # views (docs/evaluate.md "Tuning TTT on validation"; docs/speed.md for the time).
    config.ttt = ml_collections.ConfigDict()
    # the pseudo-labels' in-fill of undetected frames: "linear" (the paper's) or "rotation"
    # (ours: a turning body turns on through the gap; stride_jax/rotation_infill.py)
    config.ttt.infill = "rotation"
    config.ttt.window = 243                 # frames per window (<= model.maxlen)
    config.ttt.stride = 81                  # frames between window starts
    config.ttt.epochs = 6                   # passes over a video's windows (= Adam steps)
    config.ttt.lr = 1e-4                    # AdamW peak learning rate
    config.ttt.weight_decay = 0.01
    config.ttt.adam_b1 = 0.5                # AdamW's first-moment decay (b2 0.999, eps 1e-8)
    config.ttt.lr_decay = 0.99              # lr multiplied by this after every epoch
    config.ttt.schedule = "exponential"     # or "cosine": warm-up, then cosine to 0
    config.ttt.warmup_epochs = 0            # linear warm-up epochs of the cosine schedule
    # loss weights; velocity 0: the velocity term fits the detections' jitter
    config.ttt.loss = dict(mpjpe=1.0, n_mpjpe=0.5, velocity=0.0, limb_var=50.0)
    config.ttt.flip_average = False         # average with the left-right flipped prediction
    config.ttt.reverse_average = False      # average with the time-reversed prediction
    config.ttt.interp_weight = 0.1          # loss weight of undetected (in-filled) frames
    config.ttt.gap_target = "auto"          # their pseudo-labels: "interp", "prior" (the
    # prior's own in-fill before TTT, ours; needs dim_in 4) or "auto" (prior if dim_in is 4)
    config.ttt.gap_output = "prior"         # undetected joints' output: "ttt" (the paper's)
    # or "prior" (ours: the prior's in-fill from before TTT, which TTT only drifts from)
    config.ttt.gap_ramp = 5                 # frames to fade between the two ("prior" only)
    config.ttt.target_smoothing = 0         # one Savitzky-Golay window on the targets (0: raw)
    # ours: per window of frames the window of these (0 = raw) whose smoothed detections lie
    # closest to the prior's prediction (needs target_smoothing = 0)
    config.ttt.smoothing_candidates = (0, 5, 9, 15)
    # ours: output on detected joints = (1 - b) x prediction + b x their smoothed detections
    config.ttt.output_blend = 0.0
    config.ttt.mask_ratio = 0.0             # >0: masked TTT (hide input spans; ours)
    config.ttt.mask_span = (5, 30)          # lengths of the hidden spans (frames)
    config.ttt.unmasked_weight = 1.0        # loss weight of frames not hidden (masked TTT)
    config.ttt.adapt_blocks = 0             # >0: only the top n block pairs + head adapt
    config.ttt.length_buckets = (81, 162, 243)  # window widths for videos shorter than window
    config.ttt.max_batch = 0                # videos per compiled call (0: auto, see aligner)
    config.ttt.vmap_width = 0               # of those, vmapped side by side (0: 1 on CPU, all else)
    config.ttt.max_memory_gb = 0.0          # memory budget per call (0: the device's)

    # Estimator / occlusion simulator for evaluation (stride_jax/corrupt.py: simulate_estimator).
    config.simulator = dict(occ_window_s=3.2, occ_span_s=1.6, jitter_std=0.02, depth_std=0.03,
                            scale_std=0.03, swap_prob=0.01, outlier_prob=0.005,
                            outlier_std=0.15)

    if arg.runlocal:
        config.model.update(dim_feat=16, dim_rep=16, depth=1, num_heads=2, maxlen=81)
        config.pretrain.update(clip_len=27, clip_stride=27, batch_size=2, num_steps=4,
                               warmup_steps=1, log_every_steps=1, eval_every_steps=2,
                               checkpoint_every_steps=2)
        config.ttt.update(window=27, stride=9, epochs=2)
    # the preset last, so a named preset is honoured in full (runlocal,ttt=prior: 0 epochs)
    config.ttt = with_overrides(config.ttt, TTT_PRESETS[arg.ttt])
    return config
