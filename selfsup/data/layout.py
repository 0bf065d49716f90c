"""The on-disk layout of the image-folder datasets, torch-free: selfsup/checks/data.py checks data.root
against it before torch loads, selfsup/data/datasets.py when it builds the dataset."""

FOLDER_DATASETS = ("folder", "imagenet", "imagenet100")
FOLDER_LAYOUT = "<root>/train/<class>/<image> and <root>/val/<class>/<image>"

# data=images: pretraining images without labels, from a folder tree or a list file.
UNLABELLED_DATASETS = ("images",)
IMAGES_LAYOUT = (
    "a folder tree of images (any nesting, no classes needed) or a .txt/.csv file listing image paths, one per line"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
LIST_SUFFIXES = (".txt", ".csv")


def trains_online_probe(cfg) -> bool:
    """Whether the online probe has labels to learn from: the pretraining images' own, on the classes
    the kNN monitor scores (not so for data=images, nor with eval.data, whose classes are others)."""
    return cfg.data.name not in UNLABELLED_DATASETS and cfg.eval.get("data") is None


SHARD_META = "shards.json"  # class names and every split's labels, beside the splits' LitData chunks
SHARD_LAYOUT = (
    f"<root>/{SHARD_META} and <root>/train/, <root>/val/ of LitData chunks (index.json, chunk-*.bin), "
    "written by scripts/make_shards.py"
)
