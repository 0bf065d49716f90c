"""Step mode's loader figures (`scripts/bench.py` without --no-loader): the two-view augmentation
pipeline alone with the configured workers, source images per second."""

from __future__ import annotations

import time

from bench_common import sync


def run_loader(datamodule, batches: int, device, device_augment=None) -> float:
    """Source images per second out of the train loader (+ the on-device colour ops, when given),
    after two untimed batches (worker start-up)."""
    loader = datamodule.train_dataloader()
    it = iter(loader)
    n_images = 0
    start = None
    for i in range(batches + 2):
        if i == 2:
            sync(device)
            start = time.perf_counter()
        try:
            views, labels = next(it)
        except StopIteration:
            it = iter(loader)
            views, labels = next(it)
        if device_augment is not None:
            if device_augment.decode:
                views = device_augment.decode_and_crop(views, device)
            views = device_augment([v.to(device, non_blocking=True) for v in views])
        if i >= 2:
            n_images += len(labels)
    sync(device)
    seconds = time.perf_counter() - start
    del it
    return n_images / seconds


def loader_figures(make_config, batches: int, device) -> dict:
    """The loader's figures: source images/s with CPU augmentation, with on-device colour ops and,
    for an image folder, decoding on the device too; `make_config()` gives a fresh step-mode config."""
    from omegaconf import OmegaConf, open_dict

    from selfsup.data.datamodule import SSLDataModule, build_data
    from selfsup.data.gpu_augment import DeviceAugment

    figures = {}
    for name, on_device in (("cpu_augment", False), ("on_device", True)):
        cfg = make_config()
        with open_dict(cfg):
            cfg.augmentation.on_device = on_device
            cfg.data.decode_on_gpu = False
        cfg, datamodule = build_data(cfg)
        OmegaConf.resolve(cfg)
        augment = DeviceAugment(cfg.augmentation) if on_device else None
        figures[f"loader_{name}_images_per_sec"] = run_loader(datamodule, batches, device, augment)
        figures["loader_workers"] = datamodule.num_workers
        if name == "on_device" and hasattr(datamodule.pretrain, "samples"):  # image folder: decode on the device too
            with open_dict(cfg):
                cfg.data.decode_on_gpu = True
            decode_dm = SSLDataModule(cfg.data, cfg.augmentation, devices_per_node=1)  # its own, encoded, datasets
            augment = DeviceAugment(cfg.augmentation, decode=True)
            figures["loader_decode_on_device_images_per_sec"] = run_loader(decode_dm, batches, device, augment)
    return figures
