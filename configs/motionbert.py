"""MotionBERT-sized STRIDE (paper size, for a GPU): 512/512, depth 5, 8 heads, clip 243."""

from configs import cpu


def get_config(arg=None):
    config = cpu.get_config(arg)
    config.model.update(dim_feat=512, dim_rep=512, depth=5, num_heads=8, mlp_ratio=2.0,
                        maxlen=243, residual=False)  # exactly MotionBERT's DSTformer
    config.pretrain.clip_stride = 81        # MotionBERT recipe: clip 243, stride 81
    config.pretrain.batch_size = 64         # per device; MotionBERT's 64 in total on N
    # devices: --config.pretrain.batch_size=$((64 / N))
    config.pretrain.fsdp = True             # params + AdamW state split over the devices
    config.pretrain.lr = 5e-4               # AdamW, weight decay 0.01
    config.pretrain.num_steps = 60000
    config.pretrain.loss = dict(mpjpe=1.0, n_mpjpe=0.0, velocity=20.0, limb_var=0.0)
    return config
