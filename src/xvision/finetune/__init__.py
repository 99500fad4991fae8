"""End-to-end fine-tuning of a backbone (``xvision fit --recipe finetune``)."""

from xvision.finetune.config import AugmentConfig, FineTuneConfig

__all__ = ["AugmentConfig", "FineTuneConfig", "finetune"]


def __getattr__(name: str):  # the trainer imports torch: load it on first use
    if name == "finetune":
        from xvision.finetune.trainer import finetune

        return finetune
    raise AttributeError(name)
