"""Training a backbone: end to end on whole films (``xvision fit --recipe finetune``) or as a lesion detector
on full-resolution crops (``--recipe detect``, the default ``best``)."""

from xvision.finetune.config import AugmentConfig, DetectorConfig, FineTuneConfig

__all__ = ["AugmentConfig", "DetectorConfig", "FineTuneConfig", "finetune", "train_detector"]


def __getattr__(name: str):  # the trainers import torch: load them on first use
    if name == "finetune":
        from xvision.finetune.trainer import finetune

        return finetune
    if name == "train_detector":
        from xvision.finetune.detector import train_detector

        return train_detector
    raise AttributeError(name)
