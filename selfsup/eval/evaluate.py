"""A backbone's downstream evaluation, as the eval config asks for it: frozen, augmentation-free
features of the data module's evaluation splits, then kNN and the offline linear probe on them, the
standard linear protocol and fine-tuning on the images; with eval.label_fraction, on a class-balanced
part of the labelled split. Used after pretraining (and for the kNN at init) and by eval.py."""

from __future__ import annotations

import torch
from torch.utils.data import Subset

from selfsup.eval.features import extract_features
from selfsup.eval.finetune import finetune
from selfsup.eval.knn import knn_accuracy
from selfsup.eval.linear import linear_probe
from selfsup.eval.linear_standard import linear_standard
from selfsup.eval.subsets import class_balanced_indices, dataset_labels


def embed_evaluation_splits(backbone, datamodule, device, bf16: bool) -> tuple[torch.Tensor, ...]:
    """(train_x, train_y, val_x, val_y): frozen, augmentation-free features of `evaluation_loaders()`, in order."""
    backbone.to(device)
    train_loader, val_loader = datamodule.evaluation_loaders()
    train_x, train_y = extract_features(backbone, train_loader, device, bf16, "embedding train split")
    if val_loader is train_loader:  # unlabelled images: one sample stands for both
        return train_x, train_y, train_x, train_y
    val_x, val_y = extract_features(backbone, val_loader, device, bf16, "embedding val split")
    return train_x, train_y, val_x, val_y


def evaluate_backbone(
    backbone,
    datamodule,
    eval_cfg,
    device,
    bf16: bool,
    linear: bool = True,
    features: tuple[torch.Tensor, ...] | None = None,
) -> dict:
    """kNN (and the offline linear probe) on frozen, augmentation-free features (embedded here unless
    `features` = (train_x, train_y, val_x, val_y) are given); the standard linear protocol
    (eval=linear_standard) and fine-tuning (eval=finetune) on the images. With eval.label_fraction the
    linear evaluations and fine-tuning see a class-balanced, seeded part of the labelled split; kNN all of it."""
    backbone.to(device)
    if features is None:
        features = embed_evaluation_splits(backbone, datamodule, device, bf16)
    train_x, train_y, val_x, val_y = (t.to(device) for t in features)
    num_classes = datamodule.cfg.num_classes
    scores = {}
    if eval_cfg.knn is not None:
        for k in (1, 5):
            scores[f"knn_top{k}"] = knn_accuracy(
                train_x, train_y, val_x, val_y, num_classes, eval_cfg.knn.k, eval_cfg.knn.temperature, top_k=k
            )
    if not linear:
        return scores
    fraction, labelled = eval_cfg.get("label_fraction"), None
    if fraction is not None:
        scores["label_fraction"] = fraction
        labelled_index = class_balanced_indices(dataset_labels(datamodule.labelled), fraction)
        labelled = Subset(datamodule.labelled, labelled_index.tolist())
        train_x, train_y = train_x[labelled_index.to(device)], train_y[labelled_index.to(device)]
        scores["labelled_images"] = len(labelled_index)
    if eval_cfg.linear is not None:
        scores.update(linear_probe(train_x, train_y, val_x, val_y, num_classes, **eval_cfg.linear))
    if eval_cfg.get("linear_standard") is not None:
        scores.update(linear_standard(backbone, datamodule, eval_cfg.linear_standard, device, bf16, labelled=labelled))
    if eval_cfg.get("finetune") is not None:
        scores.update(finetune(backbone, datamodule, eval_cfg.finetune, device, bf16, labelled=labelled))
    return scores
