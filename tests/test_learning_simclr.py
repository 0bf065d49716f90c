"""SimCLR learns on real images: kNN top-1 on the CIFAR-10 sample rises above its value at init."""
from conftest import train

# The standard 7x7/2 stem at 32 px is ~10x cheaper than the CIFAR stem: affordable in the suite.
CHEAP_LEARNING_RUN = [
    "backbone.cifar_stem=false",
    "data.batch_size=128",
    "trainer.max_epochs=2",
    "eval.linear=null",
    "trainer.enable_progress_bar=false",
    "seed=0",
]


def test_simclr_knn_rises_on_real_images(tmp_path, cifar_subset):
    results = train(["data=folder", f"data.root={cifar_subset}", *CHEAP_LEARNING_RUN], tmp_path)
    gain = results["knn_top1"] - results["knn_top1_at_init"]
    assert gain >= 0.02, f"kNN top-1 {results['knn_top1_at_init']:.3f} -> {results['knn_top1']:.3f}"
