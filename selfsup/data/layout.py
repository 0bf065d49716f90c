"""The on-disk layout of the image-folder datasets, torch-free: selfsup/checks/data.py checks data.root
against it before torch loads, selfsup/data/datasets.py when it builds the dataset."""

FOLDER_DATASETS = ("folder", "imagenet", "imagenet100")
FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"
