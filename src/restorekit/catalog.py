"""The builtin parts, as lazy ``"module:attr"`` targets.

Listing parts reads this table and imports nothing heavy; a part's module is
imported only when the part is built. Each kind's section is owned by the
subpackage that implements it.
"""

BUILTINS: dict[str, dict[str, str]] = {
    "backbone": {
        "timm": "restorekit.backbones.timm_vit:TimmBackbone",
        "dinov2": "restorekit.backbones.timm_vit:DINOv2Backbone",
        "clip": "restorekit.backbones.clip:CLIPBackbone",
    },
    "fusion": {
        "msf": "restorekit.fusion.msf:MultiLayerSemanticFusion",
        "concat": "restorekit.fusion.concat:ConcatFusion",
    },
    "adapter": {
        "dino_restore": "restorekit.adapters.dino_restore:DinoRestoreAdapter",
    },
    "body": {
        "restormer": "restorekit.bodies.restormer:Restormer",
        "promptir": "restorekit.bodies.promptir:PromptIR",
        "adair": "restorekit.bodies.adair:AdaIR",
        "moce_ir": "restorekit.bodies.moce_ir:MoCEIR",
        "moce_ir_s": "restorekit.bodies.moce_ir:MoCEIRS",
    },
    "model": {
        "dino_ir": "restorekit.models.dino_ir:DinoIR",
        # Every body is a model too (registry.INCLUDED_KINDS), without a second registration.
    },
    "loss": {
        "l1": "restorekit.losses.pixel:L1Loss",
        "mse": "restorekit.losses.pixel:MSELoss",
        "charbonnier": "restorekit.losses.pixel:CharbonnierLoss",
        "weighted_sum": "restorekit.losses.pixel:WeightedSumLoss",
        "dpc": "restorekit.losses.dpc:DPCLoss",
        "fft": "restorekit.losses.frequency:FFTLoss",
    },
    "metric": {
        "psnr": "restorekit.metrics:psnr",
        "ssim": "restorekit.metrics:ssim",
        "psnr_y": "restorekit.metrics:psnr_y",
        "ssim_y": "restorekit.metrics:ssim_y",
    },
    "optimizer": {
        "adamw": "restorekit.engine.optim:adamw",
        "adam": "restorekit.engine.optim:adam",
        "sgd": "restorekit.engine.optim:sgd",
    },
    "schedule": {
        "warmup_cosine": "restorekit.engine.schedule:warmup_cosine",
        "constant": "restorekit.engine.schedule:constant",
        "multistep": "restorekit.engine.schedule:multistep",
    },
    "logger": {
        "jsonl": "restorekit.engine.loggers:JsonlLogger",
        "tensorboard": "restorekit.engine.loggers:TensorBoardLogger",
    },
    "callback": {
        "early_stopping": "restorekit.engine.callbacks:EarlyStopping",
    },
    "degradation": {
        "identity": "restorekit.data.degradations:Identity",
        "noise": "restorekit.data.degradations:GaussianNoise",
        "rain": "restorekit.data.degradations:RainStreaks",
        "haze": "restorekit.data.degradations:Haze",
        "motion_blur": "restorekit.data.degradations:MotionBlur",
        "defocus_blur": "restorekit.data.degradations:DefocusBlur",
        "low_light": "restorekit.data.degradations:LowLight",
        "jpeg": "restorekit.data.degradations:JPEG",
    },
    "dataset": {
        "paired_folder": "restorekit.data.datasets:PairedFolderDataset",
        "synthetic": "restorekit.data.datasets:SyntheticDataset",
        "samples": "restorekit.data.samples:SamplesDataset",
        "denoise": "restorekit.data.protocol:DenoiseDataset",
        "derain": "restorekit.data.protocol:DerainDataset",
        "dehaze": "restorekit.data.protocol:DehazeDataset",
        "deblur": "restorekit.data.protocol:DeblurDataset",
        "lowlight": "restorekit.data.protocol:LowLightDataset",
    },
}
